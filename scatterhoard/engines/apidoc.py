"""Renders the engine API's docstrings as Markdown: the reference part of ``docs/engines.md``.

    python -m scatterhoard.engines.apidoc > /tmp/api.md      # or --write docs/engines.md

``--write`` replaces everything after :data:`MARKER` in the file; a test
checks that the file is current.
"""

from __future__ import annotations

import ast
import enum
import inspect
import sys
from pathlib import Path

from .. import _build
from ..store import base, memory
from . import handlers, loader, record, runner, sqlite, tiered

MARKER = "<!-- API reference: generated from the docstrings by `python -m scatterhoard.engines.apidoc --write docs/engines.md`; do not edit below -->"

#: (object, members to show; None: the object alone)
_SECTIONS: list[tuple[str, list[tuple[object, list[str] | None]]]] = [
    ("The engine interface (`scatterhoard.engines`, defined in `scatterhoard.store.base`)", [
        (base.Store, ["get", "store", "delete", "arith", "touch", "flush_all", "stats", "mark_stale", "mark_win",
                      "items_snapshot", "close"]),
        (base.Item, None), (base.Mode, None), (base.Status, None), (base.EngineConfig, None),
        (base.EngineError, None), (base.Unsupported, None), (base.AccessDenied, None),
        (base.absolute_exptime, None),
    ]),
    ("Writing an engine from four primitives", [
        (record.RecordStore, ["load", "save", "remove", "clear", "count", "size", "accessed", "transaction",
                              "key_transaction", "reserve_cas", "limit_bytes"]),
        (record.AsyncRecordStore, ["bind_loop", "transaction", "key_transaction"]),
    ]),
    ("Handlers", [
        (handlers, None), (handlers.Call, ["writes", "with_"]), (handlers.Context, None),
        (handlers.Handler, ["from_config", "handle"]),
    ]),
    ("Loading and running", [
        (loader, None), (loader.create_engine, None), (loader.create_handler, None), (runner.run_server, None),
    ]),
    ("The engines that come with scatterhoard", [
        (memory.MemoryStore, None), (sqlite, None), (tiered, None),
    ]),
]


ROOT = Path(__file__).resolve().parent.parent.parent
_EXAMPLES = [("End to end: a complete server over a dict (example 1)", "examples/dict_server.py"),
             ("End to end: an engine in its own package (example 3)", "examples/hoard_shelf/hoard_shelf/__init__.py"),
             ("A handler: logging and access control (example 2)", "examples/acl_handler.py")]


def _name(obj: object) -> str:
    return str(getattr(obj, "__qualname__", getattr(obj, "__name__", repr(obj))))


def _signature(obj: object) -> str:
    try:
        return str(inspect.signature(obj))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return ""


def _doc(obj: object) -> str:
    return inspect.cleandoc(inspect.getdoc(obj) or "(no docstring)")


def _from_source(cls: type) -> tuple[str, str] | None:
    """(signature, docstring) of a class in a module mypyc may compile, read from its source.

    A compiled class keeps neither its docstring nor its signature; reading the source for those
    modules whether or not they are compiled keeps the rendered reference the same either way.
    """
    if cls.__module__ not in _build.COMPILED:
        return None
    path = ROOT / (cls.__module__.replace(".", "/") + ".py")
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ClassDef) and node.name == cls.__name__:
            sig = ""
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                    args = ast.unparse(item.args).removeprefix("self, ").removeprefix("self")
                    sig = f"({args})" + (f" -> {ast.unparse(item.returns)}" if item.returns else "")
            return sig, inspect.cleandoc(ast.get_docstring(node) or "(no docstring)")
    return None


def render() -> str:
    out: list[str] = [MARKER, "", "## API reference", ""]
    for title, entries in _SECTIONS:
        out += [f"### {title}", ""]
        for obj, members in entries:
            if inspect.ismodule(obj):
                out += [f"#### module `{obj.__name__}`", "", _doc(obj), ""]
                continue
            kind = "class" if inspect.isclass(obj) else "def"
            sig = "" if inspect.isclass(obj) and issubclass(obj, BaseException | int) else _signature(obj)
            doc = _doc(obj)
            source = _from_source(obj) if inspect.isclass(obj) else None
            if source is not None:
                sig, doc = source
            out += [f"#### `{kind} {_name(obj)}{sig}`", "", doc, ""]
            if inspect.isclass(obj) and issubclass(obj, enum.Enum):
                out += [", ".join(f"`{m.name}` = {m.value}" for m in obj), ""]
            for member in members or []:
                attr = inspect.getattr_static(obj, member)
                target = attr.fget if isinstance(attr, property) else getattr(obj, member)
                msig = "" if isinstance(attr, property) else _signature(target)
                out += [f"* `{member}{msig}`" + (" (property)" if isinstance(attr, property) else ""), ""]
                out += ["  " + line if line else "" for line in _doc(target).splitlines()] + [""]
    for title, path in _EXAMPLES:
        out += [f"### {title}", "", f"`{path}`:", "", "```python", (ROOT / path).read_text().rstrip(), "```", ""]
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--write":
        path = Path(argv[1])
        text = path.read_text()
        head = text.split(MARKER)[0]
        path.write_text(head + render())
        return 0
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
