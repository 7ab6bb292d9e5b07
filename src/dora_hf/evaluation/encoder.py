"""A frozen image encoder to evaluate: any DoRA or ViT-style model folder or hub id.

Evaluation only needs the token sequence of a plain Vision Transformer (a [CLS] token followed
by patch tokens, after a final LayerNorm), so DoRA checkpoints and transformers' ViT family
(DINO's ``facebook/dino-vits16`` among them) are accepted alike. Anything else is refused up
front with a message saying why, rather than failing inside a forward pass.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.utils import logging as transformers_logging

from ..errors import DoraUserError
from ..folders.weight_files import named_weight_errors
from ..modeling import DoraImageProcessor

WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth")


@dataclass
class FrozenEncoder:
    """A loaded encoder with what evaluation needs to know about it."""

    model: PreTrainedModel
    processor: object
    """Image processor: ``processor(images=[PIL...], return_tensors="pt")["pixel_values"]``."""
    name: str
    """The folder or hub id it was loaded from."""
    revision: str
    """Hub commit, or a hash of a local folder's weights: what feature caches are keyed by."""

    @property
    def patch_size(self) -> int:
        return int(self.model.config.patch_size)

    @property
    def image_size(self) -> int:
        return int(self.model.config.image_size)

    @property
    def num_heads(self) -> int:
        return int(self.model.config.num_attention_heads)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def pixel_mean_std(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The processor's normalisation as `(3, 1, 1)` tensors, for frames resized by hand."""
        mean = getattr(self.processor, "image_mean", None) or (0.485, 0.456, 0.406)
        std = getattr(self.processor, "image_std", None) or (0.229, 0.224, 0.225)
        return torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)

    def final_layernorm(self) -> torch.nn.Module:
        """The LayerNorm applied to the last block's output (DINO's ``norm``)."""
        norm = getattr(self.model, "layernorm", None)
        if not isinstance(norm, torch.nn.Module):
            raise DoraUserError(f"{self.name}: the model has no final `layernorm` to apply to intermediate blocks")
        return norm


def load_encoder(
    name_or_path: str, revision: str | None = None, device: str | torch.device = "cpu", progress: bool = True
) -> FrozenEncoder:
    """Load `AutoModel` and its image processor, checking that it is a ViT-style encoder with all its
    weights; `progress` False also hides transformers' weight-loading bar."""
    config = _load_config(name_or_path, revision)
    _check_vit_like(name_or_path, config)
    try:
        with _quiet_loading_report(progress), named_weight_errors(name_or_path, revision):  # missing weights: below
            model, loading = AutoModel.from_pretrained(name_or_path, revision=revision, output_loading_info=True)
    except (OSError, ValueError, KeyError) as err:
        raise DoraUserError(f"{name_or_path}: could not load the model weights ({_first_line(err)})") from err
    _check_complete_weights(name_or_path, type(model).__name__, loading)
    if not hasattr(model, "embeddings"):
        raise DoraUserError(
            f"{name_or_path}: {type(model).__name__} is not a ViT-style encoder (no patch embeddings); "
            "evaluation needs a DoRA or ViT-compatible model"
        )
    model = model.to(device).eval()
    model.requires_grad_(False)
    return FrozenEncoder(
        model=model,
        processor=_load_processor(name_or_path, revision, config),
        name=str(name_or_path),
        revision=_model_revision(name_or_path, config),
    )


@contextlib.contextmanager
def _quiet_loading_report(progress: bool) -> Iterator[None]:
    """transformers' own table of missing and unexpected weights silenced while loading (and its
    progress bar, unless `progress`)."""
    previous = transformers_logging.get_verbosity()
    bars = transformers_logging.is_progress_bar_enabled()
    transformers_logging.set_verbosity_error()
    if not progress:
        transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        transformers_logging.set_verbosity(previous)
        if bars:
            transformers_logging.enable_progress_bar()


UNUSED_WEIGHTS = ("pooler.",)
"""Weights evaluation never uses: a folder may lack them (a ViT saved without its pooler)."""


