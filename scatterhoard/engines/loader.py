"""Finding engines and handlers by name: entry points or ``package.module:Name``.

A third-party package ships an engine by declaring an entry point::

    [project.entry-points."scatterhoard.engines"]
    shelf = "hoard_shelf:ShelfEngine"

after which ``hoard server --engine shelf`` finds it. Handlers use the group
``scatterhoard.handlers``. A dotted path (``mypkg.engines:MyEngine``, or
``mypkg.engines.MyEngine``) works without any registration.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

from ..errors import ConfigError
from ..store.base import EngineConfig, Store
from .handlers import Handler

ENGINE_GROUP = "scatterhoard.engines"
HANDLER_GROUP = "scatterhoard.handlers"
#: The engines of this package, found even when the installed metadata is stale.
BUILTIN = {"memory": "scatterhoard.store.memory:MemoryStore", "sqlite": "scatterhoard.engines.sqlite:SqliteStore",
           "tiered": "scatterhoard.engines.tiered:TieredStore"}


def parse_options(pairs: list[str] | None, what: str = "--engine-opt") -> dict[str, str]:
    """``["k=v", ...]`` -> dict; a pair without ``=`` is an error."""
    options: dict[str, str] = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ConfigError(f"{what} {pair!r}: expected NAME=VALUE")
        options[name.strip()] = value
    return options


def available(group: str = ENGINE_GROUP) -> list[str]:
    """Names registered in an entry point group (and the built-in engines)."""
    names = {ep.name for ep in entry_points(group=group)}
    return sorted(names | set(BUILTIN) if group == ENGINE_GROUP else names)


def resolve(name: str, group: str = ENGINE_GROUP) -> Any:
    """The object an entry point name or a dotted path designates."""
    found = [ep for ep in entry_points(group=group) if ep.name == name]
    kind = "engine" if group == ENGINE_GROUP else "handler"
    if found:
        try:
            return found[0].load()
        except Exception as exc:  # a broken third-party package: one line, not a traceback
            raise ConfigError(f"{kind} {name!r} (entry point {found[0].value}) failed to load: {exc}") from None
    if group == ENGINE_GROUP and name in BUILTIN:
        name = BUILTIN[name]
    if ":" in name:
        module_name, _, attr = name.partition(":")
    elif "." in name:
        module_name, _, attr = name.rpartition(".")
    else:
        known = ", ".join(available(group)) or "none"
        raise ConfigError(f"unknown {kind} {name!r} (registered: {known}; or give package.module:Name)")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{kind} {name!r}: cannot import {module_name}: {exc}") from None
    target = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ConfigError(f"{kind} {name!r}: {module_name} has no attribute {attr!r}")
        target = getattr(target, part)
    return target


def _build(target: Any, config: EngineConfig, label: str) -> Any:
    factory = getattr(target, "from_config", None)
    try:
        if factory is not None:
            return factory(config)
        if not callable(target):
            raise ConfigError(f"{label} is neither a class nor a factory")
        return target(**config.options)
    except TypeError as exc:
        raise ConfigError(f"{label}: bad options {sorted(config.options)}: {exc}") from None


def create_engine(name: str, config: EngineConfig) -> Store:
    """Build the engine ``name`` (entry point or dotted path) from ``config``."""
    engine = _build(resolve(name, ENGINE_GROUP), config, f"engine {name!r}")
    if not isinstance(engine, Store):
        raise ConfigError(f"engine {name!r} built a {type(engine).__name__}, not a scatterhoard Store")
    engine.max_item_size = config.item_size_max
    return engine


def create_handler(name: str, config: EngineConfig) -> Handler:
    """Build the handler ``name`` (entry point in ``scatterhoard.handlers`` or dotted path)."""
    handler = _build(resolve(name, HANDLER_GROUP), config, f"handler {name!r}")
    if not isinstance(handler, Handler):
        raise ConfigError(f"handler {name!r} built a {type(handler).__name__}, not a scatterhoard Handler")
    return handler
