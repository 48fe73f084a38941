"""The figures of a sweep: one per metric against a swept parameter, as PNG files and as images
in a TensorBoard run `report/` (regenerated, not appended). matplotlib and TensorBoard load
only when a figure is drawn.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

from lab.results.sweep import ReportError
from lab.results.table import Table, maybe_float, short

REPORT_RUN = "report"  # the TensorBoard run in the sweep folder


def plot(table: Table, x: str | None = None, folder: str | os.PathLike | None = None,
         tensorboard: bool = True) -> list[Path]:
    """One PNG per metric against a swept parameter; also logged to TensorBoard in `report/`.

    x defaults to the first parameter that varies; the other varying parameters make one
    line each. Jobs without a value (failed, missing, nan) are left out, so the plot of a
    running sweep fills in as jobs finish. Returns the PNG paths (none when no parameter
    varies or no job has a value).
    """
    from lab.utils.io import atomic_write_bytes

    folder = Path(folder) if folder is not None else table.sweep.path
    if x is None:
        if not table.params:
            return []
        x = table.params[0]
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
    """The matplotlib Figure of one metric against parameter x (no pyplot: no backend change)."""
    from matplotlib.figure import Figure

    others = [k for k in table.params if k != x]
    points = []
    for job in table.jobs:
        value = job.metrics.get(metric)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            points.append((job, job.params.get(x, ""), float(value)))
    fig = Figure(figsize=(5.5, 3.6), layout="constrained")
    ax = fig.add_subplot()
    all_x = [job.params.get(x, "") for job in table.sweep.jobs]  # launch order, whatever the table's sort
    numeric = all(isinstance(maybe_float(v), float) for v in all_x)
    categories = list(dict.fromkeys(all_x))
    series: dict[str, list[tuple[Any, float]]] = {}
    for job, xv, yv in points:
        label = ", ".join(short(job.params.get(k, "")) for k in others)  # the legend's title names the keys
        series.setdefault(label, []).append((float(xv) if numeric else categories.index(xv), yv))
    for label, values in series.items():
        values.sort()
        ax.plot([v[0] for v in values], [v[1] for v in values], marker="o", label=label or None)
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
    ax.set_title(f"{metric} vs {x}  ({len(points)} of {len(table.jobs)} jobs)", fontsize=10)
    ax.grid(True, alpha=0.3)
    if others and series:
        ax.legend(title=", ".join(others), fontsize=8, title_fontsize=8)
    return fig


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

