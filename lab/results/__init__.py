"""Results: reading a sweep (sweep), its table (table; grouped_table: one row per configuration, mean ± std
over seeds, with groups), its plots (plots), the command line (cli) and the sweep status Hydra reports
(sweep_status). The reading API is here, for notebooks: `from lab.results import load_sweep, build_table`.
Cheap to import: no torch, Hydra's parser or matplotlib.
"""

# Loaded on first use (PEP 562): Hydra imports lab's sweeper plugin, which needs one constant of
# lab.results.trials, at every `lab.run` start; the readers below load only when asked for.
_WHERE = {
    "GroupedTable": "grouped_table", "group_table": "grouped_table", "write_grouped": "grouped_table",
    "Group": "groups", "group_jobs": "groups", "has_replicates": "groups", "mean_std": "groups",
    "figure": "plots", "plot": "plots",
    "Job": "sweep", "ReportError": "sweep", "Sweep": "sweep", "expand_overrides": "sweep", "latest_sweep": "sweep",
    "load_sweep": "sweep",
    "Table": "table", "available_metrics": "table", "best_job": "table", "build_table": "table",
    "format_value": "table", "select_metrics": "table", "write": "table",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'lab.results' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"lab.results.{_WHERE[name]}"), name)
