"""Pictures of what the network learned: PCA and t-SNE maps of the penultimate
features for a few chosen classes, TensorBoard projector embeddings, and the
confusion matrix of the training set.

Runs once, after the test of the best checkpoint (`viz.*` in conf/config.yaml),
on the in-memory image datamodules. Files go to <run>/features/; the same pictures
are logged under features/ to every experiment logger that holds pictures (TensorBoard,
MLflow, W&B); the projector embeddings are TensorBoard's own.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from lab.errors import ConfigError
from lab.utils.seeds import generator, stream_seed

METHODS = ("pca", "tsne")
SPLITS = ("train", "val", "test")


class FeaturePictures(L.Callback):
    """`classes`: null (off), "all", or class names / indices; `splits`: which of
    train/val/test to picture; `methods`: pca and/or tsne; `max_per_class`: images per
    class drawn (a fixed random subset); `projector`: write TensorBoard projector
    embeddings (with image thumbnails if `thumbnails`); `confusion_train`: also the
    confusion matrix of the whole training split (PNG + CSV + the experiment loggers)."""

    def __init__(
        self,
        classes: Sequence[str | int] | str | None = None,
        splits: Sequence[str] = ("train", "test"),
        methods: Sequence[str] = METHODS,
        max_per_class: int = 200,
        projector: bool = True,
        thumbnails: bool = True,
        confusion_train: bool = False,
        seed: int = 0,
    ) -> None:
        bad = [m for m in methods if m not in METHODS]
        if bad:
            raise ConfigError(f"viz.methods: unknown {bad}; choose from {list(METHODS)}")
        bad = [s for s in splits if s not in SPLITS]
        if bad:
            raise ConfigError(f"viz.splits: unknown {bad}; choose from {list(SPLITS)}")
        if int(max_per_class) < 1:
            raise ConfigError(f"viz.max_per_class must be >= 1, got {max_per_class}")
        self.classes = classes
        self.splits = list(splits)
        self.methods = list(methods)
        self.max_per_class = int(max_per_class)
        self.projector = bool(projector)
        self.thumbnails = bool(thumbnails)
        self.confusion_train = bool(confusion_train)
        self.seed = int(seed)
        self.class_ids: list[int] = []
        self.written: list[Path] = []

    @property
    def active(self) -> bool:
        return self.classes is not None or self.confusion_train

    # --- checks before training ----------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not self.active:
            return
        dm = trainer.datamodule
        if dm is None or not hasattr(dm, "splits") or not hasattr(dm, "batch_transform"):
            raise ConfigError("viz.classes / viz.confusion_train need an image datamodule (data=digits, "
                              f"fashion_mnist, cifar10, ...), not {type(dm).__name__}")
        if not hasattr(pl_module.model, "features"):
            raise ConfigError(f"viz.classes needs a model with features(x); {type(pl_module.model).__name__} has none")
        if self.classes is not None:
            self.class_ids = resolve_classes(self.classes, list(dm.class_names))

    # --- after the test of the best checkpoint ---------------------------------------
    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.active or trainer.fast_dev_run or not trainer.is_global_zero:
            return
        from lab.runs.loggers import image_loggers

        out = Path(trainer.default_root_dir) / "features"
        out.mkdir(parents=True, exist_ok=True)
        dm = trainer.datamodule
        names = list(dm.class_names)
        loggers = image_loggers(trainer.loggers)
        writer = _tensorboard(trainer)
        was_training = pl_module.training
        pl_module.eval()
        try:
            if self.confusion_train:
                self._train_confusion(trainer, pl_module, names, loggers)
            if self.classes is not None:
                for split in self.splits:
                    self._pictures(split, trainer, pl_module, names, out, loggers, writer)
        finally:
            pl_module.train(was_training)

    def _select(self, labels: torch.Tensor) -> torch.Tensor:
        gen = generator(self.seed, "feature_pictures")
        picks = []
        for c in self.class_ids:
            members = (labels.cpu() == c).nonzero().flatten()
            picks.append(members[torch.randperm(len(members), generator=gen)[: self.max_per_class]].sort().values)
        return torch.cat(picks)

    def _pictures(self, split: str, trainer, pl_module, names: list[str], out: Path, loggers, writer) -> None:
        """PCA/t-SNE pictures of a split (PNG + CSV, and every picture logger); the projector in `writer`."""
        from lab.runs.loggers import log_image

        dm = trainer.datamodule
        images, labels = dm.splits[split]
        index = self._select(labels)
        if len(index) < 3:
            raise ConfigError(f"viz: the {split} split has {len(index)} images of classes {self.classes}; need >= 3")
        feats, _ = extract(pl_module, dm, images[index.to(images.device)], want_logits=False)
        y = labels[index.to(labels.device)].cpu().numpy()
        label_names = [names[i] for i in y]
        for method in self.methods:
            coords, note = project(feats, method, self.seed)
            title = f"{ {'pca': 'PCA', 'tsne': 't-SNE'}[method]} of {split} features ({len(y)} images){note}"
            image = scatter_png(coords, y, names, self.class_ids, title)
            path = out / f"{method}_{split}.png"
            from PIL import Image

            Image.fromarray(image).save(path)
            with open(out / f"{method}_{split}.csv", "w") as f:
                f.write("index,label,class,x,y\n")
                for i, lab, (a, b) in zip(index.tolist(), y.tolist(), coords.tolist()):
                    f.write(f"{i},{lab},{names[lab].replace(',', ' ')},{a:.6g},{b:.6g}\n")
            self.written.append(path)
            log_image(loggers, f"features/{method}_{split}", image, trainer.global_step)
        if self.projector and writer is not None:
            thumbs = None
            if self.thumbnails:
                thumbs = images[index.to(images.device)].cpu().float().div(255.0)
                if thumbs.shape[1] == 1:
                    thumbs = thumbs.repeat(1, 3, 1, 1)
                if max(thumbs.shape[-2:]) > 32:
                    thumbs = torch.nn.functional.interpolate(thumbs, size=(32, 32), mode="bilinear",
                                                             antialias=True)
            writer.add_embedding(torch.from_numpy(feats), metadata=label_names, label_img=thumbs,
                                 global_step=trainer.global_step, tag=f"features_{split}")

    def _train_confusion(self, trainer, pl_module, names: list[str], loggers) -> None:
        from PIL import Image

        from lab.callbacks.confusion import count_pairs, render_confusion, write_confusion_csv
        from lab.runs.loggers import log_image

        dm = trainer.datamodule
        images, labels = dm.splits["train"]
        _, logits = extract(pl_module, dm, images, want_logits=True)
        n = len(names)
        predicted = torch.from_numpy(logits.argmax(axis=1))
        counts = count_pairs(torch.zeros(n * n, dtype=torch.long), labels.cpu(), predicted, n)
        matrix = counts.view(n, n).numpy()
        image = render_confusion(matrix, names, "train confusion (best checkpoint, no augmentation)")
        run_dir = Path(trainer.default_root_dir)
        Image.fromarray(image).save(run_dir / "confusion_train.png")
        write_confusion_csv(run_dir / "confusion_train.csv", matrix, names)
        self.written.append(run_dir / "confusion_train.png")
        log_image(loggers, "train/confusion_matrix", image, trainer.global_step)


def resolve_classes(classes: Any, names: list[str]) -> list[int]:
    """"all", class names or indices -> sorted unique indices; unknown ones are named."""
    if isinstance(classes, str):
        if classes == "all":
            return list(range(len(names)))
        classes = [classes]
    ids, unknown = [], []
    for c in classes:
        if isinstance(c, int) and not isinstance(c, bool) and 0 <= c < len(names):
            ids.append(c)
        elif str(c) in names:
            ids.append(names.index(str(c)))
        else:
            unknown.append(c)
    if unknown:
        shown = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")
        raise ConfigError(f"viz.classes: unknown {unknown}; use class names ({shown}) or indices 0-{len(names) - 1}")
    if not ids:
        raise ConfigError("viz.classes is empty; name at least one class or use viz.classes=all")
    return sorted(set(ids))


@torch.no_grad()
def extract(pl_module, dm, images: torch.Tensor, want_logits: bool, batch_size: int = 512):
    """Penultimate features (and logits) of uint8 images through the eval transform."""
    transform = dm.batch_transform(False)
    model = pl_module.model
    device = pl_module.device
    channels_last = bool(getattr(pl_module, "channels_last", False))
    feats, logits = [], []
    for start in range(0, len(images), batch_size):
        x = transform(images[start : start + batch_size].to(device))
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if want_logits:
            logits.append(model(x).float().cpu())
        else:
            feats.append(model.features(x).float().cpu())
    if want_logits:
        return None, torch.cat(logits).numpy()
    return torch.cat(feats).numpy(), None


def project(feats: np.ndarray, method: str, seed: int) -> tuple[np.ndarray, str]:
    """2-D coordinates by scikit-learn's PCA or t-SNE (seeded for the run `seed`'s feature-picture
    stream), and a note for the title."""
    state = stream_seed(seed, "feature_pictures", bits=32)
    if method == "pca":
        from sklearn.decomposition import PCA

        pca = PCA(n_components=2, random_state=state)
        coords = pca.fit_transform(feats)
        return coords, f", explained variance {pca.explained_variance_ratio_.sum():.1%}"
    from sklearn.manifold import TSNE

    perplexity = float(min(30.0, max(2.0, (len(feats) - 1) / 3)))
    coords = TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=state).fit_transform(feats)
    return coords, f", perplexity {perplexity:.3g}"


def scatter_png(coords: np.ndarray, labels: np.ndarray, names: list[str], class_ids: list[int], title: str):
    """An RGB uint8 scatter plot, one colour per class, with a legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 5.2), dpi=100)
    cmap = plt.get_cmap("tab10" if len(class_ids) <= 10 else "tab20")
    for k, c in enumerate(class_ids):
        mask = labels == c
        ax.scatter(coords[mask, 0], coords[mask, 1], s=8, alpha=0.75, color=cmap(k % cmap.N), label=names[c])
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    if len(class_ids) <= 20:
        ax.legend(loc="best", fontsize=8, markerscale=2, frameon=True)
    fig.tight_layout()
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return image


def _tensorboard(trainer: L.Trainer):
    """The first TensorBoard writer, for the projector (which only TensorBoard has)."""
    from lightning.pytorch.loggers import TensorBoardLogger

    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None
