"""Every flag, command and config key is documented, and the pages say nothing that is not so.

The command lines are introspected from the argparse parsers (``build_parser()`` of ``hived``
and ``hivectl``, walking their subcommands); the config keys from the attrs classes under
:class:`hived.core.config.Config`. The man page sources are parsed with docutils, so a check
looks where a reader would: a command is a term of the *Commands* list, an option an entry of an
option list (under its command, or in *Options* when every command takes it), a config key a
term of its section in hived.toml(5), with its default. The README and docs/ are checked more
loosely: each name must appear there somewhere.
"""

from __future__ import annotations

import argparse
import re
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import attrs
import docutils.core  # type: ignore[import-untyped]
import pytest
from docutils import nodes

from hived.cli import hivectl
from hived.cli import hived as hived_cli
from hived.core.config import Config, parse_config

REPO = Path(__file__).resolve().parent.parent
MAN = REPO / "man"
HELP_OPTIONS = frozenset({"-h", "--help"})


class Command(NamedTuple):
    """One (sub)command of a parser: its words after the program name, and its own options."""

    path: str
    options: frozenset[str]


class Program(NamedTuple):
    prog: str
    page: Path
    build_parser: Callable[[], argparse.ArgumentParser]


PROGRAMS = [
    Program("hived", MAN / "hived.8.rst", hived_cli.build_parser),
    Program("hivectl", MAN / "hivectl.1.rst", hivectl.build_parser),
]


def _walk(parser: argparse.ArgumentParser, path: str = "") -> Iterator[Command]:
    options = frozenset(s for action in parser._actions for s in action.option_strings)
    yield Command(path, options)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, f"{path} {name}".strip())


def commands(program: Program) -> list[Command]:
    """The program itself (path ``""``) and every subcommand, depth first."""
    return list(_walk(program.build_parser()))


def doctree(page: Path) -> nodes.document:
    text = page.read_text(encoding="utf-8").replace("@VERSION@", "0")
    return docutils.core.publish_doctree(text, settings_overrides={"report_level": 5})


def section(tree: nodes.Node, title: str) -> nodes.section:
    for node in tree.findall(nodes.section):
        if node[0].astext() == title:
            return node
    raise AssertionError(f"no section titled {title!r}")


def terms(node: nodes.Node) -> dict[str, nodes.definition_list_item]:
    """The top-level definition list items of a section, by the text of their term."""
    found = {}
    for dl in node.findall(nodes.definition_list):
        if dl.parent is node:
            for item in dl.children:
                assert isinstance(item, nodes.definition_list_item)
                found[item[0].astext()] = item
    return found


def listed_options(node: nodes.Node) -> set[str]:
    """Option strings of every option list under ``node`` (``--config PATH`` → ``--config``)."""
    return {
        option[0].astext()
        for option in node.findall(nodes.option)
        if isinstance(option[0], nodes.option_string)
    }


def appears(word: str, text: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text) is not None


@pytest.fixture(scope="module")
def readme() -> str:
    path = REPO / "README.md"
    assert path.exists(), "README.md is missing"
    return path.read_text(encoding="utf-8")


def entry(entries: dict[str, nodes.definition_list_item], path: str) -> nodes.Node | None:
    """The entry of command ``path`` among the Commands terms (``start AGENT [--prompt TEXT]``)."""
    for term, item in entries.items():
        if term == path or term.startswith(path + " "):
            return item
    return None


@pytest.mark.parametrize("program", PROGRAMS, ids=lambda p: p.prog)
def test_man_page_lists_every_subcommand(program: Program) -> None:
    entries = terms(section(doctree(program.page), "Commands"))
    missing = [c.path for c in commands(program)[1:] if entry(entries, c.path) is None]
    assert not missing, f"{program.page.name}: Commands has no entry for {missing}"


