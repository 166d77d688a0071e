"""The dashboard's vendored third-party files: each one pinned in hived/web/vendor/PINS, kept
with its package's licence, and matching the SHA256SUMS that ``make web-vendor`` checks what it
fetches from the npm registry against (so an edit by hand, or a half-done update, shows here)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Final

VENDOR: Final = Path(__file__).resolve().parents[1] / "hived" / "web" / "vendor"


def pins() -> list[tuple[str, str, str, str]]:
    rows = []
    for line in (VENDOR / "PINS").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            package, version, path, name = line.split()
            rows.append((package, version, path, name))
    return rows


def sums() -> dict[str, str]:
    pairs = (line.split() for line in (VENDOR / "SHA256SUMS").read_text().splitlines())
    return {name: digest for digest, name in pairs}


def test_every_pinned_file_and_licence_is_there_and_matches_its_checksum() -> None:
    licences = {f"{p.removeprefix('@').replace('/', '-')}.LICENSE.txt" for p, *_ in pins()}
    expected = {name for *_, name in pins()} | licences
    assert set(sums()) == expected
    for name, digest in sums().items():
        assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == digest, name


def test_versions_are_exact_pins() -> None:
    for package, version, _path, _name in pins():
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"{package} is not pinned: {version}"


def test_the_page_loads_only_vendored_files_it_has() -> None:
    index = (VENDOR.parent / "index.html").read_text()
    loaded = re.findall(r'(?:src|href)="vendor/([^"]+)"', index)
    assert loaded
    assert set(loaded) <= set(sums())
