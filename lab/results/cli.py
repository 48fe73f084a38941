"""`python -m lab.report [<sweep>] [--metrics ...] [--sort KEY] [--reverse] [--plot] [--x KEY]`: print a
sweep's table, write table.md and table.csv (and the plots) into its folder. A sweep that ran a
configuration more than once (seed=0,1,2) gets one row per configuration, mean ± std and n of each metric
(lab.results.grouped_table), and its per-job table in jobs.md and jobs.csv. An Optuna study stored in
the sweep folder (optuna.db) also gets every trial with its state, value and parameters, read from the
database (lab.results.trials): printed below, and in trials.md and trials.csv. Bad input prints one line
and exits with status 2. Importing this is cheap: rich, Hydra and matplotlib load inside main().
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lab.results.grouped_table import group_table, write_grouped
from lab.results.plots import REPORT_RUN, plot
from lab.results.study import print_findings
from lab.results.study import write_report as write_study
from lab.results.sweep import ReportError, latest_sweep, load_sweep
from lab.results.table import build_table, write


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lab.report",
        description="Results table of a sweep (python -m lab.run -m ...): one row per job, its varying "
                    "parameters, metrics and status (ok / failed: error / missing). Prints it and writes "
                    "table.md and table.csv into the sweep folder. When a configuration ran more than once "
                    "(e.g. seed=0,1,2), one row per configuration: each metric as mean ± std, n finished "
                    "runs, a status summary; the per-job rows go to jobs.md and jobs.csv.",
    )
    parser.add_argument("sweep", nargs="?", help="the sweep folder (default: the newest in "
                        "$LAB_OUTPUT_DIR/multiruns, else outputs/multiruns)")
    parser.add_argument("--metrics", action="append", metavar="M[,M...]",
                        help="metric columns, comma-separated names or globs (e.g. 'test/*'); "
                             "default: val/test loss, top-1, top-5 (or mse, r2), best_epoch, wall_time_s")
    parser.add_argument("--sort", metavar="KEY", help="sort rows by a metric (best first: the objective "
                        "by task.objective.mode, highest for accuracies and r2, lowest otherwise; its mean "
                        "when rows are configurations) or a parameter (ascending)")
    parser.add_argument("--reverse", action="store_true", help="reverse the --sort order")
    parser.add_argument("--plot", action="store_true", help="one PNG per metric against the swept parameter "
                        "(plot_<metric>.png; mean and ± std error bars when a configuration ran more than once), "
                        "also as images in the TensorBoard run report/")
    parser.add_argument("--x", metavar="KEY", help="the parameter on the plots' x axis (default: the first "
                        "that varies, seed aside when it repeats configurations; the others make one line each)")
    return parser


def _trials_table(table):
    """The trials of the sweep's Optuna study (optuna.db), or None when it has none."""
    from lab.results.trials import TrialsTable

    study = (table.sweep.optuna or {}).get("db")
    if study is None:
        return None
    return TrialsTable(study, table.sweep.path, objective=table.sweep.objective.best_key)


def main(argv: list[str] | None = None) -> int:
    """CLI: print the table, write table.md/table.csv (and plots); bad input: one line, status 2."""
    args = _parser().parse_args(argv)
    from lab.utils.console import console, print_error

    try:
        path = Path(args.sweep) if args.sweep else latest_sweep()
        table = build_table(load_sweep(path), args.metrics, args.sort, args.reverse)
        grouped = group_table(table, args.sort, args.reverse)  # None: no configuration ran twice
        shown = grouped or table
        if not console.is_terminal:
            # a log file gets the whole table, not a wrapped one
            wide = console.options.update_width(100_000)
            console.width = max(console.width, 160, console.measure(shown.to_rich(), options=wide).maximum)
        console.print(shown.to_rich(console))
        trials = _trials_table(table)
        if trials is not None:
            console.print(trials.to_rich())
        try:
            written = list(write_grouped(grouped) if grouped else write(table))
            if trials is not None:
                written += trials.write()
            if args.plot:
                pngs = plot(table, args.x)
                written += pngs
                if pngs:
                    written.append(path / REPORT_RUN)
                else:
                    console.print("nothing to plot: " + ("no parameter varies across jobs" if not table.params
                                                         else "no job has a value yet"))
            study = write_study(table.sweep, plot=not args.plot)  # a study's sweep: study.md, its findings
            if study is not None:
                print_findings(study[0])
                written += [p for p in study[1] if p not in written]
        except OSError as err:
            raise ReportError(f"cannot write the report into {path}: {err.strerror or err}") from None
    except ReportError as err:
        print_error(str(err))
        return 2
    console.print("[bold]written:[/bold] " + ", ".join(str(p) for p in written), soft_wrap=True, highlight=False)
    return 0