@pytest.mark.parametrize("program", PROGRAMS, ids=lambda p: p.prog)
def test_man_page_lists_every_option_where_it_belongs(program: Program) -> None:
    tree = doctree(program.page)
    everywhere = commands(program)[0].options
    global_options = listed_options(section(tree, "Options"))
    missing = sorted(everywhere - global_options)
    assert not missing, f"{program.page.name}: Options does not list {missing}"
    entries = terms(section(tree, "Commands"))
    for command in commands(program)[1:]:
        own = command.options - everywhere - HELP_OPTIONS
        if not own:
            continue
        item = entry(entries, command.path)
        assert item is not None, f"{program.page.name}: Commands has no entry for {command.path}"
        missing = sorted(own - listed_options(item))
        assert not missing, f"{program.page.name}: the entry of {command.path!r} lacks {missing}"


@pytest.mark.parametrize("program", PROGRAMS, ids=lambda p: p.prog)
def test_man_page_lists_no_option_the_program_lacks(program: Program) -> None:
    real = set().union(*(c.options for c in commands(program)))
    invented = sorted(listed_options(doctree(program.page)) - real)
    assert not invented, f"{program.page.name} documents options {program.prog} lacks: {invented}"


@pytest.mark.parametrize("program", PROGRAMS, ids=lambda p: p.prog)
def test_readme_names_every_subcommand_and_option(program: Program, readme: str) -> None:
    every = commands(program)
    missing = [
        f"{program.prog} {c.path}"
        for c in every[1:]
        if not re.search(rf"{program.prog} \[?{re.escape(c.path)}\b|`{re.escape(c.path)}\b", readme)
    ]
    options = set().union(*(c.options for c in every)) - HELP_OPTIONS
    missing += sorted(option for option in options if not appears(option, readme))
    assert not missing, f"README.md does not mention {missing}"


# --- config keys ------------------------------------------------------------------------------


class Key(NamedTuple):
    section: str
    """The TOML table it lives in, as written in a file: ``[server]``, ``[[tokens]]``, ``[agents.NAME]``."""
    name: str
    field: attrs.Attribute[Any]

    @property
    def dotted(self) -> str:
        """``server.listen``, ``tokens.name``, ``agents.NAME.command``."""
        return f"{self.section.strip('[]')}.{self.name}"


def _table_class(hint: Any) -> tuple[str, type] | None:
    """How a field of Config holds a table: ``("table", cls)``, ``("array", cls)``, ``("map", cls)``."""
    args = typing.get_args(hint)
    if attrs.has(hint):
        return "table", hint
    origin = typing.get_origin(hint)
    if origin is tuple and args and attrs.has(args[0]):
        return "array", args[0]
    if origin is dict and len(args) == 2 and attrs.has(args[1]):
        return "map", args[1]
    return None


def _subtable(hint: Any) -> type | None:
    """The table class of a key that holds an optional table (``[notify.webhook]``)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if len(args) == 1 and attrs.has(args[0]):
        return typing.cast(type, args[0])
    return None


def _table_keys(section: str, cls: type) -> list[Key]:
    """The keys of a table, then those of the tables it holds (``[notify.webhook]``)."""
    keys = [Key(section, f.name, f) for f in attrs.fields(cls)]
    hints = typing.get_type_hints(cls)
    for f in attrs.fields(cls):
        sub = _subtable(hints[f.name])
        if sub is not None:
            keys += _table_keys(f"[{section.strip('[]')}.{f.name}]", sub)
    return keys


def config_keys() -> list[Key]:
    keys = []
    for field in attrs.fields(Config):
        kind = _table_class(typing.get_type_hints(Config)[field.name])
        assert kind is not None, f"Config.{field.name} is a key at the top level; extend this test"
        shape, cls = kind
        header = {
            "table": f"[{field.name}]",
            "array": f"[[{field.name}]]",
            "map": f"[{field.name}.NAME]",
        }
        keys += _table_keys(header[shape], cls)
    return keys


def toml_literal(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(toml_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_literal(v)}" for k, v in value.items()) + "}"
    raise AssertionError(f"no TOML literal for {value!r}")


def default_text(field: attrs.Attribute[Any]) -> str:
    """What hived.toml(5) must say after the type: ``default X``, ``required``, ``not set by default``."""
    default: object = field.default
    if default is attrs.NOTHING:
        return "required"
    factory = getattr(default, "factory", None)  # attrs.Factory, which the stubs call a function
    if callable(factory):
        default = factory()
    if default is None:
        return "not set by default"
    return f"default {toml_literal(default)}"


TERM = re.compile(r"(?P<key>\w+) \((?P<type>[^;()]+); (?P<default>.+)\)")
"""A key's entry in hived.toml(5): ``listen (host:port; default "127.0.0.1:7420")``."""

