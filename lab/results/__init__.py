"""Results: reading a sweep (sweep), its table (table; grouped_table: one row per configuration, mean ± std
over seeds, with groups), its plots (plots), the command line (cli) and the sweep status Hydra reports
(sweep_status). The reading API is here, for notebooks: `from lab.results import load_sweep, build_table`.
Cheap to import: no torch, Hydra's parser or matplotlib.
"""

from lab.results.grouped_table import GroupedTable, group_table, write_grouped
from lab.results.groups import Group, group_jobs, has_replicates, mean_std
from lab.results.plots import figure, plot
from lab.results.sweep import Job, ReportError, Sweep, expand_overrides, latest_sweep, load_sweep
from lab.results.table import Table, available_metrics, best_job, build_table, format_value, select_metrics, write

__all__ = ["Group", "GroupedTable", "Job", "ReportError", "Sweep", "Table", "available_metrics", "best_job",
           "build_table", "expand_overrides", "figure", "format_value", "group_jobs", "group_table", "has_replicates",
           "latest_sweep", "load_sweep", "mean_std", "plot", "select_metrics", "write", "write_grouped"]
