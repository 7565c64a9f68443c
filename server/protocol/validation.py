"""Pydantic's validation errors as one plain sentence that names the field and says what it accepts.

Pydantic reports a union by trying every member: `content: "x" | [parts]` given a bad part says "content.str: Input
should be a valid string" first, the one complaint that does not apply. Here the members' labels leave the path, the
error that got furthest into the input is the one told, and type mismatches at one place become one "expected a or b".
"""

import re

_TYPE_LABELS = {"str", "int", "float", "bool", "dict", "list", "none", "bytes", "is-instance"}
_EXPECTED = {
    "string_type": "a string", "list_type": "a list", "none_required": "null", "dict_type": "an object",
    "model_type": "an object", "model_attributes_type": "an object", "int_type": "an integer",
    "int_parsing": "an integer", "int_from_float": "an integer", "float_type": "a number", "float_parsing": "a number",
    "bool_type": "true or false", "bool_parsing": "true or false",
}
_NAMED = re.compile(r"^(?P<param>[A-Za-z_][\w.\[\]]*): ")  # "n: only n=1 ..." from a model validator


def describe_validation_error(errors: list[dict]) -> tuple[str, str | None]:
    """The most telling pydantic error as one readable sentence, and the parameter it names."""
    if any(error.get("type") == "json_invalid" for error in errors):
        return "the request body is not valid JSON", None
    located = [(_path(error.get("loc", ())), error) for error in errors]
    path, first = max(located, key=lambda pe: (_depth(pe[1]), pe[1].get("type") not in _EXPECTED))
    if first.get("type") in _EXPECTED:
        expected = _dedupe(_EXPECTED[e["type"]] for p, e in located if p == path and e.get("type") in _EXPECTED)
        return _at(path, f"expected {' or '.join(expected)}, got {_json_kind(first.get('input'))}"), path or None
    message = _sentence(first, path)
    if not path and (named := _NAMED.match(message)):
        return message, named.group("param")
    return _at(path, message), path or None


def _sentence(error: dict, path: str) -> str:
    kind, ctx = error.get("type"), error.get("ctx") or {}
    if kind == "union_tag_invalid":
        expected = ctx.get("expected_tags", "").replace("'", "")
        noun = "content part type" if re.search(r"content\[\d+\]$", path) else "type"
        return f"unknown {noun} {ctx.get('tag')!r}; expected one of {expected}"
    if kind == "union_tag_not_found":
        return f"needs a {ctx.get('discriminator', 'type')} field that says what it is"
    if kind == "literal_error":
        return f"{error.get('input')!r} is not accepted; expected {ctx.get('expected')}"
    if kind == "missing":
        return "this field is required"
    if kind == "extra_forbidden":
        return "unknown field"
    return error.get("msg", "invalid request").removeprefix("Value error, ")


def _path(loc: tuple) -> str:
    """('body', 'messages', 0, 'content', 'list[...]', 1) -> 'messages[0].content[1]'."""
    path, after_tagged_index = "", False
    for index, part in enumerate(loc):
        if isinstance(part, int):
            path += f"[{part}]"
            after_tagged_index = "tagged-union[" in str(loc[index - 1]) if index else False
            continue
        if (index == 0 and part in ("body", "query", "form", "path")) or _is_label(part) or after_tagged_index:
            after_tagged_index = False  # a discriminated union puts the tag it matched before the member's fields
            continue
        path += f".{part}" if path else part
    return path


def _depth(error: dict) -> int:
    return sum(1 for part in error.get("loc", ()) if isinstance(part, int) or not _is_label(part))


def _is_label(part: str) -> bool:
    """A union member's label in a location: a type name, never a field (fields are snake_case words)."""
    return part in _TYPE_LABELS or "[" in part or "-" in part or part[:1].isupper()


def _at(path: str, message: str) -> str:
    return f"{path}: {message}" if path else message


def _dedupe(items) -> list[str]:
    return list(dict.fromkeys(items))


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    return "a list" if isinstance(value, list) else "an object"
