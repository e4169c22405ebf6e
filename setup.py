"""Build script: compiles the hot modules with mypyc when it can, else installs pure Python.

The package is complete without compilation: mypyc (from mypy, a build requirement) turns the
modules in ``COMPILED`` into C extensions that run the per-request path about twice as fast.
``SCATTERHOARD_PURE=1`` skips it; a failed compile (no C compiler, say) is reported and the
pure-Python modules are used. ``hoard --version`` says which is running.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext


def compiled_sources() -> list[str]:
    """The module list from scatterhoard/_build.py (one place), as source paths."""
    scope: dict[str, object] = {}
    with open(os.path.join("scatterhoard", "_build.py"), encoding="utf-8") as fh:
        exec(compile(fh.read(), "_build.py", "exec"), scope)
    sources = scope["sources"]
    assert callable(sources)
    paths = sources()
    assert isinstance(paths, list)
    return paths


class OptionalBuildExt(build_ext):
    """All compiled modules or none: any failure removes what was built and goes on."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # compiler missing or failing: pure Python still works
            for ext in self.extensions:
                path = self.get_ext_fullpath(ext.name)
                if os.path.exists(path):
                    os.remove(path)
            print(f"scatterhoard: compiling with mypyc failed ({exc}); using pure Python",
                  file=sys.stderr)


def ext_modules() -> list[Any]:
    if os.environ.get("SCATTERHOARD_PURE"):
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        print("scatterhoard: mypyc not available; installing pure Python", file=sys.stderr)
        return []
    try:
        return list(mypycify(compiled_sources(), opt_level="3"))
    except (Exception, SystemExit) as exc:  # mypyc refuses the code: still installable
        print(f"scatterhoard: mypyc failed ({exc!r}); installing pure Python", file=sys.stderr)
        return []


setup(ext_modules=ext_modules(), cmdclass={"build_ext": OptionalBuildExt})
