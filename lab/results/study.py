"""A study's report: mean ± std over seeds per setting, the plot, the reference figures, and
whether this sweep reproduces each expected finding, with the statistic that decided it.

A study is a config (conf/study/<name>.yaml): an experiment and a sweep, seeds, and a `study:`
node naming the swept key `x`, the `metric` and its `mode`, the `reference` figures from
STUDIES.md and the expected `findings`. Each finding is checked by a rule the report states:

- `better` {a, b}: the runs at a beat those at b: Welch's t of the difference of means >= 2
  (t is the difference over its standard error, signed so that positive is better).
- `not_better` {a, b}: a does not beat b: t < 2 (first and last name the ends of the x order).
- `best_is` / `worst_is` {value}: that setting has the best (worst) mean, by t >= 2 over the next.
- `best_interior`: the best mean is at neither end of the x order, by t >= 2 over both ends.
- `decreasing`: the means fall at every step of the x order and first - last has t >= 2.
- `at_chance` {value, chance, margin}: that setting's mean is at most chance + margin.

A setting's value is x's value, or a mapping {key: value} naming one configuration. "Reproduced"
needs the direction and t >= 2 (about 95% one-sided with 3 seeds a side is t >= 2.1: the rule is
lenient at n=3 and says so by printing t); a finding with too few runs for a spread is "not
reproduced (needs 2+ runs per setting)". Written into the sweep folder as study.md and
study.json by the sweep's end (lab.results.sweep_status) and by `python -m lab.report <sweep>`.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from lab.results.grouped_table import format_mean_std
from lab.results.groups import Group, group_jobs
from lab.results.sweep import ReportError, Sweep
from lab.runs import folder as run_folder

STUDY_MD, STUDY_JSON = "study.md", "study.json"
T_NEEDED = 2.0
KINDS = ("better", "not_better", "best_is", "worst_is", "best_interior", "decreasing", "at_chance")
EXTRA_METRICS = ("val/top1_best", "test/top1", "test/loss", "val/mse", "test/mse", "test/r2", "wall_time_s")


@dataclass
class Verdict:
    """One expected finding and what this sweep says about it."""

    text: str
    kind: str
    reproduced: bool
    statistic: str

    @property
    def line(self) -> str:
        return f"{'reproduced' if self.reproduced else 'not reproduced'}: {self.text} ({self.statistic})"


class Study:
    """A study's sweep read back: its settings (groups of seeds) in x order, and the checks."""

    def __init__(self, sweep: Sweep) -> None:
        spec = sweep.study or {}
        for key in ("x", "metric"):
            if not spec.get(key):
                raise ReportError(f"{sweep.path / run_folder.MULTIRUN}: study.{key} is missing; a study names "
                                  "its swept key (x) and the metric it is read by")
        self.sweep, self.spec = sweep, spec
        self.x, self.metric = str(spec["x"]), str(spec["metric"])
        self.sign = -1.0 if str(spec.get("mode", "max")) == "min" else 1.0
        self.groups = group_jobs(sweep.jobs, sweep.varying)
        self.x_values = _ordered([g.params.get(self.x, "") for g in self.groups])

    # -- the settings a finding names
    def runs(self, value: Any) -> list[float]:
        """The metric of every finished run of a setting: x == value (pooled over the other keys),
        a mapping {key: value}, or `first` / `last` of the x order."""
        if value in ("first", "last"):
            value = self.x_values[0 if value == "first" else -1]
        groups = [g for g in self.groups if _matches(g, self.x, value)]
        if not groups:
            have = ", ".join(self.x_values)
            raise ReportError(f"study finding names {self.x}={value}, which this sweep did not run (it ran {have})")
        return [v for g in groups for v in g.values(self.metric)]

    def label(self, value: Any) -> str:
        if isinstance(value, dict):
            return ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in value.items())
        if value in ("first", "last"):
            value = self.x_values[0 if value == "first" else -1]
        return f"{self.x}={value}"

    def t(self, a: list[float], b: list[float]) -> float:
        """Welch's t of mean(a) - mean(b), signed so that positive means a is better."""
        if len(a) < 2 or len(b) < 2:
            return math.nan
        se = math.sqrt(statistics.variance(a) / len(a) + statistics.variance(b) / len(b))
        diff = self.sign * (statistics.fmean(a) - statistics.fmean(b))
        return diff / se if se > 0 else (math.inf if diff > 0 else -math.inf if diff < 0 else 0.0)

    def check(self, finding: dict[str, Any]) -> Verdict:
        kind = str(finding.get("kind"))
        if kind not in KINDS:
            raise ReportError(f"study finding kind {kind!r} is not one of {', '.join(KINDS)}")
        text = str(finding.get("text") or kind)
        reproduced, statistic = getattr(self, f"_{kind}")(finding)
        return Verdict(text, kind, bool(reproduced), statistic)

    def _pair(self, finding):
        a, b = self.runs(finding["a"]), self.runs(finding["b"])
        t = self.t(a, b)
        stat = f"{self.label(finding['a'])} {self._ms(a)} vs {self.label(finding['b'])} {self._ms(b)}, t = {_t(t)}"
        return t, stat

    def _better(self, finding):
        t, stat = self._pair(finding)
        return (not math.isnan(t) and t >= T_NEEDED), stat + _short_of(t)

    def _not_better(self, finding):
        t, stat = self._pair(finding)
        return (not math.isnan(t) and t < T_NEEDED), stat

    def _ranked(self):
        """x values with results, best mean first."""
        means = {x: _mean(runs) for x in self.x_values if (runs := self.runs(x))}
        return sorted(means, key=lambda x: self.sign * means[x], reverse=True)

    def _best_is(self, finding, worst: bool = False):
        value = finding["value"]
        # the settings compared: x's values (pooled over other keys), or whole configurations
        settings = [(g.params, g.values(self.metric)) for g in self.groups] if isinstance(value, dict) \
            else [(x, self.runs(x)) for x in self.x_values]
        settings = [s for s in settings if s[1]]
        if not settings:
            return False, "no finished runs"
        sign = -1.0 if worst else 1.0
        settings.sort(key=lambda s: sign * self.sign * _mean(s[1]), reverse=True)
        named = self.runs(value)
        is_named = (lambda key: _matches_params(key, value)) if isinstance(value, dict) \
            else (lambda key: _norm(key) == _norm(value))
        top_key, top_runs = settings[0]
        others = [s for s in settings if not is_named(s[0])]
        if not others:
            return False, f"{self.label(value)} {self._ms(named)} is the only setting"
        if all(sorted(runs) == sorted(named) for _, runs in settings):
            return False, f"every setting gave the same runs ({self._ms(named)}): {self.x} changed nothing"
        is_top = is_named(top_key)
        other_key, other_runs = others[0] if is_top else (top_key, top_runs)
        t = sign * self.t(named, other_runs)
        which = "worst" if worst else "best"
        if is_top:
            stat = (f"{which}: {self.label(value)} {self._ms(named)}; "
                    f"next {self.label(other_key)} {self._ms(other_runs)}, t = {_t(t)}") + _short_of(t)
        else:
            stat = f"{which}: {self.label(top_key)} {self._ms(top_runs)}; {self.label(value)} {self._ms(named)}"
        return is_top and not math.isnan(t) and t >= T_NEEDED, stat

    def _worst_is(self, finding):
        return self._best_is(finding, worst=True)

    def _best_interior(self, finding):
        order = self._ranked()
        if len(self.x_values) < 3 or not order:
            return False, "needs 3 or more settings with results"
        best = order[0]
        ends = [self.x_values[0], self.x_values[-1]]
        ts = [self.t(self.runs(best), self.runs(end)) for end in ends]
        stat = f"best {self.label(best)} {self._ms(self.runs(best))}; ends " + ", ".join(
            f"{self.label(end)} {self._ms(self.runs(end))} (t = {_t(t)})" for end, t in zip(ends, ts))
        interior = best not in ends
        return interior and all(not math.isnan(t) and t >= T_NEEDED for t in ts), \
            stat + ("" if interior else "; the best is at an end")

    def _decreasing(self, finding):
        runs = [self.runs(x) for x in self.x_values]
        means = [_mean(r) for r in runs]
        steps = all(b < a for a, b in zip(means, means[1:]))
        t = self.sign * self.t(runs[0], runs[-1])  # of the raw values, whatever the mode: falling is positive
        stat = ", ".join(f"{x} {self._ms(r)}" for x, r in zip(self.x_values, runs)) + f"; first - last t = {_t(t)}"
        return steps and not math.isnan(t) and t >= T_NEEDED, stat + ("" if steps else "; not falling at every step")

    def _at_chance(self, finding):
        runs = self.runs(finding["value"])
        limit = float(finding.get("chance", 0.0)) + float(finding.get("margin", 0.0))
        mean = _mean(runs)
        stat = f"{self.label(finding['value'])} {self._ms(runs)}, chance + margin = {limit:g}"
        return bool(runs) and mean <= limit, stat

    def _ms(self, values: list[float]) -> str:
        """`mean ± std (n=k)` of runs of the study's metric, formatted as lab.report formats it."""
        if not values:
            return "(no runs)"
        std = statistics.stdev(values) if len(values) > 1 else math.nan
        return f"{format_mean_std(self.metric, _mean(values), std, len(values))} (n={len(values)})"

    # -- the report
    @cached_property
    def verdicts(self) -> list[Verdict]:
        return [self.check(f) for f in self.spec.get("findings") or []]

    def table_markdown(self) -> str:
        keys = [self.x, *[k for k in self.sweep.varying if k not in (self.x, "seed")]]
        metrics = [self.metric, *[m for m in EXTRA_METRICS if m != self.metric and
                                  any(m in j.metrics for j in self.sweep.jobs)]]
        order = {x: i for i, x in enumerate(self.x_values)}
        groups = sorted(self.groups, key=lambda g: order.get(g.params.get(self.x, ""), 0))
        lines = ["| " + " | ".join([*keys, *metrics, "n"]) + " |", "|" + "---|" * (len(keys) + len(metrics) + 1)]
        for g in groups:
            stats = [g.stats(m) for m in metrics]
            cells = [g.params.get(k, "") for k in keys] + [format_mean_std(m, *s) for m, s in zip(metrics, stats)]
            cells.append(str(stats[0][2]))
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def markdown(self, title_level: int = 2) -> str:
        spec, sweep = self.spec, self.sweep
        seeds = sorted({j.params.get("seed", "") for j in sweep.jobs} - {""})
        counts = sweep.counts()
        direction = "lower" if self.sign < 0 else "higher"
        parts = [f"{'#' * title_level} {spec.get('title') or sweep.path.name}", "",
                 f"Command: `python -m lab.run -m {' '.join(sweep.command)}`", "",
                 f"Read by `{self.metric}` ({direction} is better), "
                 f"mean ± std over seeds {', '.join(seeds) or '(one run)'}; "
                 f"{counts['ok']} of {len(sweep.jobs)} runs finished"
                 + (f", {counts['failed']} failed" if counts["failed"] else "") + ".", "",
                 self.table_markdown(), ""]
        plot = f"plot_{self.metric.replace('/', '_')}.png"
        if (sweep.path / plot).is_file():
            parts += [f"![{self.metric} against {self.x}]({plot})", ""]
        if spec.get("reference"):
            parts += [f"Reference (STUDIES.md): {' '.join(str(spec['reference']).split())}", ""]
        parts += ["Findings:", ""] + [f"- {v.line}" for v in self.verdicts]
        if spec.get("notes"):
            parts += ["", " ".join(str(spec["notes"]).split())]
        return "\n".join(parts) + "\n"


