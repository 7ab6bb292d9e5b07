"""DINO's linear evaluation: a linear layer trained online on a frozen backbone's features.

The protocol of facebookresearch/dino ``eval_linear.py`` (with ``utils.py``), value by value:

- features: for a ViT, the [CLS] tokens of the last ``n_last_blocks`` blocks, each after the
  final norm, concatenated (``get_intermediate_layers``; ``--n_last_blocks`` default 4, the
  README's value for ViT-S, ``avgpool_patchtokens`` False), computed under ``torch.no_grad()``
  by the backbone in eval mode;
- ``LinearClassifier``: one ``nn.Linear``, weight ~ N(0, 0.01), bias 0, on the flattened features;
- SGD, momentum 0.9, weight decay 0, learning rate ``args.lr * (batch_size_per_gpu * world_size) / 256``
  (``--lr`` default 0.001, ``--batch_size_per_gpu`` default 128; here one process, world size 1);
- ``CosineAnnealingLR(optimizer, epochs, eta_min=0)`` stepped once per epoch, 100 epochs;
- training images through ``RandomResizedCrop(224)`` + ``RandomHorizontalFlip()``, validation
  images through ``Resize(256, bicubic)`` + ``CenterCrop(224)`` (`dino_transforms`), both
  normalised with ImageNet's mean and std, in DINO's per-epoch shuffled order;
- validation after epoch ``e`` (counted from 0) when ``e % val_freq == 0`` or it is the last;
  the reported accuracy is the best top-1 over those validations (``best_acc = max(best_acc, acc1)``),
  top-5 only with 5 classes or more.

Training is online: every epoch sees new crops of every image, so the training features cannot
be cached, and each epoch runs the backbone over the whole training split (what makes this
protocol slow; ``--protocol fast`` is the cached-feature probe). The validation images are not
augmented and the backbone is frozen, so their features are the same at every validation: they
are computed once and kept in memory, which gives DINO's numbers without DINO's repeated passes.

Epochs are reported counted from 1 (``epoch`` = epochs trained when it was measured); DINO's log
counts from 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn
from tqdm.auto import tqdm

from ..encoder import FrozenEncoder
from ..metric_modules import TOPK_ACCURACY, load_metric
from ..protocols import (
    DINO_LINEAR_BATCH_SIZE,
    DINO_LINEAR_CROP_SIZE,
    DINO_LINEAR_EPOCHS,
    DINO_LINEAR_LR,
    DINO_LINEAR_LR_REFERENCE_BATCH,
    DINO_LINEAR_MOMENTUM,
    DINO_LINEAR_N_LAST_BLOCKS,
    DINO_LINEAR_RESIZE_SIZE,
    DINO_LINEAR_VAL_FREQ,
)
from .features import image_features
from .knn import ranked_classes
from .transformed_images import (
    EpochOrder,
    TransformedImages,
    checked_batches,
    image_loader,
)

if TYPE_CHECKING:
    import evaluate

TOP5_MIN_CLASSES = 5
"""DINO reports top-5 only when the classifier has at least 5 labels."""


@dataclass(frozen=True)
class DinoLinearSettings:
    """The protocol's parameters; the defaults are DINO's (`protocols.DINO_LINEAR_*`)."""

    epochs: int = DINO_LINEAR_EPOCHS
    learning_rate: float = DINO_LINEAR_LR
    """For a batch of 256 images; the rate used is `scaled_learning_rate`."""
    batch_size: int = DINO_LINEAR_BATCH_SIZE
    n_last_blocks: int = DINO_LINEAR_N_LAST_BLOCKS
    val_freq: int = DINO_LINEAR_VAL_FREQ
    momentum: float = DINO_LINEAR_MOMENTUM
    weight_decay: float = 0.0
    crop_size: int = DINO_LINEAR_CROP_SIZE
    resize_size: int = DINO_LINEAR_RESIZE_SIZE
    seed: int = 0
    num_workers: int = 0

    @property
    def scaled_learning_rate(self) -> float:
        return scaled_learning_rate(self.learning_rate, self.batch_size)


def scaled_learning_rate(learning_rate: float, batch_size: int, world_size: int = 1) -> float:
    """DINO's linear scaling rule: ``args.lr * (batch_size_per_gpu * world_size) / 256.``"""
    return learning_rate * (batch_size * world_size) / DINO_LINEAR_LR_REFERENCE_BATCH


