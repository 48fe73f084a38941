"""Results table of a sweep: `python -m lab.report [<multirun dir>] [--metrics ...] [--sort KEY] [--plot]`.

One row per job, in the order Hydra's basic sweeper launches them, with status `ok`,
`failed: <the error's first line>` or `missing` (not started yet, or started but without a
result: still running or killed); the varying parameters and the metrics are the columns.
An Optuna study's rows are its trial folders, its objective (task.objective) the first
metric, its best trial above the table. Writes table.md and table.csv into the sweep folder;
with --plot one PNG per metric (plot_<metric>.png) and a TensorBoard run `report/`.

A sweep that ran a configuration more than once (seed=0,1,2) is reported by configuration:
one row each, every metric as mean ± std over its finished runs, n, and a status summary
(`2 ok, 1 failed: <error>`); the per-job rows go to jobs.md and jobs.csv, --sort ranks the
means, and the plots draw ± std error bars.

The entry point only: the code is in lab.results (sweep, table, grouped_table, plots, cli).
Bad input prints one line and exits with status 2.
"""

if __name__ == "__main__":
    import sys

    from lab.results.cli import main
    from lab.utils.shutdown import skip_final_collection

    skip_final_collection()  # after matplotlib/TensorBoard, a quicker interpreter exit
    sys.exit(main())
