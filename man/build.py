"""Render hived's man pages from reStructuredText: ``make man``, or ``python man/build.py``.

Each source ``man/NAME.SECTION.rst`` becomes the roff page ``man/NAME.SECTION`` beside it. The
rendered pages are committed, so that installing needs neither Python nor docutils, and a test
(tests/test_service.py) renders every source again and fails when a committed page is stale.
``--check`` does the same comparison here and writes nothing.

Why reStructuredText and docutils' manpage writer: a person enjoys editing rst (plain text that
reads well as it is, with definition and option lists that map straight onto a man page's
``.TP`` paragraphs), and docutils is pure Python on PyPI, already a test dependency, so building
the pages needs nothing from the distribution: CI and a fresh clone build them with the venv
alone. scdoc and pandoc would have to come from Debian; roff by hand is no joy to edit.

``@VERSION@`` in a source becomes the version in pyproject.toml. The pages carry no date, so
rendering is reproducible: the same sources always give the same bytes. Hyphenation is turned
off after the title (``.hy 0``, and the register ``HY`` that the man macros restore it from
after each example), because these pages are full of key names, paths and variables
(``daemon.shutdown_timeout_s``, ``LISTEN_PID``) that must not be split, nor copied with a hyphen
in them. Sources are ASCII, so a page reads the same in any locale.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from docutils.core import publish_string  # type: ignore[import-untyped]
from docutils.utils import SystemMessage  # type: ignore[import-untyped]
from docutils.writers import manpage  # type: ignore[import-untyped]

MAN_DIR: Final = Path(__file__).resolve().parent
PYPROJECT: Final = MAN_DIR.parent / "pyproject.toml"

_SETTINGS: Final = {
    # A warning in a source (a broken list, a bad indent) fails the build instead of
    # rendering something half right.
    "halt_level": 2,
    "report_level": 2,
    "input_encoding": "utf-8",
    "output_encoding": "utf-8",
}

_NO_HYPHENATION: Final = (
    '.\\" Key names, paths and variables must not be split: no hyphenation.\n.nr HY 0\n.hy 0\n'
)


def version() -> str:
    """hived's version, from pyproject.toml (the package need not be installed)."""
    with PYPROJECT.open("rb") as file:
        return str(tomllib.load(file)["project"]["version"])


def sources() -> list[Path]:
    """Every man page source, sorted."""
    return sorted(MAN_DIR.glob("*.rst"))


def target(source: Path) -> Path:
    """The rendered page of ``source``: ``hived.8.rst`` → ``hived.8``."""
    return source.with_suffix("")


def render(source: Path) -> str:
    """The roff text of one page."""
    text = source.read_text(encoding="utf-8").replace("@VERSION@", version())
    output = publish_string(
        text,
        source_path=str(source),
        writer=manpage.Writer(),
        settings_overrides=_SETTINGS,
    )
    roff = output.decode("utf-8") if isinstance(output, bytes) else output
    head, title, body = roff.partition("\n.TH ")
    end = body.index("\n") + 1
    return f"{head}{title}{body[:end]}{_NO_HYPHENATION}{body[end:]}"


def main(argv: Sequence[str] | None = None) -> int:
    """Write every page (exit 0), or with ``--check`` list the stale ones (exit 1 if any)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if a committed page is stale"
    )
    args = parser.parse_args(argv)
    stale = []
    for source in sources():
        page = target(source)
        try:
            text = render(source)
        except SystemMessage as exc:
            print(f"man/build.py: {exc}", file=sys.stderr)
            return 1
        current = page.read_text(encoding="utf-8") if page.exists() else None
        if current == text:
            continue
        if args.check:
            stale.append(page.name)
        else:
            page.write_text(text, encoding="utf-8")
            print(f"wrote {page.relative_to(MAN_DIR.parent)}")
    if stale:
        print(f"stale man pages (run `make man`): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
