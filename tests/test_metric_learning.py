"""Metric learning: the triplet loss and retrieval metrics against brute force, the
class-balanced sampler, the two stages, and the feature pictures of a real run."""

from __future__ import annotations

import json
from functools import partial

import pytest
import torch

from lab.data.balanced import ClassBalancedBatchSampler
from lab.errors import ConfigError
from lab.metrics.retrieval import retrieval_metrics
from lab.tasks.metric_learning import batch_hard_triplet_loss
from tests.conftest import run_in_process


def _dist(x, a, b, distance):
    if distance == "cosine":
        return 1 - torch.nn.functional.cosine_similarity(x[a], x[b], dim=0).item()
    return (x[a] - x[b]).norm().item()


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
def test_batch_hard_triplet_loss_matches_brute_force(distance):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(16, 5, generator=gen, requires_grad=True)
    y = torch.tensor([0, 0, 0, 1, 1, 1, 1, 2, 2, 3, 3, 3, 4, 5, 5, 5])  # class 4 has no positive
    margin = 0.3
    loss, active = batch_hard_triplet_loss(x, y, margin, distance)
    per_anchor = []
    for a in range(len(y)):
        pos = [p for p in range(len(y)) if p != a and y[p] == y[a]]
        neg = [n for n in range(len(y)) if y[n] != y[a]]
        if pos and neg:
            hardest = max(_dist(x, a, p, distance) for p in pos) - min(_dist(x, a, n, distance) for n in neg)
            per_anchor.append(max(0.0, hardest + margin))
    assert loss.item() == pytest.approx(sum(per_anchor) / len(per_anchor), rel=1e-5)
    assert active.item() == pytest.approx(sum(v > 0 for v in per_anchor) / len(per_anchor))
    loss.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_euclidean_loss_has_finite_gradients_for_identical_embeddings():
    x = torch.ones(6, 3, requires_grad=True)
    loss, _ = batch_hard_triplet_loss(x, torch.tensor([0, 0, 1, 1, 2, 2]), 1.0, "euclidean")
    loss.backward()
    assert loss.item() == pytest.approx(1.0) and torch.isfinite(x.grad).all()


def _brute_force_retrieval(q, qy, r, ry, ks, exclude_self):
    d = torch.cdist(q, r)
    if exclude_self:
        d.fill_diagonal_(float("inf"))
    n_ref = len(r) - int(exclude_self)
    out = {"precision_at_1": 0.0, **{f"recall_at_{k}": 0.0 for k in ks}, "map_at_r": 0.0}
    for i in range(len(q)):
        rel = (ry[d[i].argsort()[:n_ref]] == qy[i]).tolist()
        big_r = sum(rel)
        out["precision_at_1"] += rel[0]
        for k in ks:
            out[f"recall_at_{k}"] += any(rel[:k])
        hits, ap = 0, 0.0
        for j in range(big_r):
            if rel[j]:
                hits += 1
                ap += hits / (j + 1)
        out["map_at_r"] += ap / big_r
    return {k: v / len(q) for k, v in out.items()}


@pytest.mark.parametrize("separate_refs", [False, True])
def test_retrieval_metrics_match_brute_force(separate_refs):
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(50, 4, generator=gen)
    qy = torch.arange(50) % 5
    r, ry = (torch.randn(70, 4, generator=gen), torch.arange(70) % 5) if separate_refs else (q, qy)
    ks = (1, 3, 10)
    expected = _brute_force_retrieval(q, qy, r, ry, ks, exclude_self=not separate_refs)
    got = retrieval_metrics(q, qy, *((r, ry) if separate_refs else ()), ks=ks, distance="euclidean", chunk=7)
    assert got == pytest.approx(expected, abs=1e-6)


def test_retrieval_metrics_are_perfect_on_separated_clusters():
    centres = torch.eye(3) * 10
    labels = torch.arange(30) % 3
    feats = centres[labels] + 0.01 * torch.randn(30, 3, generator=torch.Generator().manual_seed(1))
    assert retrieval_metrics(feats, labels, distance="cosine")["map_at_r"] == pytest.approx(1.0)


