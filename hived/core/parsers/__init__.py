"""Agent output lines → hived events, one module per format (used by :mod:`hived.core.drivers`).

A parser never raises on what an agent prints: a line it cannot read becomes a ``text`` event
with a ``parse_error`` note. docs/drivers.md maps every format's lines to event kinds.
"""
