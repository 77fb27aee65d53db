"""libcst, imported on first use, and the small readings and writings of its trees that
the codemod's stages share (docs/design.md, "The codemod").

libcst is an optional extra (`pip install 'pytest-injection-events[migrate]'`),
so nothing imports it before a file is converted. Literals are read from
libcst's tree, never with the running Python's grammar: files in 3.12+ syntax
convert on 3.10.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

from .migrate_reasons import INSTALL_HINT, MigrateError
from .migrate_records import _Site


def _libcst() -> Any:
    """Import libcst on first use, so the rest of the package works without the extra."""
    try:
        import libcst
        import libcst.metadata  # the submodule must be loaded for c.metadata
    except ImportError as exc:
        raise MigrateError(INSTALL_HINT) from exc
    return libcst


def _string_value(node: Any) -> str | bool | None:
    """The value of a string literal (implicit concatenation included); None when not a
    string, False for an f-string with a placeholder. Grammar-independent: escapes are
    read from each piece alone, never by parsing the file with the running Python."""
    c = _libcst()
    if isinstance(node, c.SimpleString):
        with warnings.catch_warnings():  # an invalid escape ("a\.b") warns, as at run time
            warnings.simplefilter("ignore")
            value = node.evaluated_value
        return value if isinstance(value, str) else None
    if isinstance(node, c.ConcatenatedString):
        left, right = _string_value(node.left), _string_value(node.right)
        if left is False or right is False:
            return False
        if isinstance(left, str) and isinstance(right, str):
            return left + right
        return None
    if isinstance(node, c.FormattedString):
        text = []
        prefix = node.prefix.lower().replace("f", "")
        for part in node.parts:
            if not isinstance(part, c.FormattedStringText):
                return False
            literal = c.SimpleString(f"{prefix}{node.quote}{part.value}{node.quote}")
            piece = _string_value(literal)
            text.append(str(piece).replace("{{", "{").replace("}}", "}"))
        return "".join(text)
    return None


def _has_comment(node: Any) -> bool:
    c = _libcst()
    if node is None or not isinstance(node, c.CSTNode):
        return False
    if isinstance(node, c.Comment):
        return True
    return any(_has_comment(child) for child in node.children)


def _dotted(node: Any) -> str | None:
    c = _libcst()
    if isinstance(node, c.Name):
        return node.value
    if isinstance(node, c.Attribute):
        base = _dotted(node.value)
        return None if base is None else f"{base}.{node.attr.value}"
    return None


def _is_pure(node: Any) -> bool:
    """Names, attributes, constants and subscripts of them: cheap and free of effects."""
    c = _libcst()
    if isinstance(node, (c.Name, c.Integer, c.Float, c.SimpleString)):
        return True
    if isinstance(node, c.Attribute):
        return _is_pure(node.value)
    if isinstance(node, c.Subscript):
        return _is_pure(node.value) and all(
            isinstance(el.slice, c.Index) and _is_pure(el.slice.value) for el in node.slice
        )
    if isinstance(node, c.UnaryOperation):
        return _is_pure(node.expression)
    return False


def _names_in(node: Any) -> Iterator[Any]:
    c = _libcst()
    if isinstance(node, c.Name):
        yield node
    elif isinstance(node, c.Attribute):
        yield from _names_in(node.value)  # the attribute's own name is no variable
        return
    for child in node.children:
        yield from _names_in(child)


def _fixture_scope(func: Any) -> str | None:
    """None if `func` is not a fixture, else its scope ('?' when not a literal)."""
    c = _libcst()
    for dec in func.decorators:
        expr = dec.decorator.func if isinstance(dec.decorator, c.Call) else dec.decorator
        dotted = _dotted(expr)
        if dotted is None or dotted.split(".")[-1] != "fixture":
            continue
        if not isinstance(dec.decorator, c.Call):
            return "function"
        for arg in dec.decorator.args:
            if arg.keyword is not None and arg.keyword.value == "scope":
                value = arg.value
                if isinstance(value, c.SimpleString) and isinstance(value.evaluated_value, str):
                    return value.evaluated_value
                return "?"
        return "function"
    return None


def _param_names(func: Any) -> list[str]:
    c = _libcst()
    p = func.params
    names = [x.name.value for x in (*p.posonly_params, *p.params, *p.kwonly_params)]
    for extra in (p.star_arg, p.star_kwarg):
        if isinstance(extra, c.Param):
            names.append(extra.name.value)
    return names


def _method_call(node: Any, method: str) -> tuple[Any, bool] | None:
    """(the Call, awaited?) for `await X.method(...)` or `X.method(...)`."""
    c = _libcst()
    awaited = isinstance(node, c.Await)
    call = node.expression if awaited else node
    if (
        isinstance(call, c.Call)
        and isinstance(call.func, c.Attribute)
        and call.func.attr.value == method
    ):
        return call, awaited
    return None


def _walk_nodes(node: Any) -> Iterator[Any]:
    yield node
    for child in node.children:
        yield from _walk_nodes(child)


def _is_literal(node: Any) -> bool:
    c = _libcst()
    if isinstance(node, (c.SimpleString, c.Integer, c.Float, c.Name)):
        return not isinstance(node, c.Name) or node.value in ("None", "True", "False")
    if isinstance(node, c.Dict):
        return all(
            isinstance(e, c.DictElement) and _is_literal(e.key) and _is_literal(e.value)
            for e in node.elements
        )
    return False


# Writing: a name as a string literal in the quote style of the file's pattern.


def _quote(site: _Site) -> str:
    c = _libcst()
    value = site.call.args[0].value
    while isinstance(value, c.ConcatenatedString):
        value = value.left
    quote = getattr(value, "quote", '"')
    return quote[0] if quote else '"'


def _py_str(text: str, quote: str = '"') -> str:
    """A string literal for `text` in the file's quote style; names hold no quote."""
    escaped = text.replace("\\", "\\\\")
    if quote in escaped:
        quote = '"' if quote == "'" else "'"
    return f"{quote}{escaped}{quote}"