def test_balanced_sampler_gives_p_classes_of_k_and_covers_the_epoch():
    labels = torch.arange(960) % 10  # 96 images = 12 groups of 8 per class
    sampler = ClassBalancedBatchSampler(labels, batch_size=40, samples_per_class=8, seed=5)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 24
    for batch in batches:
        counts = torch.bincount(labels[batch], minlength=10)
        assert sorted(counts[counts > 0].tolist()) == [8] * 5
    assert len(torch.unique(torch.cat(batches))) == 960  # every image once
    again = ClassBalancedBatchSampler(labels, batch_size=40, samples_per_class=8, seed=5)
    assert all(torch.equal(a, b) for a, b in zip(batches, again))
    assert not torch.equal(torch.cat(batches), torch.cat(list(sampler)))  # the next epoch is reshuffled


@pytest.mark.parametrize("kwargs, message", [
    ({"batch_size": 30, "samples_per_class": 8}, "must be a multiple of data.samples_per_class=8"),
    ({"batch_size": 120, "samples_per_class": 8}, "asks for 15 classes per batch but the training split has 10"),
    ({"batch_size": 8, "samples_per_class": 8}, "needs at least 2"),
    ({"batch_size": 8, "samples_per_class": 1}, "must be >= 2"),
])
def test_balanced_sampler_refuses_impossible_batches(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ClassBalancedBatchSampler(torch.arange(100) % 10, **kwargs)


def test_stage_two_freezes_the_features_and_trains_only_the_classifier(tmp_path):
    import lightning as L

    from lab.data.digits import DigitsDataModule
    from lab.models.small_cnn import SmallCNN
    from lab.tasks.metric_learning import MetricLearningTask

    dm = DigitsDataModule(batch_size=32, samples_per_class=4)
    dm.setup("fit")
    model = SmallCNN(**dm.model_inputs(), channels=[8], hidden=16)
    task = MetricLearningTask(model=model, optimizer=partial(torch.optim.AdamW, lr=1e-2), stage1_epochs=1,
                              **dm.task_inputs())
    snapshots = {}

    class Snapshot(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            snapshots[trainer.current_epoch] = {k: v.clone() for k, v in pl_module.model.state_dict().items()}

    trainer = L.Trainer(max_epochs=2, limit_train_batches=5, limit_val_batches=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, callbacks=[Snapshot()],
                        default_root_dir=tmp_path)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    trainer.fit(task, datamodule=dm)
    head = task.classifier_name
    changed = {k for k in initial if not torch.equal(initial[k], snapshots[0][k])}
    assert changed and not any(k.startswith(head + ".") for k in changed)  # stage 1: features only
    changed = {k for k in initial if not torch.equal(snapshots[0][k], snapshots[1][k])}
    assert changed == {f"{head}.weight", f"{head}.bias"}  # stage 2: classifier only, BatchNorm stats kept
    assert trainer.callback_metrics["train/stage"].item() == 2


def test_stage1_must_leave_room_for_stage2(tmp_path):
    with pytest.raises(ConfigError, match="stage1_epochs=3 leaves no epoch for stage 2 within trainer.max_epochs=3"):
        run_in_process(["task=metric_learning", "data.samples_per_class=8", "trainer.max_epochs=3"], tmp_path)


def test_unknown_distance_and_viz_class_are_named(tmp_path):
    from hydra.errors import InstantiationException

    with pytest.raises(InstantiationException, match="task.distance must be one of cosine, euclidean, got 'manhattan'"):
        run_in_process(["task=metric_learning", "task.distance=manhattan"], tmp_path / "a")
    with pytest.raises(ConfigError, match=r"viz.classes: unknown \['Sneaker'\]; use class names \(0, 1"):
        run_in_process(["viz.classes=[1,Sneaker]", "trainer.max_epochs=1"], tmp_path / "b")


def test_two_stage_run_logs_retrieval_metrics_and_feature_pictures(tmp_path):
    from PIL import Image

    overrides = ["task=metric_learning", "data.samples_per_class=8", "trainer.max_epochs=3", "task.stage1_epochs=2",
                 "viz.classes=[0,1,7]", "viz.max_per_class=30", "viz.confusion_train=true"]
    metrics = run_in_process(overrides, tmp_path)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    for split in ("val", "test"):
        for key in ("precision_at_1", "recall_at_1", "recall_at_5", "recall_at_10", "map_at_r", "top1"):
            assert 0.0 <= saved[f"{split}/{key}"] <= 1.0
        assert saved[f"{split}/precision_at_1"] == pytest.approx(saved[f"{split}/recall_at_1"])
        assert saved[f"{split}/recall_at_10"] >= saved[f"{split}/recall_at_5"] >= saved[f"{split}/recall_at_1"]
    assert saved["test/precision_at_1"] > 0.8  # digits features separate well after two epochs
    assert saved["epochs"] == 3 and metrics["train/stage"] == 2
    for name in ("pca_train", "pca_test", "tsne_train", "tsne_test"):
        image = Image.open(tmp_path / "features" / f"{name}.png")
        assert image.size[0] > 300
        rows = (tmp_path / "features" / f"{name}.csv").read_text().splitlines()
        assert {r.split(",")[2] for r in rows[1:]} == {"0", "1", "7"}
        assert len(rows) == 1 + 90 if name.endswith("train") else len(rows) > 1
    train_rows = (tmp_path / "confusion_train.csv").read_text().splitlines()
    assert sum(int(v) for row in train_rows[1:] for v in row.split(",")[1:]) == 1257  # the whole training split

    from tests.test_run import event_data

    acc = event_data(tmp_path)
    scalars = set(acc.Tags()["scalars"])
    assert {"train/triplet_loss", "train/ce_loss", "train/stage", "val/map_at_r", "test/precision_at_1"} <= scalars
    images = set(acc.Tags()["images"])
    assert {"features/pca_train", "features/tsne_test", "train/confusion_matrix"} <= images
    projector = (tmp_path / "projector_config.pbtxt").read_text()
    assert "features_train" in projector and "features_test" in projector and "sprite" in projector


@pytest.mark.parametrize("labels", [[0, 1, 2, 3], [2, 2, 2, 2]], ids=["no positives", "no negatives"])
def test_batch_without_triplets_gives_a_zero_loss_that_still_backpropagates(labels):
    x = torch.randn(4, 3, requires_grad=True)
    loss, active = batch_hard_triplet_loss(x, torch.tensor(labels), 0.2, "euclidean")
    loss.backward()
    assert loss.item() == 0.0 and active.item() == 0.0 and loss.grad_fn is not None
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_compiled_two_stage_fit_logs_retrieval_metrics(tmp_path):
    """compile_model (what trainer.compile=true calls): both stages and validation run through the
    compiled features() (training and no-grad evaluation each compile their own graph)."""
    import lightning as L
    from torch._dynamo.utils import counters

    from lab.data.digits import DigitsDataModule
    from lab.models.small_cnn import SmallCNN
    from lab.tasks.metric_learning import MetricLearningTask

    dm = DigitsDataModule(batch_size=32, samples_per_class=4)
    dm.setup("fit")
    model = SmallCNN(**dm.model_inputs(), channels=[8], hidden=16)
    task = MetricLearningTask(model=model, optimizer=partial(torch.optim.AdamW, lr=1e-2), stage1_epochs=1,
                              **dm.task_inputs())
    torch._dynamo.reset()
    counters.clear()
    try:
        task.compile_model(backend="eager")
        trainer = L.Trainer(max_epochs=2, limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=0,
                            logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, default_root_dir=tmp_path)
        trainer.fit(task, datamodule=dm)
        assert counters["stats"]["unique_graphs"] >= 2  # training and no-grad evaluation at least
    finally:
        torch._dynamo.reset()
    assert 0.0 <= trainer.callback_metrics["val/map_at_r"].item() <= 1.0
    assert trainer.callback_metrics["train/stage"].item() == 2
