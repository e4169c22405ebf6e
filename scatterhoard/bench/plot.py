"""``hoard bench --plot FILE.png``: throughput and latency over time, and the latency percentile curve.

matplotlib is an optional extra (``pip install 'scatterhoard[plot]'``); without
it :func:`require_matplotlib` raises a :class:`BenchError` that says so, before
any load is run.
"""

from __future__ import annotations

from typing import Any

from .result import LoadResult
from .workload import BenchError


def require_matplotlib() -> Any:
    """The ``matplotlib.pyplot`` module on the Agg backend, or a clear BenchError."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise BenchError("--plot needs matplotlib: pip install 'scatterhoard[plot]' "
                         "(or pip install matplotlib)") from None
    return plt


def percentile_curve(res: LoadResult, points: int = 200) -> tuple[list[float], list[float]]:
    """(x, latency us) where x = 1 / (1 - p): HdrHistogram's percentile-distribution axis."""
    xs: list[float] = []
    ys: list[float] = []
    if res.hist.total == 0:
        return xs, ys
    top = 1 - 1 / max(10.0, float(res.hist.total))
    for i in range(points + 1):
        # spread points evenly on the log axis from p=0 to p=top
        frac = 1 - (1 - top) ** (i / points)
        p = 100.0 * frac
        xs.append(1 / (1 - frac))
        ys.append(res.hist.percentile(p) / 1000.0)
    return xs, ys


def plot(results: list[LoadResult], path: str, title: str = "") -> None:
    """Write the figure for one or more results (``--compare`` gives two) to ``path``."""
    plt = require_matplotlib()
    fig, (ax_ops, ax_lat, ax_pct) = plt.subplots(3, 1, figsize=(10, 11))
    for res in results:
        label = f"{res.target} ({res.protocol})"
        # each interval at its end; the last one (the drain of requests in flight) by its real length
        ivs = [(iv, min(res.interval, res.elapsed - iv.start)) for iv in res.timeline]
        ivs = [(iv, w) for iv, w in ivs if w >= 0.2 * res.interval or len(ivs) == 1]
        t = [iv.start + max(w, 1e-3) for iv, w in ivs]
        ax_ops.plot(t, [iv.ops / max(w, 1e-3) for iv, w in ivs], marker=".", label=label)
        ax_lat.plot(t, [iv.hist.percentile(50) / 1000.0 for iv, _ in ivs], marker=".", label=f"{label} p50")
        ax_lat.plot(t, [iv.hist.percentile(99) / 1000.0 for iv, _ in ivs], marker=".", linestyle="--",
                    label=f"{label} p99")
        xs, ys = percentile_curve(res)
        ax_pct.plot(xs, ys, label=label)
    ax_ops.set(title=title or "hoard bench", xlabel="seconds", ylabel="ops/s")
    ax_lat.set(xlabel="seconds", ylabel="latency (us)")
    ax_pct.set_xscale("log")
    ax_pct.set(xlabel="percentile", ylabel="latency (us)")
    ticks = [x for x in (1, 2, 10, 100, 1000, 10000, 100000, 1000000)
             if results and x <= max(2.0, max(r.hist.total for r in results))]
    ax_pct.set_xticks(ticks)
    ax_pct.set_xticklabels([f"{100 * (1 - 1 / x):g}%" for x in ticks])
    for ax in (ax_ops, ax_lat, ax_pct):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=100)
    except OSError as exc:
        raise BenchError(f"--plot: cannot write {path}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)
