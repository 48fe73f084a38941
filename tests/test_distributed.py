"""DDP: trainer configs, one folder per job under Hydra, exact metrics with 2 processes,
per-rank shards, and epoch-determined batch order and augmentation (set_epoch).

The shard and set_epoch tests run in this process. Two real `trainer=ddp_cpu` runs (2 gloo
processes each) check the whole path: a training run and an evaluation of its checkpoint;
the 2-job DDP multirun and a torch.compile run are in the slow tier.
"""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path

import pytest
import torch

from tests.conftest import QUICK, compose, run_cli

# Odd val/test sizes (279 each) and an eval batch of 139: with 2 processes the ranks hold 139
# and 140 samples (1 and 2 batches), where padding would count a sample twice.
ODD_SPLITS = ["data.val_fraction=0.155", "data.test_fraction=0.155", "data.eval_batch_size=139"]
SPLIT_SIZE = 279


# --- shards --------------------------------------------------------------------------
@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("n", [0, 1, 7, 270, 279])
def test_eval_shards_cover_every_sample_exactly_once(n, world):
    from lab.train.distributed import eval_shard

    parts = [range(*eval_shard(n, rank, world)) for rank in range(world)]
    assert [i for part in parts for i in part] == list(range(n))  # disjoint, in order, no padding
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def _labels_of(loader) -> list[int]:
    return [int(v) for _, y in loader for v in y]


@pytest.mark.parametrize("world", [1, 2, 3])
def test_eval_loaders_of_all_ranks_see_each_sample_once(world):
    from lab.data.loader import ShardSampler, TensorBatchLoader

    n = SPLIT_SIZE
    images, labels = torch.zeros(n, 1, 2, 2, dtype=torch.uint8), torch.arange(n)
    seen, sampled = [], []
    for rank in range(world):
        seen += _labels_of(TensorBatchLoader(images, labels, 139, rank=rank, world_size=world))
        sampled += list(ShardSampler(n, train=False, rank=rank, world_size=world))
    assert seen == list(range(n)) and sampled == seen


@pytest.mark.parametrize("n, batch, world", [(279, 16, 2), (98, 16, 2), (1257, 64, 3), (10, 4, 1)])
def test_train_loaders_give_every_rank_the_same_batches_count_on_disjoint_samples(n, batch, world):
    from lab.data.loader import ShardSampler, TensorBatchLoader

    images, labels = torch.zeros(n, 1, 2, 2, dtype=torch.uint8), torch.arange(n)
    loaders = [TensorBatchLoader(images, labels, batch, shuffle=True, seed=5, rank=r, world_size=world)
               for r in range(world)]
    assert len({len(loader) for loader in loaders}) == 1
    per_rank = [_labels_of(loader) for loader in loaders]
    assert all(len(list(loader)) == len(loader) for loader in loaders)
    flat = [i for part in per_rank for i in part]
    assert len(flat) == len(set(flat)) and len(flat) >= n - world * batch  # disjoint, at most a remainder left out
    for rank in range(world):  # the DataLoader path's sampler walks the same indices
        sampler = ShardSampler(n, train=True, shuffle=True, seed=5, rank=rank, world_size=world)
        kept = list(sampler)[: len(per_rank[rank])]
        assert kept == per_rank[rank]
    if n == 98:  # 49 per rank with batches of 16: the lone 49th sample is dropped on both ranks
        assert [len(loader) for loader in loaders] == [3, 3]


def test_balanced_batches_are_split_between_ranks():
    from lab.data.balanced import ClassBalancedBatchSampler

    labels = torch.arange(960) % 10
    single = list(ClassBalancedBatchSampler(labels, 40, 8, seed=5))
    ranks = [ClassBalancedBatchSampler(labels, 40, 8, seed=5, rank=r, world_size=2) for r in range(2)]
    assert [len(s) for s in ranks] == [12, 12]
    for rank, sampler in enumerate(ranks):
        assert all(torch.equal(a, b) for a, b in zip(list(sampler), single[rank::2], strict=True))