def epoch_learning_rates(peak: float, epochs: int) -> list[float]:
    """The rate of each epoch under ``CosineAnnealingLR(optimizer, epochs, eta_min=0)`` stepped
    once per epoch: ``peak * (1 + cos(pi * e / epochs)) / 2`` for epoch ``e`` counted from 0."""
    return [peak * (1 + math.cos(math.pi * epoch / epochs)) / 2 for epoch in range(epochs)]


def validated_epochs(epochs: int, val_freq: int) -> list[int]:
    """Epochs (counted from 1) after which DINO validates: ``e % val_freq == 0 or e == epochs - 1``
    for ``e`` counted from 0."""
    return [e + 1 for e in range(epochs) if e % val_freq == 0 or e == epochs - 1]


class LinearClassifier(nn.Module):
    """DINO's ``LinearClassifier``: flatten, then one linear layer (weight N(0, 0.01), bias 0)."""

    def __init__(self, dim: int, num_labels: int, generator: torch.Generator | None = None):
        super().__init__()
        self.num_labels = num_labels
        self.linear = nn.Linear(dim, num_labels)
        with torch.no_grad():
            self.linear.weight.normal_(mean=0.0, std=0.01, generator=generator)
            self.linear.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.view(x.size(0), -1))


@dataclass
class EpochRecord:
    """One epoch: its rate, its mean training loss (over batches, as DINO's log) and, when it
    was validated, its top-1 (and top-5) accuracy as fractions."""

    epoch: int
    lr: float
    train_loss: float
    top1: float | None = None
    top5: float | None = None

    def as_dict(self) -> dict:
        return {key: value for key, value in asdict(self).items() if value is not None}


@dataclass
class DinoLinearOutcome:
    history: list[EpochRecord] = field(default_factory=list)

    @property
    def validated(self) -> list[EpochRecord]:
        return [record for record in self.history if record.top1 is not None]

    @property
    def best(self) -> EpochRecord:
        """The first validation with the highest top-1 (DINO keeps ``max(best_acc, acc1)``)."""
        validated = self.validated
        return max(validated, key=lambda record: (record.top1, -record.epoch))

    @property
    def last(self) -> EpochRecord:
        return self.validated[-1]


def run_epochs(
    epochs: int,
    val_freq: int,
    learning_rates: list[float],
    train_epoch: Callable[[int, float], float],
    validate: Callable[[], dict[str, float]],
    on_validation: Callable[[EpochRecord, EpochRecord], None] = lambda record, best: None,
) -> DinoLinearOutcome:
    """DINO's epoch loop: ``train_epoch(epoch, lr)`` gives the epoch's mean loss; ``validate()``
    its ``{"top1", ["top5"]}`` after the epochs `validated_epochs` names."""
    outcome = DinoLinearOutcome()
    checkpoints = set(validated_epochs(epochs, val_freq))
    for epoch in range(epochs):
        record = EpochRecord(epoch=epoch + 1, lr=learning_rates[epoch], train_loss=train_epoch(epoch, learning_rates[epoch]))
        if record.epoch in checkpoints:
            scores = validate()
            record.top1, record.top5 = scores["top1"], scores.get("top5")
        outcome.history.append(record)
        if record.top1 is not None:
            on_validation(record, outcome.best)
    return outcome


