"""The GPU path's decisions, checked on the CPU: precision per task and device, determinism against
the autotuner, evaluation without the autotuner, the fork-safe device query, compile hooks and the
memory rule for in-memory datasets. (make gpu-check runs the same paths on a real GPU.)"""

from __future__ import annotations

import pytest

from lab.errors import ConfigError
from tests.conftest import compose


@pytest.fixture
def machine(monkeypatch):
    """Pretend the visible CUDA devices have these compute capabilities (none: a CPU machine)."""
    from lab.train import device

    def set_up(*capabilities):
        found = tuple(device.CudaDevice(f"gpu{i}", c, 80 * 2**30) for i, c in enumerate(capabilities))
        monkeypatch.setattr(device, "cuda_devices", lambda: found)
        monkeypatch.setattr(device, "cuda_device_count", lambda: len(found))

    return set_up


def settings(tmp_path, *overrides):
    from lab.build import speed_settings

    return speed_settings(compose(list(overrides), output_dir=tmp_path))


def test_regression_resolves_to_fp32_on_a_gpu_and_classification_to_mixed(tmp_path, machine):
    machine((9, 0))
    assert settings(tmp_path, "experiment=mlp_function")["precision"] == "32-true"
    assert settings(tmp_path, "experiment=cnn_fashionmnist")["precision"] == "bf16-mixed"
    assert settings(tmp_path, "experiment=triplet_fashionmnist")["precision"] == "bf16-mixed"
    # An explicit choice wins over the task's.
    assert settings(tmp_path, "experiment=mlp_function", "trainer.precision=bf16-mixed")["precision"] == "bf16-mixed"
    machine()
    assert settings(tmp_path, "experiment=mlp_function")["precision"] == "32-true"
    assert settings(tmp_path, "experiment=cnn_fashionmnist")["precision"] == "32-true"


def test_trainer_gpu_falls_back_to_fp16_before_ampere_and_refuses_bf16_there(tmp_path, machine):
    machine((7, 0))  # Volta
    assert settings(tmp_path, "trainer=gpu")["precision"] == "16-mixed"
    assert settings(tmp_path, "trainer=ddp")["precision"] == "16-mixed"
    with pytest.raises(ConfigError, match=r"bf16-mixed needs a GPU with bf16.*gpu0 \(sm 7\.0"):
        settings(tmp_path, "trainer=gpu", "trainer.precision=bf16-mixed")
    machine((8, 0))  # Ampere
    assert settings(tmp_path, "trainer=gpu")["precision"] == "bf16-mixed"


def test_deterministic_turns_the_autotuner_off(tmp_path, machine):
    machine((9, 0))
    assert settings(tmp_path)["benchmark"] is True
    det = settings(tmp_path, "trainer.deterministic=true")
    # On CUDA, Lightning's "warn": ops without a deterministic kernel warn instead of stopping the run.
    assert (det["benchmark"], det["deterministic"]) == (False, "warn")
    assert settings(tmp_path, "trainer=gpu", "trainer.deterministic=true")["benchmark"] is False
    with pytest.raises(ConfigError, match="trainer.benchmark=true contradict"):
        settings(tmp_path, "trainer.deterministic=true", "trainer.benchmark=true")
    machine()
    cpu = settings(tmp_path, "trainer.deterministic=true")
    assert (cpu["benchmark"], cpu["deterministic"]) == (False, True)


def test_evaluation_never_uses_the_autotuner(tmp_path, machine):
    import torch

    from lab.build import build_trainer

    machine()
    cfg = compose(["logger=none", "trainer.benchmark=true"], output_dir=tmp_path)
    before = torch.backends.cudnn.benchmark
    try:
        build_trainer(cfg, fitting=False)
        assert torch.backends.cudnn.benchmark is False  # Lightning sets the flag from the Trainer argument
        build_trainer(cfg, fitting=True)
        assert torch.backends.cudnn.benchmark is True
    finally:
        torch.backends.cudnn.benchmark = before


def test_cuda_visible_devices_is_read_like_cuda_does():
    from lab.train.device import CudaDevice, visible

    a, b = CudaDevice("A", (7, 0), 1, "GPU-aaaa"), CudaDevice("B", (9, 0), 2, "GPU-bbbb")
    assert visible([a, b], None) == [a, b]
    assert visible([a, b], "1") == [b]
    assert visible([a, b], "GPU-bb,0") == [b, a]
    assert visible([a, b], "0,7,1") == [a]  # CUDA stops at the first invalid entry
    assert visible([a, b], "") == []


def test_a_task_with_its_own_compile_hook_compiles_itself(tmp_path):
    from lab.build import apply_speed_switches

    class Task:
        compiled = False

        def compile_model(self):
            self.compiled = True

    task = Task()
    apply_speed_switches(task, {"compile": True})
    assert task.compiled
    with pytest.raises(ConfigError, match="trainer.compile=true needs a task with a torch model"):
        apply_speed_switches(object(), {"compile": True})


def test_a_split_moves_to_the_gpu_only_within_half_its_free_memory():
    from lab.train.device import room_for

    gib = 2**30
    assert room_for(15 * gib, 40 * gib)
    assert not room_for(15 * gib, 29 * gib)  # 100k images at 224 px on a GPU with 29 GiB free
    assert room_for(0, 0)


@pytest.mark.parametrize("name", ["cnn", "basecnn", "small_cnn", "resnet", "resnet_cifar", "residual", "bottleneck"])
def test_lab_models_have_deterministic_cuda_backwards(name):
    """torch has no deterministic CUDA backward for these; lab's own models pool with a mean instead."""
    import torch
    from omegaconf import OmegaConf

    from lab.build import instantiate_node
    from lab.config.paths import config_dir

    node = OmegaConf.load(f"{config_dir()}/model/{name}.yaml")  # the group's file (no interpolations)
    model = instantiate_node(node, in_channels=3, num_classes=10, image_size=[32, 32])
    without = (torch.nn.AdaptiveAvgPool2d, torch.nn.AdaptiveAvgPool3d, torch.nn.AdaptiveMaxPool2d,
               torch.nn.MaxUnpool2d, torch.nn.ReflectionPad2d, torch.nn.ReplicationPad2d, torch.nn.Upsample)
    found = [type(m).__name__ for m in model.modules() if isinstance(m, without)]
    assert not found, found
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)


def test_r2_updates_read_nothing_back_from_the_device():
    """On meta tensors any read of a value fails: the update must use shapes and device-side ops only
    (the former `.item()` per batch was a host sync on a GPU)."""
    import torch

    from lab.metrics.r2 import R2Score

    metric = R2Score()
    preds, target = torch.randn(8, 2, device="meta"), torch.randn(8, 2, device="meta")
    metric.update(preds, target)
    metric.update(preds, target)
    assert len(metric.rows) == 2
    with pytest.raises(ValueError, match="3 outputs after 2"):
        metric.update(torch.randn(8, 3, device="meta"), torch.randn(8, 3, device="meta"))