# --- set_epoch: epoch e is a function of (seed, e) only ----------------------------------
def test_loader_epoch_is_set_not_counted():
    from lab.data.balanced import ClassBalancedBatchSampler
    from lab.data.loader import TensorBatchLoader

    images, labels = torch.zeros(50, 1, 2, 2, dtype=torch.uint8), torch.arange(50) % 5
    for world in (1, 2):
        ran = TensorBatchLoader(images, labels, 8, shuffle=True, seed=1, rank=world - 1, world_size=world)
        epochs = []
        for epoch in range(4):
            ran.sampler.set_epoch(epoch)  # what Lightning calls before every train epoch
            epochs.append([y.tolist() for _, y in ran])
        fresh = TensorBatchLoader(images, labels, 8, shuffle=True, seed=1, rank=world - 1, world_size=world)
        fresh.set_epoch(3)
        assert [y.tolist() for _, y in fresh] == epochs[3] and epochs[3] != epochs[2]

    sampler = ClassBalancedBatchSampler(labels, 10, 2, seed=4)
    epochs = [[b.tolist() for b in sampler] for _ in range(4)]  # counted on by itself
    fresh = ClassBalancedBatchSampler(labels, 10, 2, seed=4)
    fresh.sampler.set_epoch(3)
    assert [b.tolist() for b in fresh] == epochs[3] and epochs[3] != epochs[2]


@pytest.mark.parametrize("fast_path", [True, False])
def test_datamodule_epoch_batches_and_augmentation_depend_on_the_epoch_only(fast_path):
    from lab.data.digits import DigitsDataModule

    def make():
        dm = DigitsDataModule(augment={"crop_padding": 2, "hflip": True, "cutout": 3}, fast_path=fast_path,
                              num_workers=0, seed=7)
        dm.setup("fit")
        return dm, dm.train_dataloader()

    def epoch_batches(dm, loader):
        if not fast_path:  # per-image torchvision transforms: the order is what set_epoch fixes
            return [y for _, y in loader]
        return [torch.cat([dm.batch_transform(True)(x).flatten(1), y[:, None].float()], 1) for x, y in loader]

    dm, loader = make()
    epochs = []
    for epoch in range(4):
        loader.sampler.set_epoch(epoch)  # Lightning's call
        epochs.append(epoch_batches(dm, loader))
    dm2, loader2 = make()
    dm2.set_epoch(3)  # the public call (resume)
    again = epoch_batches(dm2, loader2)
    assert len(again) == len(epochs[3]) and all(torch.equal(a, b) for a, b in zip(again, epochs[3]))
    assert not torch.equal(epochs[2][0], epochs[3][0])


def test_lightning_sets_the_train_epoch(tmp_path):
    import lightning as L

    from lab.build import build_parts

    parts = build_parts(compose(["data.augment.hflip=true"], output_dir=tmp_path))
    dm, seen = parts.datamodule, []
    original = dm._set_transform_epoch
    dm._set_transform_epoch = lambda epoch: (seen.append(epoch), original(epoch))
    trainer = L.Trainer(max_epochs=3, limit_train_batches=1, limit_val_batches=0, logger=False, accelerator="cpu",
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path)
    trainer.fit(parts.task, datamodule=dm)
    assert seen[-3:] == [0, 1, 2] and dm.epoch == 2  # through the train loader's .sampler, before each epoch


def test_both_data_paths_train_on_the_same_order():
    from lab.data.digits import DigitsDataModule

    orders = []
    for fast_path in (True, False):
        dm = DigitsDataModule(fast_path=fast_path, num_workers=0, seed=3)
        dm.setup("fit")
        dm.set_epoch(2)
        orders.append(torch.cat([y for _, y in dm.train_dataloader()]).tolist())
    assert orders[0] == orders[1]


def test_batch_transform_epochs_and_ranks_draw_their_own_streams():
    from lab.data.augment import BatchTransform

    x = torch.arange(4 * 64, dtype=torch.float32).view(4, 1, 8, 8).to(torch.uint8)
    t = BatchTransform([0.5], [0.25], train=True, crop_padding=2, hflip=True, seed=3)
    first = t(x)
    t.set_epoch(0)
    assert torch.equal(t(x), first)  # epoch 0 of rank 0 is a fresh transform's stream
    t.set_epoch(0, rank=1)
    assert not torch.equal(t(x), first)


