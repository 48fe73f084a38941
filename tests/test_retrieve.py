"""python -m lab.retrieve: index, query and evaluate an image folder; the index format; exact search.

A real torchvision ResNet-50 (random weights, saved as a state dict) encodes 3 classes x 6
PNGs at 64 px; ImageNet weights are faked in a temporary TORCH_HOME. Nothing reaches the
network.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lab.metrics.retrieval import retrieval_metrics
from lab.retrieval.cli import main
from lab.retrieval.index import FEATURES, META, load_index
from lab.retrieval.scoring import metrics_excluding_self
from lab.retrieval.search import normalize, search

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ("red_stripes", "green_checks", "blue_rings")
SIZE = ["--image-size", "64"]
RESNET50_FILE = "resnet50-0676ba61.pth"


def _pattern(c: int, i: int, rng: np.random.Generator) -> np.ndarray:
    """Class c: its own colour and pattern; image i: its own phase and noise."""
    y, x = np.mgrid[0:32, 0:32]
    if c == 0:
        mask = ((y + i) // 3) % 2 == 0
        colour = (220, 40, 40)
    elif c == 1:
        mask = (((x + i) // 4) + (y // 4)) % 2 == 0
        colour = (40, 200, 60)
    else:
        mask = (np.hypot(x - 16 - i % 3, y - 16) // 3) % 2 == 0
        colour = (40, 60, 220)
    image = np.where(mask[..., None], np.array(colour), 255 - np.array(colour)).astype(np.int16)
    image += rng.integers(-15, 16, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def make_gallery(root: Path, per_class: int = 6, seed: int = 0, loose: bool = True) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(_pattern(c, i + 10 * seed, rng)).save(root / name / f"{name}_{seed}_{i}.png")
    if loose:  # no class folder: no label
        Image.fromarray(_pattern(0, 99, rng)).convert("L").save(root / "loose.png")
    return root


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A gallery, a random-init ResNet-50 state dict, and the index built through the real CLI."""
    import torchvision

    base = tmp_path_factory.mktemp("retrieve")
    gallery = make_gallery(base / "gallery")
    torch.manual_seed(0)
    weights = base / "resnet50_random.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), weights)
    index = base / "gallery.index"
    run = cli(["index", "--images", str(gallery), "--out", str(index), "--weights", str(weights), *SIZE], base)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "indexed 19 images (3 classes, 1 unlabelled)" in run.stdout
    return {"base": base, "gallery": gallery, "weights": weights, "index": index}


def cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200", "TORCH_HOME": str(cwd / "no_torch_home")}
    return subprocess.run([sys.executable, "-m", "lab.retrieve", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def run_main(args: list[str], capsys) -> tuple[int, str]:
    try:
        code = main(args)
    except SystemExit as stop:  # argparse
        code = stop.code
    out = capsys.readouterr()
    return code, out.out + out.err


# ---------------------------------------------------------------------------------------------
# the acceptance path
# ---------------------------------------------------------------------------------------------


def test_index_then_query_returns_the_query_first_with_a_contact_sheet(world):
    query = world["gallery"] / "green_checks" / "green_checks_0_3.png"
    run = cli(["query", "--index", str(world["index"]), str(query), "-k", "5"], world["base"])
    assert run.returncode == 0, run.stdout + run.stderr
    rows = [line for line in run.stdout.splitlines() if line.startswith("│")]
    assert len(rows) == 5
    first = [cell.strip() for cell in rows[0].strip("│").split("│")]
    assert first[0] == "1*" and float(first[1]) < 1e-2 and "* the query image itself" in run.stdout
    assert first[2] == "green_checks/green_checks_0_3.png" and first[3] == "green_checks"
    distances = [float(row.strip("│").split("│")[1]) for row in rows]
    assert distances == sorted(distances) and distances[1] > distances[0]
    sheet = world["base"] / "gallery.index-green_checks_0_3.png"
    assert f"contact sheet: {sheet}" in run.stdout
    from PIL import Image

    with Image.open(sheet) as img:
        assert img.format == "PNG" and img.width > 6 * 160 and img.height > 160


def test_index_folder_holds_features_paths_labels_and_backbone(world):
    index = load_index(world["index"])
    meta = index.meta
    assert index.features.shape == (19, 2048) and index.features.dtype == np.float32
    assert np.allclose(np.linalg.norm(index.features, axis=1), 1.0, atol=1e-5)
    assert meta["root"] == str(world["gallery"].resolve()) and meta["class_names"] == sorted(CLASSES)
    assert meta["labels"][meta["paths"].index("loose.png")] == -1
    assert meta["paths"][0] == "blue_rings/blue_rings_0_0.png" and meta["labels"][0] == 0
    assert meta["backbone"]["arch"] == "resnet50" and meta["backbone"]["weights_file"] == str(world["weights"])
    assert meta["image_size"] == [64, 64] and meta["feature_dim"] == 2048 and meta["created"]
    assert sorted(p.name for p in world["index"].iterdir()) == [FEATURES, META]


def test_index_loads_without_unpickling(world, monkeypatch):
    import pickle

    def refuse(*args, **kwargs):
        raise AssertionError("the index must load without pickle")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    index = load_index(world["index"])
    assert index.features.shape == (19, 2048)
    with open(world["index"] / FEATURES, "rb") as f:  # a plain .npy header: float32, no object dtype
        assert f.read(6) == b"\x93NUMPY" and b"<f4" in f.read(120)


def test_evaluate_prints_recall_and_map_equal_to_lab_metrics(world, capsys, tmp_path):
    """A separate labelled query folder: the printed figures are retrieval_metrics on the same features."""
    queries = make_gallery(tmp_path / "queries", per_class=2, seed=1, loose=False)
    out = tmp_path / "metrics.json"
    code, text = run_main(["evaluate", "--index", str(world["index"]), "--queries", str(queries), "--json", str(out)],
                          capsys)
    assert code == 0, text
    table = text
    for name in ("Recall@1", "Recall@5", "Recall@10", "precision@1", "MAP@R"):
        assert name in table
    printed = json.loads(out.read_text())
    # The query features, from an index of the query folder with the same backbone.
    code, text = run_main(["index", "--images", str(queries), "--out", str(tmp_path / "q.index"),
                           "--weights", str(world["weights"]), *SIZE], capsys)
    assert code == 0, text
    q, g = load_index(tmp_path / "q.index"), load_index(world["index"])
    gallery_labels = torch.tensor([label if label >= 0 else 3 for label in g.labels])  # unlabelled: relevant to none
    expected = retrieval_metrics(torch.from_numpy(q.features), torch.tensor(q.labels), torch.from_numpy(g.features),
                                 gallery_labels, ks=(1, 5, 10))
    for key, value in expected.items():
        assert printed[key] == pytest.approx(value, abs=1e-6), key
        assert f"{value:.4f}" in table
    assert printed["queries"] == 6 and printed["gallery"] == 19 and printed["queries_in_gallery"] == 0


def test_evaluate_on_the_gallery_itself_leaves_each_query_out(world, capsys):
    code, text = run_main(["evaluate", "--index", str(world["index"]), "--queries", str(world["gallery"])], capsys)
    assert code == 0, text
    assert "18 of 18 query image(s) are in the gallery: each is left out of its own results" in text
    assert "1 query image(s) directly in" in text  # loose.png: no label, not a query
    g = load_index(world["index"])
    features, labels = torch.from_numpy(g.features), torch.tensor(g.labels)
    labelled = (labels >= 0).nonzero().flatten()
    # loose.png stays in the gallery as a distractor (a label of its own, relevant to no query)
    expected = brute_force_metrics(features[labelled], labels[labelled], features, labels.where(labels >= 0, 99),
                                   labelled)
    for name, key in [("Recall@1", "recall_at_1"), ("Recall@5", "recall_at_5"), ("precision@1", "precision_at_1"),
                      ("MAP@R", "map_at_r")]:
        line = next(line for line in text.splitlines() if f" {name} " in line)
        assert f"{expected[key]:.4f}" in line, (name, line)


# ---------------------------------------------------------------------------------------------
# backbones and weights
# ---------------------------------------------------------------------------------------------


def test_default_backbone_offline_names_the_file_the_folder_and_the_url(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr("torch.hub.load_state_dict_from_url",
                        lambda *a, **k: (_ for _ in ()).throw(OSError("network is unreachable")))
    gallery = make_gallery(tmp_path / "g", per_class=1)
    code, text = run_main(["index", "--images", str(gallery), "--out", str(tmp_path / "idx")], capsys)
    assert code == 2
    lines = text.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    folder = tmp_path / "torch_home" / "hub" / "checkpoints"
    assert RESNET50_FILE in text and str(folder) in text and "$TORCH_HOME/hub/checkpoints" in text
    assert f"https://download.pytorch.org/models/{RESNET50_FILE}" in text and "--weights <file>" in text
    assert not (tmp_path / "idx").exists()


def test_default_backbone_uses_cached_imagenet_weights_like_weights_file(world, tmp_path, monkeypatch, capsys):
    """The default ResNet-50 file in $TORCH_HOME/hub/checkpoints gives the same features as --weights."""
    import shutil

    folder = tmp_path / "torch_home" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    shutil.copy(world["weights"], folder / RESNET50_FILE)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    gallery = tmp_path / "g"
    shutil.copytree(world["gallery"] / "red_stripes", gallery / "red_stripes")
    code, text = run_main(["index", "--images", str(gallery), "--out", str(tmp_path / "idx"), *SIZE], capsys)
    assert code == 0, text
    index = load_index(tmp_path / "idx")
    assert index.meta["backbone"]["weights"] == "ResNet50_Weights.IMAGENET1K_V1"
    reference = load_index(world["index"])
    rows = [reference.relative.index(p) for p in index.relative]
    assert np.allclose(index.features, reference.features[rows], atol=1e-4)


def test_weights_file_errors(world, tmp_path, capsys):
    gallery = world["gallery"]
    code, text = run_main(["index", "--images", str(gallery), "--out", str(tmp_path / "a"), "--weights",
                           str(tmp_path / "missing.pth")], capsys)
    assert code == 2 and "missing.pth does not exist" in text
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "other.pth")
    code, text = run_main(["index", "--images", str(gallery), "--out", str(tmp_path / "b"), "--weights",
                           str(tmp_path / "other.pth")], capsys)
    line = one_error_line(code, text)
    assert "other.pth does not fit this model" in line and "missing" in line and "resnet50" in line
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    code, text = run_main(["index", "--images", str(gallery), "--out", str(tmp_path / "c"), "--weights",
                           str(tmp_path / "junk.pth")], capsys)
    assert code == 2 and "junk.pth" in text and len(text.strip().splitlines()) == 1


def test_lab_checkpoint_backbone(tmp_path, capsys):
    """--checkpoint: the run's model (config.yaml beside checkpoints/) and its data's preprocessing."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf, open_dict

    from tests.conftest import compose

    run_dir = tmp_path / "run"
    cfg = compose(["model=small_cnn", "model.channels=[8,16]", "model.hidden=16"], output_dir=run_dir)
    with open_dict(cfg):
        del cfg["hydra"]
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    node = {k: v for k, v in OmegaConf.to_container(cfg.model, resolve=True).items() if k != "name"}
    torch.manual_seed(0)
    model = instantiate(node, in_channels=1, num_classes=10, image_size=[8, 8])
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "hyper_parameters": {"num_classes": 10}}, ckpt)
    gallery = make_gallery(tmp_path / "g", per_class=3)
    code, text = run_main(["index", "--images", str(gallery), "--out", str(tmp_path / "idx"), "--checkpoint",
                           str(ckpt)], capsys)
    assert code == 0, text
    meta = load_index(tmp_path / "idx").meta
    assert meta["backbone"]["kind"] == "checkpoint" and meta["backbone"]["model_inputs"]["image_size"] == [8, 8]
    assert meta["preprocess"]["mode"] == "L" and meta["preprocess"]["size"] == [8, 8]  # digits: grey 8x8
    assert meta["feature_dim"] == 16
    query = gallery / "blue_rings" / "blue_rings_0_1.png"
    code, text = run_main(["query", "--index", str(tmp_path / "idx"), str(query), "-k", "2",
                           "--out-png", str(tmp_path / "sheet.png")], capsys)
    assert code == 0, text
    first = next(line for line in text.splitlines() if line.startswith("│"))
    assert [c.strip() for c in first.strip("│").split("│")][::2] == ["1*", "blue_rings/blue_rings_0_1.png"]
    assert (tmp_path / "sheet.png").is_file()
    (run_dir / "config.yaml").unlink()
    code, text = run_main(["index", "--images", str(gallery), "--out", str(tmp_path / "idx2"), "--checkpoint",
                           str(ckpt)], capsys)
    assert code == 2 and "config.yaml" in text


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------


def one_error_line(code: int, text: str) -> str:
    lines = text.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), text
    return lines[0]


def test_user_errors_are_one_line(world, tmp_path, capsys):
    weights = ["--weights", str(world["weights"])]
    line = one_error_line(*run_main(["index", "--images", str(tmp_path / "nope"), "--out", str(tmp_path / "i"),
                                     *weights], capsys))
    assert "nope: folder does not exist" in line
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("no images")
    line = one_error_line(*run_main(["index", "--images", str(tmp_path / "empty"), "--out", str(tmp_path / "i"),
                                     *weights], capsys))
    assert "no images found" in line
    line = one_error_line(*run_main(["index", "--images", str(world["gallery"]), "--out", str(tmp_path / "i"),
                                     "--backbone", "resnet51"], capsys))
    assert "--backbone" in line and "resnet51" in line and "resnet50" in line
    # An existing index is not replaced without --force (checked before any encoding).
    line = one_error_line(*run_main(["index", "--images", str(world["gallery"]), "--out", str(world["index"]),
                                     *weights], capsys))
    assert "already exists" in line and "--force" in line
    (tmp_path / "mine").mkdir()
    line = one_error_line(*run_main(["index", "--images", str(world["gallery"]), "--out", str(tmp_path / "mine"),
                                     "--force", *weights], capsys))
    assert "not a retrieval index" in line
    line = one_error_line(*run_main(["query", "--index", str(world["index"]), str(tmp_path / "q.png")], capsys))
    assert "q.png: query image does not exist" in line


def test_corrupt_image_names_the_file_or_is_skipped(world, tmp_path, capsys):
    import shutil

    gallery = tmp_path / "g"
    shutil.copytree(world["gallery"] / "red_stripes", gallery / "red_stripes")
    (gallery / "red_stripes" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    args = ["index", "--images", str(gallery), "--out", str(tmp_path / "idx"), "--weights", str(world["weights"]),
            *SIZE]
    line = one_error_line(*run_main([*args, "--workers", "1"], capsys))  # decoded in a worker process
    assert "broken.png: cannot decode image" in line and "--skip-bad" in line
    assert not (tmp_path / "idx").exists()
    code, text = run_main([*args, "--skip-bad"], capsys)
    assert code == 0 and "skipped 1 unreadable image" in text
    index = load_index(tmp_path / "idx")
    assert len(index.relative) == 6 and index.meta["skipped"] == ["red_stripes/broken.png"]


def test_corrupt_or_foreign_index_is_one_line_naming_the_file(world, tmp_path, capsys):
    import shutil

    image = str(world["gallery"] / "loose.png")
    line = one_error_line(*run_main(["query", "--index", str(tmp_path / "none"), image], capsys))
    assert "no such index" in line
    bad = tmp_path / "bad"
    shutil.copytree(world["index"], bad)
    (bad / FEATURES).write_bytes(b"garbage")
    line = one_error_line(*run_main(["query", "--index", str(bad), image], capsys))
    assert str(bad / FEATURES) in line
    np.save(bad / FEATURES, np.array([{"a": 1}], dtype=object), allow_pickle=True)  # needs pickle: refused
    line = one_error_line(*run_main(["query", "--index", str(bad), image], capsys))
    assert str(bad / FEATURES) in line and "pickle" in line.lower()
    np.save(bad / FEATURES, np.zeros((3, 5), dtype=np.float32))
    line = one_error_line(*run_main(["evaluate", "--index", str(bad), "--queries", str(world["gallery"])], capsys))
    assert str(bad / FEATURES) in line and "[19, 2048]" in line
    (bad / META).write_text("{not json")
    line = one_error_line(*run_main(["query", "--index", str(bad), image], capsys))
    assert str(bad / META) in line
    (bad / META).write_text(json.dumps({"format": "something else"}))
    line = one_error_line(*run_main(["query", "--index", str(bad), image], capsys))
    assert str(bad / META) in line and "not a lab.retrieve index" in line


def test_evaluate_needs_labels(world, tmp_path, capsys):
    from PIL import Image

    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("RGB", (32, 32), (10, 20, 30)).save(flat / "a.png")
    line = one_error_line(*run_main(["evaluate", "--index", str(world["index"]), "--queries", str(flat)], capsys))
    assert "queries have no labels" in line and "<class>" in line
    other = tmp_path / "other" / "zebra"
    other.mkdir(parents=True)
    Image.new("RGB", (32, 32), (10, 20, 30)).save(other / "a.png")
    line = one_error_line(*run_main(["evaluate", "--index", str(world["index"]), "--queries",
                                     str(tmp_path / "other")], capsys))
    assert "none of the query classes (zebra) is a gallery class" in line


# ---------------------------------------------------------------------------------------------
# search and metrics, on random features
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def one_thread():
    """Small tensors: one torch thread (two wait on each other whenever another process is busy)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def brute_force_metrics(q, ql, g, gl, self_index=None, ks=(1, 5, 10)) -> dict[str, float]:
    """The definitions, one query at a time, with query i's gallery entry self_index[i] (or -1) removed."""
    q, g = normalize(q), normalize(g)
    sums = {"precision_at_1": 0.0, **{f"recall_at_{k}": 0.0 for k in ks}, "map_at_r": 0.0}
    counted = 0
    for i in range(len(q)):
        keep = torch.ones(len(g), dtype=torch.bool)
        if self_index is not None and int(self_index[i]) >= 0:
            keep[int(self_index[i])] = False
        order = torch.cdist(q[i : i + 1], g[keep])[0].argsort()
        relevant = (gl[keep][order] == ql[i]).float()
        r = int(relevant.sum())
        if r == 0:
            continue
        counted += 1
        sums["precision_at_1"] += float(relevant[0])
        for k in ks:
            sums[f"recall_at_{k}"] += float(relevant[:k].max())
        ranks = torch.arange(1, r + 1)
        sums["map_at_r"] += float((relevant[:r].cumsum(0) / ranks * relevant[:r]).sum() / r)
    return {k: v / max(counted, 1) for k, v in sums.items()}


@pytest.mark.parametrize("n,query_chunk,gallery_chunk,k", [(1000, 7, 64, 10), (1000, 1000, 4096, 10),
                                                           (1000, 5, 50, 120), (100, 16, 3, 4)])
def test_search_equals_brute_force(n, query_chunk, gallery_chunk, k, one_thread):
    gen = torch.Generator().manual_seed(0)
    gallery = normalize(torch.randn(n, 48, generator=gen))
    queries = normalize(torch.randn(37, 48, generator=gen))
    distances, indices = search(queries, gallery, k, query_chunk=query_chunk, gallery_chunk=gallery_chunk)
    reference = torch.cdist(queries, gallery)
    ref_d, ref_i = reference.topk(k, dim=1, largest=False)
    assert torch.equal(indices, ref_i)
    assert torch.allclose(distances, ref_d, atol=1e-4)
    # Leaving one gallery entry out per query (a query that is in the gallery).
    exclude = ref_i[:, 0].clone()
    exclude[::3] = -1
    _, excluded = search(queries, gallery, k, exclude, query_chunk=query_chunk, gallery_chunk=gallery_chunk)
    masked = reference.clone()
    rows = (exclude >= 0).nonzero().flatten()
    masked[rows, exclude[rows]] = float("inf")
    assert torch.equal(excluded, masked.topk(k, dim=1, largest=False).indices)


def test_search_float16_gallery_and_small_galleries(one_thread):
    gen = torch.Generator().manual_seed(1)
    gallery = normalize(torch.randn(300, 32, generator=gen))
    queries = normalize(torch.randn(9, 32, generator=gen))
    half = gallery.half()
    _, indices = search(queries, half, 5, gallery_chunk=64)
    assert torch.equal(indices, (queries @ half.float().T).topk(5, dim=1).indices)
    distances, indices = search(queries, gallery[:3], 10)  # k larger than the gallery
    assert indices.shape == (9, 3) and torch.all(distances[:, :-1] <= distances[:, 1:])
    with pytest.raises(ValueError):
        search(queries, torch.zeros(4, 31), 2)


@pytest.mark.parametrize("case", ["disjoint", "the gallery", "part of the gallery", "classes apart", "mixed"])
def test_evaluate_metrics_leave_each_query_out_exactly(case, one_thread):
    """lab.retrieve's use of retrieval_metrics equals the definitions with each query's own entry removed."""
    gen = torch.Generator().manual_seed(2)
    gallery = normalize(torch.randn(60, 16, generator=gen))
    labels = torch.arange(60) % 4
    labels[55:] = 9  # e.g. unlabelled images: relevant to no query
    outside = normalize(torch.randn(12, 16, generator=gen))
    outside_labels = torch.arange(12) % 5  # class 4 is not in the gallery (R = 0: not counted)
    if case == "disjoint":
        q, ql, where = outside, outside_labels, -torch.ones(12, dtype=torch.long)
    elif case == "the gallery":
        where = torch.randperm(60, generator=gen)
        q, ql = gallery[where], labels[where]
    elif case == "part of the gallery":  # other images of the same classes stay in the gallery: one call per query
        where = torch.arange(0, 60, 3)
        q, ql = gallery[where], labels[where]
    elif case == "classes apart":  # every image of classes 0 and 1 (plus the distractors): one leave-one-out call
        where = (labels < 2).nonzero().flatten()
        q, ql = gallery[where], labels[where]
    else:
        inside = torch.arange(1, 60, 7)
        q = torch.cat([outside, gallery[inside]])
        ql = torch.cat([outside_labels, labels[inside]])
        where = torch.cat([-torch.ones(12, dtype=torch.long), inside])
    got, counted = metrics_excluding_self(q, ql, gallery, labels, where)
    expected = brute_force_metrics(q, ql, gallery, labels, where)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-6), key
    assert counted > 0
    if case == "disjoint":
        assert got == pytest.approx(retrieval_metrics(q, ql, gallery, labels, ks=(1, 5, 10)))


def test_list_images_recurses_and_labels_by_top_folder(tmp_path):
    from PIL import Image

    from lab.retrieval.files import list_images

    for rel in ["cat/a.JPG", "cat/deeper/b.png", "dog/c.webp", "top.bmp", ".hidden/d.png", "dog/.e.png"]:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(path, format={"JPG": "JPEG"}.get(path.suffix[1:].upper(),
                                                                          path.suffix[1:].upper()))
    (tmp_path / "dog" / "notes.txt").write_text("x")
    found = list_images(tmp_path)
    assert found.relative == ["cat/a.JPG", "cat/deeper/b.png", "dog/c.webp", "top.bmp"]
    assert found.class_names == ["cat", "dog"] and found.labels == [0, 0, 1, -1]