def _check_complete_weights(name_or_path: str, class_name: str, loading: dict) -> None:
    """Refuse a model that loaded with weights missing or of the wrong shape, as `export` does.

    transformers only warns and initialises them at random, and evaluation would then score a
    network with a random block and write results fit for a model card. Extra weights are fine:
    a DoRA pretraining folder holds its heads, which the encoder does not use.
    """
    missing = [k for k in loading.get("missing_keys") or [] if not str(k).startswith(UNUSED_WEIGHTS)]
    mismatched = [str(k[0] if isinstance(k, (tuple, list)) else k) for k in loading.get("mismatched_keys") or []]
    if not missing and not mismatched:
        return
    problems = []
    for kind, keys in (("missing", missing), ("of another shape", mismatched)):
        if keys:
            keys = sorted(map(str, keys))
            shown = ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")
            problems.append(f"{len(keys)} weight(s) {kind}: {shown}")
    raise DoraUserError(
        f"{name_or_path}: does not load as {class_name} without changes ({'; '.join(problems)}); "
        "refusing to evaluate a network with randomly initialised weights"
    )


def _load_config(name_or_path: str, revision: str | None) -> PretrainedConfig:
    path = Path(name_or_path)
    if path.exists():
        if not path.is_dir():
            raise DoraUserError(f"{path}: is a file; pass a model folder (with config.json) or a hub id")
        if not (path / "config.json").is_file():
            raise DoraUserError(f"{path}: not a model folder (no config.json); export one with `dora-hf export`")
        _refuse_timm_folder(path)
    try:
        return AutoConfig.from_pretrained(name_or_path, revision=revision)
    except (OSError, ValueError, KeyError) as err:
        raise DoraUserError(f"{name_or_path}: could not read the model configuration ({_first_line(err)})") from err
    except ImportError as err:  # a configuration whose model needs a library not installed (timm, say)
        raise DoraUserError(
            f"{name_or_path}: its model needs a library that is not installed ({_first_line(err)}); evaluation "
            "loads DoRA and transformers ViT models"
        ) from err


def _refuse_timm_folder(path: Path) -> None:
    """A timm export (`dora-hf export --format timm`) is for timm's `create_model`, not transformers:
    its config.json names an ``architecture`` and no ``model_type``, which transformers would hand to
    its timm wrapper (an ImportError without timm, and no ViT-style config with it)."""
    try:
        record = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return  # AutoConfig reports an unreadable file
    if isinstance(record, dict) and "architecture" in record and "model_type" not in record:
        raise DoraUserError(
            f"{path}: is a timm export (architecture {record['architecture']!r}, for timm.create_model), not a "
            "transformers model; give the model folder it was exported from, or export the same source with "
            "--format dora (the default) or --format vit"
        )


def _check_vit_like(name_or_path: str, config: PretrainedConfig) -> None:
    missing = [key for key in ("patch_size", "image_size", "hidden_size", "num_attention_heads") if not hasattr(config, key)]
    if missing or isinstance(getattr(config, "patch_size", None), (list, tuple)):
        raise DoraUserError(
            f"{name_or_path}: model_type {config.model_type!r} is not DoRA or ViT-compatible "
            f"(its configuration lacks {', '.join(missing) or 'a single square patch_size'}); "
            "evaluation needs a [CLS] token and a square patch grid"
        )


def _load_processor(name_or_path: str, revision: str | None, config: PretrainedConfig) -> object:
    """The folder's image processor; a DoRA folder without one gets DINO's evaluation transform."""
    try:
        return AutoImageProcessor.from_pretrained(name_or_path, revision=revision)
    except (OSError, ValueError, KeyError) as err:
        if config.model_type == "dora":
            return DoraImageProcessor.for_image_size(config.image_size)
        raise DoraUserError(f"{name_or_path}: no usable image processor ({_first_line(err)})") from err


def _model_revision(name_or_path: str, config: PretrainedConfig) -> str:
    """A hub model's commit; for a local folder, a hash of its weight files' contents."""
    path = Path(name_or_path)
    if not path.is_dir():
        return str(getattr(config, "_commit_hash", None) or "unknown")
    digest = hashlib.sha256()
    files = sorted({f for pattern in WEIGHT_PATTERNS for f in path.glob(pattern)})
    for file in files:
        digest.update(file.name.encode())
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 22), b""):
                digest.update(chunk)
    return "sha256:" + digest.hexdigest()[:16]


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