# --- the launcher: one folder per job ---------------------------------------------------
def test_rank_zero_is_read_from_the_launch_environment(monkeypatch):
    from lab.train.distributed import is_rank_zero

    for key in ("LOCAL_RANK", "RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert is_rank_zero()
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("RANK", "0")
    assert is_rank_zero()
    for key in ("LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"):
        monkeypatch.setenv(key, "1")
        assert not is_rank_zero(), key
        monkeypatch.setenv(key, "0")


def test_child_command_reruns_this_job_into_its_folder(tmp_path, monkeypatch):
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from lab.train import ddp_launch

    job_dir = tmp_path / "multiruns" / "sweep, with odd=chars" / "1"
    cfg = compose(["trainer=ddp_cpu", "optimizer.lr=0.01", "hydra.job.name=run", "hydra.job.chdir=false"])
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(job_dir)
        cfg.hydra.runtime.cwd = str(tmp_path)
    HydraConfig.instance().set_config(cfg)
    # A job run by a launcher's own process (no lab module as __main__): the entry comes from the config name.
    monkeypatch.setitem(sys.modules, "__main__", types.SimpleNamespace(__spec__=None))
    command, cwd = ddp_launch.child_command(1)
    assert command[:3] == [sys.executable, "-m", "lab.run"] and cwd == str(tmp_path)
    assert "-m" not in command[3:] and "--multirun" not in command
    assert command[3:6] == ["hydra.job.chdir=false", "trainer=ddp_cpu", "optimizer.lr=0.01"]
    assert f"hydra.run.dir='{job_dir}'" in command and "hydra.output_subdir=null" in command
    assert "hydra.job.name=run_rank1" in command and command.count("hydra.job.name=run_rank1") == 1

    # lab.eval / lab.predict: the user's whole command line, minus what the child sets itself.
    ddp_launch.set_child_args(["ckpt_path=a=b.ckpt", "-m", "trainer=ddp_cpu", "hydra.run.dir=x"])
    try:
        command, _ = ddp_launch.child_command(1)
    finally:
        ddp_launch.set_child_args(None)
    assert command[3:5] == ["ckpt_path=a=b.ckpt", "trainer=ddp_cpu"] and "hydra.run.dir=x" not in command

    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides([c for c in command if c.startswith("hydra.run.dir=")])
    assert parsed[0].value() == str(job_dir)  # Hydra reads the folder back verbatim


def test_a_later_multirun_job_starts_its_own_processes(monkeypatch):
    from lab.train import distributed

    keys = ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    monkeypatch.setattr(distributed, "_ENV_AT_START", dict.fromkeys(keys))
    for key, value in zip(keys, ("0", "0", "2", "127.0.0.1", "12910")):
        monkeypatch.setenv(key, value)
    distributed.reset_after_previous_job()  # what the previous job's launcher set is gone
    assert not any(key in os.environ for key in keys)

    monkeypatch.setattr(distributed, "_ENV_AT_START", {**dict.fromkeys(keys), "LOCAL_RANK": "0"})
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "8")
    distributed.reset_after_previous_job()  # started by torchrun/SLURM: theirs, left alone
    assert os.environ["WORLD_SIZE"] == "8"


# --- trainer configs -----------------------------------------------------------------
def test_trainer_configs(tmp_path):
    from lightning.fabric.strategies.launchers import subprocess_script
    from lightning.pytorch.strategies import DDPStrategy

    from lab.build import build_trainer
    from lab.train import ddp_launch

    # The GPU trainers decide precision, autotuner and layout from the device and the task
    # (tests/test_gpu_ready.py checks what `auto` becomes).
    gpu = compose(["trainer=gpu", "trainer.max_epochs=5"], output_dir=tmp_path).trainer
    assert (gpu.accelerator, gpu.precision, gpu.benchmark, gpu.channels_last, gpu.max_epochs) == (
        "gpu", "auto", "auto", "auto", 5)
    ddp = compose(["trainer=ddp", "trainer.num_nodes=2"], output_dir=tmp_path).trainer
    assert (ddp.strategy, ddp.devices, ddp.num_nodes, ddp.precision) == ("ddp", "auto", 2, "auto")

    cfg = compose(["trainer=ddp_cpu", "logger=none"], output_dir=tmp_path)
    trainer = build_trainer(cfg)
    assert isinstance(trainer.strategy, DDPStrategy) and trainer.world_size == 2
    assert trainer.strategy._get_process_group_backend() == "gloo"
    assert trainer._accelerator_connector.use_distributed_sampler is False  # lab's loaders shard themselves
    assert subprocess_script._hydra_subprocess_cmd is ddp_launch.child_command