TOML_PAGE = MAN / "hived.toml.5.rst"


def documented_keys() -> dict[tuple[str, str], str]:
    """(section, key) → what the page says of its default, for every key entry of the page."""
    found = {}
    for node in section(doctree(TOML_PAGE), "Sections").findall(nodes.section):
        for term in terms(node):
            match = TERM.fullmatch(term)
            assert match, f"hived.toml.5.rst: {term!r} is not `key` (type; default ...)"
            found[node[0].astext(), match["key"]] = match["default"]
    return found


def test_config_page_documents_every_key_with_its_default() -> None:
    documented = documented_keys()
    problems = []
    for key in config_keys():
        said = documented.get((key.section, key.name))
        if said is None:
            problems.append(f"{key.dotted}: missing from {key.section}")
        elif said != default_text(key.field):
            problems.append(
                f"{key.dotted}: page says {said!r}, hived has {default_text(key.field)!r}"
            )
    assert not problems, "hived.toml.5.rst:\n" + "\n".join(problems)


def test_config_page_documents_no_key_hived_lacks() -> None:
    real = {(key.section, key.name) for key in config_keys()}
    invented = sorted(set(documented_keys()) - real)
    assert not invented, f"hived.toml.5.rst documents keys hived does not have: {invented}"


def test_config_page_example_is_a_valid_config() -> None:
    blocks = list(section(doctree(TOML_PAGE), "Example").findall(nodes.literal_block))
    assert blocks, "hived.toml.5.rst: the Example section has no example"
    for block in blocks:
        parse_config(block.astext(), source="hived.toml(5) example")


def _markdown_docs() -> str:
    paths = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    return "\n".join(p.read_text(encoding="utf-8") for p in paths if p.exists())


def _in_toml_example(key: Key, text: str) -> bool:
    """``key =`` (maybe commented out) under its table header, in some TOML shown in the text."""
    header = re.escape(key.section).replace("NAME", r"[^\]]+")
    table = re.compile(rf"^\s*#?\s*{header}\s*(#.*)?$")
    inside = False
    for line in text.splitlines():
        if re.match(r"^\s*#?\s*\[", line):
            inside = bool(table.match(line))
        elif inside and re.match(rf"^\s*#?\s*{key.name}\s*=", line):
            return True
    return False


def test_readme_or_docs_mention_every_config_key() -> None:
    text = _markdown_docs()
    missing = []
    for key in config_keys():
        dotted = re.escape(key.dotted).replace("NAME", r"[\w<>*-]+")
        if not (re.search(rf"(?<![\w.]){dotted}(?!\w)", text) or _in_toml_example(key, text)):
            missing.append(key.dotted)
    assert not missing, f"neither README.md nor docs/*.md mention {missing}"


def test_walks_see_what_the_parsers_define() -> None:
    """The introspection itself: a parser with a nested subcommand and its own option."""
    parser = argparse.ArgumentParser(prog="x")
    parser.add_argument("--top")
    sub = parser.add_subparsers().add_parser("a").add_subparsers().add_parser("b")
    sub.add_argument("--deep")
    walked = {c.path: c.options for c in _walk(parser)}
    assert walked == {
        "": {"-h", "--help", "--top"},
        "a": {"-h", "--help"},
        "a b": {"-h", "--help", "--deep"},
    }


def test_key_walk_sees_tables_arrays_of_tables_and_named_tables() -> None:
    keys = {key.dotted: default_text(key.field) for key in config_keys()}
    assert keys["server.listen"] == 'default "127.0.0.1:7420"'
    assert keys["tokens.sha256"] == "required"
    assert keys["agents.NAME.cwd"] == "not set by default"
    assert keys["agents.NAME.env"] == "default {}"
    assert keys["notify.webhook"] == "not set by default"
    assert keys["notify.webhook.url"] == "required"
