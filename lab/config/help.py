"""`python -m lab.run --help`: usage, config groups and their options, read straight
from the conf folder (Hydra's own help composes every group and takes over a second)."""

from __future__ import annotations

from pathlib import Path

USAGE = """\
lab.run: train a model from the composed config, then test its best checkpoint.

Usage:
  python -m lab.run                                   the default: small CNN on digits
  python -m lab.run experiment=cnn_fashionmnist data.root=/usr/share/datasets/fashion-mnist
  python -m lab.run optimizer=sgd optimizer.lr=0.05 trainer.max_epochs=10
  python -m lab.run -m optimizer.lr=0.1,0.01 model.dropout=0,0.2    a sweep (4 jobs)
  python -m lab.run -m sweep=lr                        a sweep defined in conf/sweep/
  python -m lab.run debug=fast_dev_run                 one batch of everything, nothing saved
  python -m lab.run --cfg job                          print the composed config and exit
  python -m lab.run resume=outputs/runs/<run>          continue an interrupted run from last.ckpt
  python -m lab.run -m <sweep args> resume_sweep=<dir> rerun a sweep, skipping finished jobs
  python -m lab.run trainer=ddp_cpu                    2 processes (trainer=gpu, trainer=ddp on GPUs)
  eval "$(python -m lab.run --shell-completion install=bash)"   tab completion

Other entry points (each has --help): python -m lab.eval ckpt_path=<ckpt>, python -m lab.predict
ckpt_path=<ckpt>, python -m lab.retrieve index|query|evaluate, python -m lab.report <sweep dir>.

Outputs go to outputs/runs/<time>_<name>/ (a sweep: outputs/multiruns/<time>_<name>/<job>/):
config.yaml, metrics.json, checkpoints/, TensorBoard events. `make tensorboard` serves outputs/.
Hydra's own flags: --hydra-help.
"""


def _first_comment(path: Path) -> str:
    for line in path.read_text().splitlines():
        text = line.strip()
        if text.startswith("#") and not text.startswith("# @package"):
            return text.lstrip("# ").strip()
        if text and not text.startswith("#"):
            break
    return ""


def help_text(conf: str) -> str:
    root = Path(conf)
    lines = [USAGE, "Config groups (group=option); the default is marked *:"]
    defaults = _defaults(root / "config.yaml")
    for group in sorted(p for p in root.iterdir() if p.is_dir() and p.name != "hydra"):
        options = sorted(f.stem for f in group.glob("*.yaml"))
        marked = [f"{o}*" if defaults.get(group.name) == o else o for o in options]
        lines.append(f"  {group.name:<11} {', '.join(marked)}")
    for group in ("experiment", "sweep"):
        files = sorted((root / group).glob("*.yaml"))
        if files:
            lines.append(f"\n{group.capitalize()}s:")
            lines += [f"  {f.stem:<28} {_first_comment(f)}" for f in files]
    return "\n".join(lines) + "\n"


def _defaults(config: Path) -> dict[str, str]:
    """group -> default option, read from the defaults list without composing."""
    chosen: dict[str, str] = {}
    for line in config.read_text().splitlines():
        text = line.strip()
        if text.startswith("- ") and ":" in text:
            group, option = text[2:].split(":", 1)
            chosen[group.replace("optional ", "").strip()] = option.strip()
    return chosen