def test_the_one_private_lightning_name_is_checked_and_fails_loudly(monkeypatch, tmp_path):
    """lab.train.ddp_launch is the only place lab touches a private Lightning name: it is there in
    the locked Lightning, a release without it fails with one line, and a one-process Trainer
    leaves Lightning's function in place."""
    from lab.build import build_trainer
    from lab.errors import ConfigError
    from lab.train import ddp_launch

    modules = ddp_launch.check()
    assert [m.__name__ for m in modules] == list(ddp_launch.LAUNCHER_MODULES)
    originals = {m.__name__: vars(m)[ddp_launch.PRIVATE_NAME] for m in modules}
    try:
        def lightnings(local_rank):  # stands for Lightning's own function
            return None

        for module in modules:
            setattr(module, ddp_launch.PRIVATE_NAME, lightnings)
        build_trainer(compose(["trainer.max_epochs=1", "logger=none"], output_dir=tmp_path))
        assert all(vars(m)[ddp_launch.PRIVATE_NAME] is lightnings for m in modules)  # one process: untouched
        for module in modules:
            with monkeypatch.context() as patch:
                patch.delattr(module, ddp_launch.PRIVATE_NAME)
                with pytest.raises(ConfigError, match=f"{module.__name__}._hydra_subprocess_cmd.*make install"):
                    ddp_launch.check()
            with monkeypatch.context() as patch:
                patch.setattr(module, ddp_launch.PRIVATE_NAME, lambda rank: None)  # renamed argument
                with pytest.raises(ConfigError, match="changed"):
                    ddp_launch.check()
    finally:
        for module in modules:
            setattr(module, ddp_launch.PRIVATE_NAME, originals[module.__name__])


def test_the_gpu_path_is_the_default_on_a_cuda_device(tmp_path, monkeypatch):
    from lab.build import build_parts, build_trainer, resolve_speed_defaults
    from lab.train import device

    def machine(*capabilities):
        found = tuple(device.CudaDevice(f"gpu{i}", c, 2**34) for i, c in enumerate(capabilities))
        monkeypatch.setattr(device, "cuda_devices", lambda: found)
        monkeypatch.setattr(device, "cuda_device_count", lambda: len(found))

    default = compose([], output_dir=tmp_path).trainer
    assert (default.precision, default.benchmark, default.channels_last) == ("auto", "auto", "auto")
    machine()
    cpu = resolve_speed_defaults(default)
    assert (cpu["precision"], cpu["benchmark"], cpu["channels_last"]) == ("32-true", False, False)
    machine((9, 0))  # Hopper: bf16
    cuda = resolve_speed_defaults(default)
    assert (cuda["precision"], cuda["benchmark"], cuda["channels_last"]) == ("bf16-mixed", True, True)
    machine((9, 0), (7, 0))  # a Volta among them: no bf16
    assert resolve_speed_defaults(default)["precision"] == "16-mixed"
    # An explicit CPU trainer stays fp32 whatever the machine has; explicit values are kept.
    on_cpu = resolve_speed_defaults(compose(["trainer=cpu"], output_dir=tmp_path).trainer)
    assert (on_cpu["precision"], on_cpu["benchmark"], on_cpu["channels_last"]) == ("32-true", False, False)
    assert resolve_speed_defaults({"accelerator": "auto", "precision": "16-mixed"})["precision"] == "16-mixed"
    machine()
    cfg = compose(["logger=none"], output_dir=tmp_path)
    assert build_trainer(cfg).precision == "32-true"
    assert not build_parts(cfg).task.channels_last


def test_speed_switches_keep_checkpoints_compatible(tmp_path):
    from lab.build import build_parts

    plain = build_parts(compose([], output_dir=tmp_path))
    parts = build_parts(compose(["trainer.compile=true", "trainer.channels_last=true"], output_dir=tmp_path))
    assert parts.task.channels_last and not plain.task.channels_last
    assert getattr(parts.model, "_compiled_call_impl", None) is not None  # compiled lazily, at the first batch
    assert list(parts.task.state_dict()) == list(plain.task.state_dict())  # no _orig_mod. prefixes


