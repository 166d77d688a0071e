"""hived: a daemon that runs and watches AI coding agents."""

from __future__ import annotations

__version__ = "0.1.0"
