"""Fixtures for the end-to-end tests: every daemon a test starts is killed after it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.harness import Launcher


@pytest.fixture
async def hived(tmp_path: Path) -> AsyncIterator[Launcher]:
    launcher = Launcher(tmp_path)
    yield launcher
    await launcher.kill_all()