@pytest.mark.slow
def test_compiled_model_trains(tmp_path):
    from tests.conftest import run_in_process

    metrics = run_in_process(["trainer.compile=true", "trainer.max_epochs=1", "trainer.limit_train_batches=3",
                              "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "logger=none"],
                             tmp_path / "run")
    assert 0.0 <= metrics["test/top1"] <= 1.0


# --- two real processes ----------------------------------------------------------------
def _confusion_total(path: Path) -> int:
    rows = path.read_text().splitlines()[1:]
    return sum(int(v) for row in rows for v in row.split(",")[1:])


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """`python -m lab.run trainer=ddp_cpu`, the run folder named by Hydra (LAB_OUTPUT_DIR)."""
    base = tmp_path_factory.mktemp("ddp")
    env = {"LAB_OUTPUT_DIR": str(base / "outputs")}
    # Every val/test batch (no limit_*_batches): the comparisons below are over the whole splits.
    result = run_cli(["trainer=ddp_cpu", "trainer.max_epochs=2", "trainer.limit_train_batches=4", *ODD_SPLITS,
                      "trainer.num_sanity_val_steps=0", "seed=5"], cwd=base, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return {"base": base, "env": env, "result": result}


def test_ddp_run_leaves_one_folder(ddp_run):
    outputs = ddp_run["base"] / "outputs"
    assert [p.name for p in outputs.iterdir()] == ["runs"]
    runs = list((outputs / "runs").iterdir())
    assert len(runs) == 1, runs
    run = runs[0]
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"test/top1", "test/loss", "val/top1", "best_epoch"} <= set(metrics)
    assert (run / ".hydra" / "config.yaml").is_file() and (run / "run_rank1.log").is_file()
    # The confusion counts of both processes are summed, each sample once.
    assert _confusion_total(run / "confusion_test.csv") == SPLIT_SIZE
    assert _confusion_total(run / "confusion_val.csv") == SPLIT_SIZE
    lines = ddp_run["result"].stdout.splitlines()
    assert lines.count("config") == 1 and sum("final metrics" in line for line in lines) == 1  # rank 0 prints


@pytest.mark.slow  # the default tier is at its 5-minute budget (make test-all runs it)
def test_ddp_eval_gives_the_single_process_metrics(ddp_run, tmp_path):
    from lab.train.evaluate import evaluate
    from lab.train.from_checkpoint import prepare
    from tests.test_predict_eval import run_module

    run = next((ddp_run["base"] / "outputs" / "runs").iterdir())
    best = next((run / "checkpoints").glob("epoch*.ckpt"))
    result = run_module("lab.eval", [f"ckpt_path={best}", "trainer=ddp_cpu"], ddp_run["base"], ddp_run["env"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    evals = list((ddp_run["base"] / "outputs" / "evals").iterdir())
    assert len(evals) == 1, evals
    two = json.loads((evals[0] / "metrics.json").read_text())
    assert _confusion_total(evals[0] / "confusion_test.csv") == SPLIT_SIZE

    # One process, in this process: the same checkpoint, the cpu trainer.
    job = prepare([f"ckpt_path={best}", "trainer=cpu", f"paths.output_dir={tmp_path}"], ["splits", "name"], "lab.eval")
    one = evaluate(job, tmp_path)
    trained = json.loads((run / "metrics.json").read_text())  # the run's own test, also on 2 processes
    for key in ("test/top1", "test/top5", "test/loss"):
        assert abs(two[key] - one[key]) <= 1e-6, (key, two[key], one[key])
        assert abs(trained[key] - one[key]) <= 1e-6, (key, trained[key], one[key])


@pytest.mark.slow
def test_ddp_multirun_leaves_one_folder_per_job(tmp_path):
    env = {"LAB_OUTPUT_DIR": str(tmp_path / "outputs")}
    result = run_cli(["-m", "trainer=ddp_cpu", "optimizer.lr=0.1,0.01", *QUICK, "logger=csv"], cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert [p.name for p in (tmp_path / "outputs").iterdir()] == ["multiruns"]
    sweeps = list((tmp_path / "outputs" / "multiruns").iterdir())
    assert len(sweeps) == 1
    jobs = sorted(p.name for p in sweeps[0].iterdir() if p.is_dir())
    assert jobs == ["0", "1"]
    for job, lr in zip(jobs, ("0.1", "0.01")):
        folder = sweeps[0] / job
        assert (folder / "metrics.json").is_file()
        assert f"optimizer.lr={lr}" in (folder / ".hydra" / "overrides.yaml").read_text()
