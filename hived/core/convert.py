"""hived's own strict cattrs converter, and the flattening of its errors into readable lines.

How it works: a ``cattrs.Converter`` with ``forbid_extra_keys`` and ``detailed_validation``, whose
hooks for the scalar types refuse the lenient coercions cattrs does by default (``"5"`` is not an
int, ``"false"`` is not a bool, a string is not a list). Structuring failures arrive as a tree of
exception groups with notes that name attributes, indexes and keys; :func:`flatten_errors` walks
that tree into ``(path, message)`` pairs such as ``("server.listen", 'expected "host:port", got
"7420"')``. The same converter serves config files and client frames: both are untrusted input,
so the work a bad value causes is bounded: a list stops at its first
:data:`MAX_ITEM_PROBLEMS` bad items (cattrs' own list hooks note every one, which for a frame
of 500k bad items meant millions of objects).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Final, get_origin

import attrs
import cattrs
import cattrs.cols
from cattrs.errors import (
    AttributeValidationNote,
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)

MAX_ITEM_PROBLEMS: Final = 5
"""A list stops being structured at this many bad items; only these are reported."""


def describe(value: object) -> str:
    """Render a found value for an error message: JSON/TOML-like, short."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = value if len(value) <= 60 else value[:57] + "..."
        return '"' + text.replace('"', '\\"') + '"'
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list | tuple):
        return "a list"
    if value is None:
        return "null"
    return repr(value)


def expected(what: str, value: object) -> str:
    """The one shape of every validation message: ``expected WHAT, got VALUE``."""
    return f"expected {what}, got {describe(value)}"


def _strict_str(value: object, _: type) -> str:
    if not isinstance(value, str):
        raise TypeError(expected("a string", value))
    return value


def _strict_int(value: object, _: type) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(expected("an integer", value))
    return value


def _strict_float(value: object, _: type) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(expected("a number", value))
    return float(value)


def _strict_bool(value: object, _: type) -> bool:
    if not isinstance(value, bool):
        raise TypeError(expected("true or false", value))
    return value


def _guard(
    check: tuple[type, ...], what: str, inner: Callable[[Any, Any], Any]
) -> Callable[[Any, Any], Any]:
    def structure(value: object, type_: Any) -> Any:
        if not isinstance(value, check):
            raise TypeError(expected(what, value))
        return inner(value, type_)

    return structure


def _is_tuple(type_: Any) -> bool:
    return get_origin(type_) is tuple and bool(cattrs.cols.is_sequence(type_))


def _is_list(type_: Any) -> bool:
    return get_origin(type_) is list


def _is_dict(type_: Any) -> bool:
    return get_origin(type_) is dict


def _items_hook(
    type_: Any, conv: cattrs.Converter, make: Callable[[list[Any]], Any]
) -> Callable[[Any, Any], Any]:
    """Structure a list (or a homogeneous tuple) item by item, stopping at the first
    :data:`MAX_ITEM_PROBLEMS` bad items; raise them as cattrs does, with index notes."""
    item_type = type_.__args__[0] if type_.__args__ else Any
    structure_item = conv.get_structure_hook(item_type)

    def structure(value: object, _: Any) -> Any:
        if not isinstance(value, list | tuple):
            raise TypeError(expected("a list", value))
        items: list[Any] = []
        errors: list[Exception] = []
        for index, item in enumerate(value):
            try:
                items.append(structure_item(item, item_type))
            except Exception as exc:  # reported like cattrs reports it
                note = IterableValidationNote(f"Structuring item @ index {index}", index, item_type)
                exc.__notes__ = [*getattr(exc, "__notes__", ()), note]
                errors.append(exc)
                if len(errors) >= MAX_ITEM_PROBLEMS:
                    break
        if errors:
            raise IterableValidationError(f"While structuring {type_!r}", errors, type_)
        return make(items)

    return structure


def _tuple_hook(type_: Any, conv: cattrs.Converter) -> Callable[[Any, Any], Any]:
    return _items_hook(type_, conv, tuple)


def _list_hook(type_: Any, conv: cattrs.Converter) -> Callable[[Any, Any], Any]:
    list_only = _items_hook(type_, conv, list)

    def structure(value: object, type_: Any) -> Any:
        if not isinstance(value, list):
            raise TypeError(expected("a list", value))
        return list_only(value, type_)

    return structure


def _dict_hook(type_: Any, conv: cattrs.Converter) -> Callable[[Any, Any], Any]:
    return _guard((dict,), "a table", cattrs.cols.mapping_structure_factory(type_, conv))


def make_converter() -> cattrs.Converter:
    """A new strict converter. Modules register their own NewType hooks on the one they use."""
    conv = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    conv.register_structure_hook(str, _strict_str)
    conv.register_structure_hook(int, _strict_int)
    conv.register_structure_hook(float, _strict_float)
    conv.register_structure_hook(bool, _strict_bool)
    conv.register_structure_hook_factory(_is_tuple, _tuple_hook)
    conv.register_structure_hook_factory(_is_list, _list_hook)
    conv.register_structure_hook_factory(_is_dict, _dict_hook)
    return conv


def _join(path: str, part: str) -> str:
    return f"{path}.{part}" if path else part


def flatten_errors(exc: BaseException, path: str = "") -> Iterator[tuple[str, str]]:
    """Walk a cattrs structuring error into ``(key path, message)`` pairs, in input order."""
    if isinstance(exc, ClassValidationError | IterableValidationError):
        for sub in exc.exceptions:
            sub_path = path
            for note in getattr(sub, "__notes__", ()):
                if isinstance(note, AttributeValidationNote):
                    sub_path = _join(path, note.name)
                elif isinstance(note, IterableValidationNote):
                    index = note.index
                    sub_path = (
                        f"{path}[{index}]" if isinstance(index, int) else _join(path, str(index))
                    )
            yield from flatten_errors(sub, sub_path)
    elif isinstance(exc, ForbiddenExtraKeysError):
        known = ", ".join(field.name for field in attrs.fields(exc.cl))
        for key in sorted(exc.extra_fields):
            yield _join(path, key), f"unknown key; known keys here: {known}"
    elif isinstance(exc, KeyError):
        yield path, "required, but missing"
    elif isinstance(exc, ValueError | TypeError):
        yield path, str(exc)
    else:
        yield path, f"{type(exc).__name__}: {exc}"