def train_epoch(
    backbone: FrozenEncoder,
    classifier: LinearClassifier,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    n_last_blocks: int,
    interpolate_pos_encoding: bool = False,
    on_batch: Callable[[float], None] = lambda loss: None,
) -> float:
    """DINO's ``train``: frozen features under ``no_grad``, cross-entropy, one SGD step per batch.
    Returns the mean of the batch losses."""
    classifier.train()
    device = classifier.linear.weight.device
    losses: list[float] = []
    for pixels, labels in batches:
        with torch.no_grad():
            features = image_features(backbone, pixels, n_last_blocks, interpolate_pos_encoding)
        loss = nn.functional.cross_entropy(classifier(features.float()), labels.to(device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        on_batch(losses[-1])
    return sum(losses) / len(losses)


@torch.inference_mode()
def frozen_features(
    backbone: FrozenEncoder,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    n_last_blocks: int,
    interpolate_pos_encoding: bool = False,
    on_batch: Callable[[int], None] = lambda size: None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features `(N, D)` (float32, on the CPU) and labels of every batch."""
    features, labels = [], []
    for pixels, batch_labels in batches:
        features.append(image_features(backbone, pixels, n_last_blocks, interpolate_pos_encoding).float().cpu())
        labels.append(batch_labels)
        on_batch(len(batch_labels))
    return torch.cat(features), torch.cat(labels)


@torch.inference_mode()
def topk_scores(
    classifier: LinearClassifier,
    features: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    accuracy: evaluate.EvaluationModule | None = None,
) -> dict[str, float]:
    """Top-1 (and top-5 with 5 classes or more) accuracy of the classifier on fixed features;
    a label of -1 (a class the training split lacks) counts as a miss. ``accuracy``: the loaded
    top-k accuracy metric module, to load it once for many calls."""
    accuracy = accuracy or load_metric(TOPK_ACCURACY)
    classifier.eval()
    device = classifier.linear.weight.device
    ranked = torch.cat([
        ranked_classes(classifier(features[start : start + batch_size].to(device))).cpu()
        for start in range(0, features.shape[0], batch_size)
    ])
    top_k = [1, 5] if classifier.num_labels >= TOP5_MIN_CLASSES else [1]
    return accuracy.compute(predictions=ranked.tolist(), references=labels.tolist(), top_k=top_k)


def fit_dino_linear(
    backbone: FrozenEncoder,
    train: TransformedImages,
    val: TransformedImages,
    num_classes: int,
    settings: DinoLinearSettings,
    progress: bool = True,
) -> DinoLinearOutcome:
    """Train DINO's linear classifier on ``train`` and validate it on ``val``; see the module docstring."""
    device = backbone.device
    backbone.model.eval()
    interpolate = settings.crop_size != backbone.image_size
    pin = device.type == "cuda"
    train_order = EpochOrder(len(train), seed=settings.seed, shuffle=True)
    train_loader = image_loader(train, train_order, settings.batch_size, settings.num_workers, pin)
    val_loader = image_loader(val, EpochOrder(len(val), shuffle=False), settings.batch_size, settings.num_workers, pin)

    with tqdm(total=len(val), unit="img", desc=f"features {val.split.describe()}", disable=not progress) as bar:
        val_features, val_labels = frozen_features(
            backbone, checked_batches(val_loader), settings.n_last_blocks, interpolate, bar.update
        )

    classifier = LinearClassifier(
        val_features.shape[1], num_classes, torch.Generator().manual_seed(settings.seed)
    ).to(device)
    learning_rates = epoch_learning_rates(settings.scaled_learning_rate, settings.epochs)
    optimizer = torch.optim.SGD(
        classifier.parameters(), lr=learning_rates[0], momentum=settings.momentum, weight_decay=settings.weight_decay
    )
    accuracy = load_metric(TOPK_ACCURACY)
    bar = tqdm(total=settings.epochs * len(train_loader), unit="batch", desc="linear (DINO)", disable=not progress)

    def after_batch(loss: float) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}", refresh=False)

    def one_epoch(epoch: int, lr: float) -> float:
        for group in optimizer.param_groups:
            group["lr"] = lr
        train_order.set_epoch(epoch)
        bar.set_description(f"linear (DINO) epoch {epoch + 1}/{settings.epochs}")
        return train_epoch(
            backbone, classifier, optimizer, checked_batches(train_loader), settings.n_last_blocks, interpolate,
            on_batch=after_batch,
        )

    def on_validation(record: EpochRecord, best: EpochRecord) -> None:
        if progress:
            bar.write(f"epoch {record.epoch}: top-1 {100 * record.top1:.2f}%, best {100 * best.top1:.2f}% (epoch {best.epoch})")

    try:
        return run_epochs(
            settings.epochs, settings.val_freq, learning_rates, one_epoch,
            lambda: topk_scores(classifier, val_features, val_labels, settings.batch_size, accuracy), on_validation,
        )
    finally:
        bar.close()
