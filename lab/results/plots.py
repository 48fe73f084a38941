"""The figures of a sweep: one per metric against a swept parameter, as PNG files and as images
in a TensorBoard run `report/` (regenerated, not appended). A sweep that ran a configuration more
than once (seed=0,1,2) is drawn as each configuration's mean with ± std error bars, its runs as
faint points. matplotlib and TensorBoard load only when a figure is drawn.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

from lab.results.groups import REPLICATE_KEYS, group_jobs, has_replicates
from lab.results.sweep import ReportError
from lab.results.table import Table, maybe_float, short

REPORT_RUN = "report"  # the TensorBoard run in the sweep folder


def plot(table: Table, x: str | None = None, folder: str | os.PathLike | None = None,
         tensorboard: bool = True) -> list[Path]:
    """One PNG per metric against a swept parameter; also logged to TensorBoard in `report/`.

    x defaults to the first parameter that varies (the seed aside, when configurations repeat
    with several seeds); the other varying parameters make one line each. Repeated configurations
    are drawn as mean ± std (see `figure`). Jobs without a value (failed, missing, nan) are left
    out, so the plot of a running sweep fills in as jobs finish. Returns the PNG paths (none when
    no parameter varies or no job has a value).
    """
    from lab.utils.io import atomic_write_bytes

    folder = Path(folder) if folder is not None else table.sweep.path
    if x is None:
        if not table.params:
            return []
        configs = [k for k in table.params if k not in REPLICATE_KEYS] if _grouped(table, "") else []
        x = (configs or table.params)[0]
    elif x not in table.sweep.keys:
        raise ReportError(f"--x {x}: not an overridden key of this sweep; choose one of: {', '.join(table.sweep.keys)}")
    images: dict[str, bytes] = {}
    paths = []
    for metric in table.metrics:
        png = _plot_png(table, metric, x)
        if png is None:
            continue
        path = folder / f"plot_{re.sub(r'[^A-Za-z0-9_.-]+', '_', metric)}.png"
        atomic_write_bytes(path, png)
        paths.append(path)
        images[f"{REPORT_RUN}/{metric}"] = png
    if tensorboard and images:
        _log_images(folder / REPORT_RUN, images)
    return paths


def figure(table: Table, metric: str, x: str):
    """The matplotlib Figure of one metric against parameter x (no pyplot: no backend change).

    When some configuration ran more than once (and x is not the seed), each configuration is a
    marker at its mean with a ± std error bar (sample std; none for n = 1), its runs faint points
    behind it; otherwise one point per job.
    """
    from matplotlib.figure import Figure

    grouped = _grouped(table, x)
    others = [k for k in table.params if k != x and not (grouped and k in REPLICATE_KEYS)]
    all_x = [job.params.get(x, "") for job in table.sweep.jobs]  # launch order, whatever the table's sort
    numeric = all(isinstance(maybe_float(v), float) for v in all_x)
    categories = list(dict.fromkeys(all_x))

    def position(job) -> float:
        value = job.params.get(x, "")
        return float(value) if numeric else categories.index(value)

    def label(job) -> str:
        return ", ".join(short(job.params.get(k, "")) for k in others)  # the legend's title names the keys

    fig = Figure(figsize=(5.5, 3.6), layout="constrained")
    ax = fig.add_subplot()
    if grouped:
        from matplotlib.transforms import offset_copy

        beside = offset_copy(ax.transData, fig=fig, x=6, units="points")  # the runs just right of their bar
        series: dict[str, list[tuple[float, float, float, list[float]]]] = {}
        for group in group_jobs(table.sweep.jobs, table.params):
            mean, std, n = group.stats(metric)
            if n:
                series.setdefault(label(group.jobs[0]), []).append(
                    (position(group.jobs[0]), mean, 0.0 if math.isnan(std) else std, group.values(metric)))
        for name, points in series.items():
            points.sort(key=lambda p: p[0])
            bars = ax.errorbar([p[0] for p in points], [p[1] for p in points], yerr=[p[2] for p in points],
                               marker="o", capsize=3, label=name or None, zorder=3)
            runs = [(p[0], v) for p in points for v in p[3]]
            ax.scatter([r[0] for r in runs], [r[1] for r in runs], s=14, alpha=0.35, color=bars[0].get_color(),
                       linewidths=0, zorder=2, transform=beside)
        shown, lines = sum(len(p[3]) for points in series.values() for p in points), len(series)
        what = f"mean ± std, {shown} of {len(table.jobs)} jobs"
    else:
        by_line: dict[str, list[tuple[float, float]]] = {}
        for job in table.jobs:
            value = job.metrics.get(metric)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                by_line.setdefault(label(job), []).append((position(job), float(value)))
        for name, values in by_line.items():
            values.sort()
            ax.plot([v[0] for v in values], [v[1] for v in values], marker="o", label=name or None)
        lines = len(by_line)
        what = f"{sum(len(v) for v in by_line.values())} of {len(table.jobs)} jobs"
    if numeric:
        xs = [float(v) for v in all_x]
        log = min(xs) > 0 and max(xs) / min(xs) >= 10
        if log:
            ax.set_xscale("log")
        ticks = {float(v): short(v) for v in all_x}  # every swept value, written as on the command line
        if len(ticks) <= 12:
            ax.set_xticks(list(ticks), list(ticks.values()))
            ax.minorticks_off()
            lo, hi = (math.log10(min(xs)), math.log10(max(xs))) if log else (min(xs), max(xs))
            pad = 0.06 * (hi - lo) or 0.5
            ax.set_xlim(*((10 ** (lo - pad), 10 ** (hi + pad)) if log else (lo - pad, hi + pad)))
    else:
        long = sum(len(c) for c in categories) > 40
        ax.set_xticks(range(len(categories)), categories, rotation=25 if long else 0, ha="right" if long else "center")
    ax.set_xlabel(x)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} vs {x}  ({what})", fontsize=10)
    ax.grid(True, alpha=0.3)
    if others and lines:
        ax.legend(title=", ".join(others), fontsize=8, title_fontsize=8)
    return fig


def _grouped(table: Table, x: str) -> bool:
    """Whether the figures show configurations (mean ± std) rather than jobs: some configuration ran
    more than once, x is not the seed (against the seed, every run is its own point), and the sweep is
    not an Optuna study (whose trials are its rows, as in its table)."""
    sweep = table.sweep
    return x not in REPLICATE_KEYS and sweep.optuna is None and has_replicates(sweep.jobs, table.params)


def _plot_png(table: Table, metric: str, x: str) -> bytes | None:
    import io

    if not any(isinstance(job.metrics.get(metric), (int, float)) for job in table.jobs):
        return None
    buffer = io.BytesIO()
    figure(table, metric, x).savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def _log_images(folder: Path, images: dict[str, bytes]) -> None:
    """PNG images as one TensorBoard event (step 0); the report run is regenerated, not appended."""
    import time

    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("events.out.tfevents.*"):
        old.unlink()
    values = []
    for tag, png in images.items():
        width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")  # PNG IHDR
        image = Summary.Image(height=height, width=width, colorspace=4, encoded_image_string=png)
        values.append(Summary.Value(tag=tag, image=image))
    writer = EventFileWriter(str(folder))
    writer.add_event(Event(wall_time=time.time(), step=0, summary=Summary(value=values)))
    writer.close()