def print_findings(study: Study, table: bool = False) -> None:
    """The verdict lines (and, with `table`, the mean ± std table) on the console, uncut in a log."""
    from lab.utils.console import console

    lines = ([study.table_markdown()] if table else []) + [v.line for v in study.verdicts]
    for line in lines:
        console.print(line, markup=False, highlight=False, soft_wrap=True)


def write_report(sweep: Sweep, plot: bool = True) -> tuple[Study, list[Path]] | None:
    """Writes study.md and study.json (and the plot of the study's metric) into a study's sweep
    folder; None for a sweep that is not a study."""
    if sweep.study is None:
        return None
    study, path, spec = Study(sweep), sweep.path, sweep.study
    written: list[Path] = []
    if plot:
        from lab.results.plots import plot as draw
        from lab.results.table import build_table

        table = build_table(study.sweep, [study.metric])
        if study.x in table.params:
            written += draw(table, study.x)
    (path / STUDY_MD).write_text(study.markdown())
    summary = {"title": spec.get("title"), "x": study.x, "metric": study.metric, "command": study.sweep.command,
               "settings": [{"params": g.params, **dict(zip(("mean", "std", "n"), g.stats(study.metric)))}
                            for g in study.groups],
               "findings": [asdict(v) for v in study.verdicts]}
    (path / STUDY_JSON).write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return study, written + [path / STUDY_MD, path / STUDY_JSON]


def _matches_params(params: dict[str, str], value: dict[str, Any]) -> bool:
    return all(_norm(params.get(k, "")) == _norm(v) for k, v in value.items())


def _matches(group: Group, x: str, value: Any) -> bool:
    if isinstance(value, dict):
        return all(_norm(group.params.get(k, "")) == _norm(v) for k, v in value.items())
    return _norm(group.params.get(x, "")) == _norm(value)


def _norm(value: Any) -> str:
    text = "null" if value is None else str(value).strip().lower()
    try:
        return repr(float(text))
    except ValueError:
        return text


def _ordered(appearance: list[str]) -> list[str]:
    """x values ascending when all are numbers, else in the order the sweep ran them."""
    unique = list(dict.fromkeys(appearance))
    try:
        return sorted(unique, key=float)
    except ValueError:
        return unique


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else math.nan


def _t(t: float) -> str:
    return "n/a (needs 2+ runs per setting)" if math.isnan(t) else f"{t:.1f}"


def _short_of(t: float) -> str:
    return f"; t < {T_NEEDED:g}: within the seeds' noise" if not math.isnan(t) and 0 < t < T_NEEDED else ""
