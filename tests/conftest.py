"""Suite-wide guard: never test a compiled module that no longer matches its source."""

from __future__ import annotations

import pytest

from scatterhoard import _build


def pytest_sessionstart(session: pytest.Session) -> None:
    stale = _build.stale()
    if stale:
        pytest.exit(f"compiled modules older than their source: {', '.join(stale)}; rebuild them "
                    "with `make build` (or `.venv/bin/pip install -e .`), or delete the .so files "
                    "to test pure Python", returncode=4)
