"""``hoard bench``: load and correctness testing for every protocol scatterhoard speaks.

:mod:`.engine` runs loads (worker processes, pipelined connections, open or
closed loop), :mod:`.codecs` speaks the protocols over the sans-IO core,
:mod:`.histogram` keeps latencies, :mod:`.verify` model-checks replies,
:mod:`.cli` is the command line.
"""

from __future__ import annotations

from .engine import RunConfig, preload, run_load
from .histogram import Histogram
from .result import LoadResult
from .workload import BenchError, LoadSpec, parse_mix, parse_size_range

__all__ = ["BenchError", "Histogram", "LoadResult", "LoadSpec", "RunConfig", "parse_mix", "parse_size_range",
           "preload", "run_load"]
