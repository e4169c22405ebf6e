"""The install compiles the hot modules (setup.py + mypyc), and the compiled ones behave."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from scatterhoard import _build
from scatterhoard.engines.record import RecordStore
from scatterhoard.store.base import Item, Store
from scatterhoard.store.memory import MemoryStore
from tests.support import hoard_argv


def test_every_listed_module_is_compiled() -> None:
    """A mypyc failure falls back to pure Python silently at install; here it fails loudly."""
    if os.environ.get("SCATTERHOARD_PURE"):
        pytest.skip("SCATTERHOARD_PURE=1: pure Python by request")
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler: the install is pure Python by design")
    assert _build.compiled() == list(_build.COMPILED), _build.describe()
    assert _build.stale() == []


def test_version_says_how_it_runs() -> None:
    out = subprocess.run(hoard_argv("--version"), capture_output=True, text=True, timeout=60).stdout
    assert out.strip() == f"scatterhoard 0.1.0 ({_build.describe()})"


class Engine(RecordStore):
    def load(self, key: bytes) -> Item | None:
        return None

    def save(self, key: bytes, item: Item) -> None:
        pass

    def remove(self, key: bytes) -> bool:
        return False

    def clear(self) -> None:
        pass


def test_isinstance_memory_store_is_not_any_store() -> None:
    """mypyc leaves a compiled ABC subclass without its own registry (store/memory.py fixes it)."""
    assert isinstance(Engine(), Store)  # caches Engine as a Store (the engine loader does this)
    assert isinstance(MemoryStore(), MemoryStore)
    assert not isinstance(Engine(), MemoryStore)
    assert not issubclass(Engine, MemoryStore)
