"""What a run prints: the composed config as a tree, and the final metrics table.

Under DDP only rank 0 prints (the other processes run the same job and would repeat every
line); errors print on every rank, prefixed with the rank when it is not 0."""

from __future__ import annotations

from collections.abc import Mapping

from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table
from rich.tree import Tree

from lab.train.distributed import is_rank_zero, rank_prefix

console = Console(quiet=not is_rank_zero())
_errors = Console()  # errors: every rank

_ORDER = ("data", "model", "task", "optimizer", "scheduler", "trainer", "callbacks", "logger", "paths")


def print_config_tree(cfg: DictConfig, resolve: bool = True) -> None:
    """Print each config group as a branch of YAML, in the order a run uses them."""
    tree = Tree("[bold]config[/bold]", guide_style="dim")
    keys = [k for k in _ORDER if k in cfg] + [k for k in cfg if k not in _ORDER]
    for key in keys:
        value = cfg[key]
        branch = tree.add(f"[bold cyan]{key}[/bold cyan]")
        if isinstance(value, DictConfig):
            text = OmegaConf.to_yaml(value, resolve=resolve).rstrip() or "{}"
        else:
            text = str(value)
        branch.add(Syntax(text, "yaml", theme="ansi_dark", background_color="default"))
    console.print(tree)


def print_results(metrics: Mapping[str, float], run_dir: str) -> None:
    """Final val/test metrics, the run folder and the command that opens TensorBoard."""
    table = Table(title="final metrics", show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in sorted(metrics):
        value = metrics[key]
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)
    console.print(f"[bold]run directory:[/bold] {run_dir}", soft_wrap=True, highlight=False)
    console.print(f"[bold]TensorBoard:[/bold]   tensorboard --logdir {run_dir}", soft_wrap=True, highlight=False)


def print_error(message: str) -> None:
    """`error: <message>`, the message taken literally (a `[train, val]` in it is text, not rich markup)."""
    from rich.markup import escape

    _errors.print(f"{escape(rank_prefix())}[bold red]error:[/bold red] {escape(message)}", highlight=False,
                  soft_wrap=True)
