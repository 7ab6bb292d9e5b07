"""Convert a reference DoRA/DINO checkpoint (.pth) into a transformers `DoraForPreTraining` folder.

The authors' checkpoints hold `student` and `teacher` state dicts whose keys carry `module.`
(DDP) and `backbone.`/`head.` prefixes, DINO ViT names and a weight-normalised last head layer
(`weight_g`, `weight_v`). The project's weight names were chosen so that this is a rename table:
nothing is split, fused or dropped, and any key the table does not know is an error.
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import DoraUserError
from ..folders.staged_folder import staged_folder
from .weight_names import BACKBONE_RENAMES, HEAD_RENAMES, rename

if TYPE_CHECKING:  # imported where used, so that `dora-hf convert-reference --help` needs neither
    import torch

    from ..modeling import DoraConfig

WHICH = ("teacher", "student")
ZIP_MAGIC = b"PK\x03\x04"
PICKLE_PROTOCOL_2_PLUS = b"\x80"
DINO_ARCHS = {"vit_tiny": (192, 12), "vit_small": (384, 12), "vit_base": (768, 12)}
"""DINO/DoRA `--arch` names: (width, blocks), from DINO's vision_transformer.py."""
BACKBONE_TENSORS = [
    "embeddings.cls_token",
    "embeddings.position_embeddings",
    "embeddings.patch_embeddings.projection.weight",
    "embeddings.patch_embeddings.projection.bias",
    "layernorm.weight",
    "layernorm.bias",
]
BLOCK_TENSORS = [
    f"{part}.{kind}"
    for part in ("layernorm_before", "attention.qkv", "attention.o_proj", "layernorm_after", "mlp.fc1", "mlp.fc2")
    for kind in ("weight", "bias")
]


def load_reference_checkpoint(path: str | os.PathLike) -> dict:
    """Load a .pth file safely (no arbitrary code), allowing the argparse namespace DINO stores.

    A .pth file is a zip archive (torch >= 1.6) or a pickle (older torch); anything else is
    reported as not a checkpoint, before torch's unpickler can suggest `weights_only=False`.
    """
    path = Path(path)
    if not path.is_file():
        raise DoraUserError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise DoraUserError(f"checkpoint is empty (0 bytes): {path}")
    with path.open("rb") as handle:
        head = handle.read(4)
    if head == ZIP_MAGIC and not zipfile.is_zipfile(path):
        raise DoraUserError(f"{path} is a damaged or truncated PyTorch checkpoint (its zip archive has no end)")
    if head != ZIP_MAGIC and not head.startswith(PICKLE_PROTOCOL_2_PLUS):
        raise DoraUserError(
            f"{path} is not a PyTorch checkpoint (a .pth file is a zip archive or a pickle; "
            f"this one starts with {head!r})"
        )
    import torch

    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        what = f" ({found.group(1)})" if found else ""
        raise DoraUserError(
            f"{path} holds Python objects other than weights{what}; they are not loaded, as loading them "
            "could run arbitrary code: save the state dicts alone (torch.save({'teacher': ...}))"
        ) from err
    except Exception as err:  # torch raises several types for truncated or foreign files
        raise DoraUserError(f"cannot read {path} as a PyTorch checkpoint: {type(err).__name__}: {err}") from err


def select_state_dict(checkpoint: dict, which: str, source: str) -> dict[str, torch.Tensor]:
    """The `teacher` or `student` state dict of a reference checkpoint, or a bare state dict."""
    import torch

    if not isinstance(checkpoint, dict):
        raise DoraUserError(f"{source}: expected a dict of weights, found {type(checkpoint).__name__}")
    if which in checkpoint:
        state = checkpoint[which]
    elif any(name in checkpoint for name in WHICH):
        present = [name for name in WHICH if name in checkpoint]
        raise DoraUserError(f"{source} has no '{which}' weights (it has: {', '.join(present)})")
    elif all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        state = checkpoint  # a bare state dict, e.g. DINO's released backbone files
    else:
        raise DoraUserError(
            f"{source}: no 'teacher' or 'student' entry and not a bare state dict "
            f"(top-level keys: {', '.join(sorted(map(str, checkpoint))[:12])})"
        )
    if not isinstance(state, dict) or not state:
        raise DoraUserError(f"{source}: the '{which}' entry holds no weights")
    return state


def split_reference_keys(state: dict[str, torch.Tensor]) -> tuple[dict, dict, list[str]]:
    """Strip `module.` and split into backbone and head weights in the project's names.

    Returns (backbone, head, unknown keys). Keys without `backbone.`/`head.` prefixes are read as
    backbone keys (DINO's released backbone-only files).
    """
    backbone, head, unknown = {}, {}, []
    for raw_key, value in state.items():
        key = raw_key[len("module.") :] if raw_key.startswith("module.") else raw_key
        if key.startswith("head."):
            name = rename(key[len("head.") :], HEAD_RENAMES)
            target = head
        else:
            name = rename(key[len("backbone.") :] if key.startswith("backbone.") else key, BACKBONE_RENAMES)
            target = backbone
        if name is None:
            unknown.append(raw_key)
        else:
            target[name] = value
    return backbone, head, unknown


def block_count(backbone: dict) -> int:
    """Blocks the keys imply: one more than the highest block index (0 if none)."""
    return 1 + max((int(k.split(".")[2]) for k in backbone if k.startswith("encoder.layer.")), default=-1)


def stated_depth(checkpoint: dict, which: str, width: int) -> tuple[int, str] | None:
    """The depth the checkpoint states besides the converted network's own keys, and where.

    Evidence: the other network saved beside it (teacher and student have the same blocks), the
    run's `args.depth`, or `args.arch` naming a DINO ViT of this width. A bare state dict has none.
    """
    found: list[tuple[int, str]] = []
    for other in WHICH:
        if other != which and isinstance(checkpoint.get(other), dict):
            count = block_count(split_reference_keys(checkpoint[other])[0])
            if count:
                found.append((count, f"the '{other}' weights hold {count}"))
    args = checkpoint.get("args")
    depth = getattr(args, "depth", None)
    if isinstance(depth, int) and not isinstance(depth, bool):
        found.append((depth, f"its args.depth is {depth}"))
    arch = DINO_ARCHS.get(getattr(args, "arch", None) or "")
    if arch is not None and arch[0] == width:
        found.append((arch[1], f"its args.arch {args.arch} has {arch[1]}"))
    return max(found) if found else None


def missing_tensors(backbone: dict, head: dict | None, depth: int) -> list[str]:
    """Weights a `depth`-block model needs that are absent; whole missing blocks as one entry.

    `head=None` checks the backbone alone. Listed before any shape is read from them, so a missing
    tensor is reported as missing, not as a KeyError.
    """
    missing = [name for name in BACKBONE_TENSORS if name not in backbone]
    block_tensors = [
        name for name in BLOCK_TENSORS
        if name != "attention.qkv.bias" or any(k.endswith(".attention.qkv.bias") for k in backbone)
    ]
    for block in range(depth):
        absent = [f"encoder.layer.{block}.{name}" for name in block_tensors if f"encoder.layer.{block}.{name}" not in backbone]
        if len(absent) == len(block_tensors):
            missing.append(f"encoder.layer.{block}.* (block {block}: all {len(block_tensors)} tensors)")
        else:
            missing.extend(absent)
    if head is not None:
        linear = {int(k.split(".")[1]) for k in head if k.startswith("mlp.")}
        for index in range(0, max(linear, default=0) + 1, 2):  # DINO's head: Linear, GELU, Linear, ...
            missing.extend(f"projection_head.mlp.{index}.{kind}" for kind in ("weight", "bias") if f"mlp.{index}.{kind}" not in head)
        missing.extend(f"projection_head.{name}" for name in ("last_layer.magnitude", "last_layer.direction") if name not in head)
    return missing


def infer_config(backbone: dict, head: dict, num_attention_heads: int | None, **overrides) -> DoraConfig:
    """Architecture from tensor shapes; heads default to DINO's 64 channels per head."""
    from ..modeling import DoraConfig

    hidden = backbone["embeddings.cls_token"].shape[-1]
    patch = backbone["embeddings.patch_embeddings.projection.weight"].shape[-1]
    grid = int(round((backbone["embeddings.position_embeddings"].shape[1] - 1) ** 0.5))
    layers = 1 + max(int(k.split(".")[2]) for k in backbone if k.startswith("encoder.layer."))
    values = dict(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=num_attention_heads or max(1, hidden // 64),
        intermediate_size=backbone["encoder.layer.0.mlp.fc1.weight"].shape[0],
        patch_size=patch,
        image_size=grid * patch,
        num_channels=backbone["embeddings.patch_embeddings.projection.weight"].shape[1],
        qkv_bias="encoder.layer.0.attention.qkv.bias" in backbone,
    )
    if head:
        linear = sorted(int(k.split(".")[1]) for k in head if k.startswith("mlp.") and k.endswith(".weight"))
        values.update(
            head_num_layers=len(linear),
            head_hidden_dim=head[f"mlp.{linear[0]}.weight"].shape[0],
            head_bottleneck_dim=head[f"mlp.{linear[-1]}.weight"].shape[0],
            head_out_dim=head["last_layer.direction"].shape[0],
        )
    values.update(overrides)
    values["num_objects"] = min(values.get("num_objects", 3), values["num_attention_heads"])
    return DoraConfig(**values)


def convert_reference_checkpoint(
    checkpoint_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    which: str = "teacher",
    num_attention_heads: int | None = None,
    backbone_only: bool = False,
    overwrite: bool = False,
    num_hidden_layers: int | None = None,
) -> Path:
    """Convert and save; the folder appears only once it is complete.

    The depth is what the keys show, checked against what the checkpoint states elsewhere (see
    `stated_depth`): a block missing from the weights is an error, never a shallower model, unless
    `num_hidden_layers` asks for exactly the blocks present.
    """
    from ..modeling import DoraForPreTraining, DoraImageProcessor, DoraModel

    if which not in WHICH:
        raise DoraUserError(f"--which must be one of {WHICH}, got {which!r}")
    output_dir = Path(output_dir)
    if output_dir.exists() and not overwrite:
        raise DoraUserError(f"output folder already exists: {output_dir} (pass --overwrite to replace it)")
    source = str(checkpoint_path)
    checkpoint = load_reference_checkpoint(checkpoint_path)
    state = select_state_dict(checkpoint, which, source)
    backbone, head, unknown = split_reference_keys(state)
    if unknown:
        raise DoraUserError(f"{source}: {len(unknown)} key(s) with no DoRA equivalent: {', '.join(unknown)}")
    if "embeddings.cls_token" not in backbone:
        raise DoraUserError(f"{source}: no ViT backbone weights found (no 'cls_token')")
    if not head and not backbone_only:
        raise DoraUserError(
            f"{source}: the '{which}' weights have no projection head ('head.*' keys); "
            "pass --backbone-only to convert the backbone alone"
        )

    present = block_count(backbone)
    stated = None
    if num_hidden_layers is not None:
        if present > num_hidden_layers:
            raise DoraUserError(
                f"{source}: the '{which}' weights hold {present} blocks, more than --num-layers {num_hidden_layers}"
            )
        depth = num_hidden_layers
    else:
        stated = stated_depth(checkpoint, which, backbone["embeddings.cls_token"].shape[-1])
        depth = max(present, stated[0]) if stated else present
    if depth == 0:
        raise DoraUserError(f"{source}: the '{which}' weights hold no transformer blocks ('blocks.N.*' keys)")
    missing = missing_tensors(backbone, None if backbone_only else head, depth)
    if missing:
        note = ""
        if stated is not None and stated[0] > present:
            note = (
                f" (the '{which}' weights hold {present} block(s) but {stated[1]}; pass --num-layers {present} "
                "to convert the blocks present as a shallower model)"
            )
        raise DoraUserError(f"{source}: weights missing: {', '.join(missing)}{note}")

    config = infer_config(backbone, head if not backbone_only else {}, num_attention_heads, num_hidden_layers=depth)
    if backbone_only:
        model = DoraModel(config)
        weights = backbone
    else:
        model = DoraForPreTraining(config)
        weights = {f"dora.{k}": v for k, v in backbone.items()} | {f"projection_head.{k}": v for k, v in head.items()}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    if missing:
        raise DoraUserError(f"{source}: {len(missing)} weight(s) missing for this architecture: {', '.join(missing)}")
    unexpected = sorted(set(weights) - set(expected))
    if unexpected:
        raise DoraUserError(f"{source}: {len(unexpected)} weight(s) this architecture has no place for: {', '.join(unexpected)}")
    mismatched = [
        f"{k} {tuple(v.shape)} vs expected {tuple(expected[k].shape)}"
        for k, v in weights.items()
        if tuple(v.shape) != tuple(expected[k].shape)
    ]
    if mismatched:
        raise DoraUserError(f"{source}: shape mismatch: {'; '.join(mismatched)}")
    model.load_state_dict({k: v.float() for k, v in weights.items()}, strict=True)
    model.eval()

    with staged_folder(output_dir, overwrite=overwrite) as staging:
        model.save_pretrained(staging)
        DoraImageProcessor.for_image_size(config.image_size).save_pretrained(staging)
    return output_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="reference .pth file (DoRA/DINO layout)")
    parser.add_argument("--out", required=True, help="folder to write the transformers model to")
    parser.add_argument("--which", choices=WHICH, default="teacher", help="network to convert (default: teacher)")
    parser.add_argument("--num-heads", type=int, default=None, help="attention heads (default: width / 64)")
    parser.add_argument(
        "--num-layers", type=int, default=None,
        help="transformer blocks (default: from the checkpoint; set it to convert a checkpoint that holds fewer)",
    )
    parser.add_argument("--backbone-only", action="store_true", help="convert a checkpoint without projection head")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")


def run(args: argparse.Namespace) -> int:
    out = convert_reference_checkpoint(
        args.checkpoint,
        args.out,
        which=args.which,
        num_attention_heads=args.num_heads,
        backbone_only=args.backbone_only,
        overwrite=args.overwrite,
        num_hidden_layers=args.num_layers,
    )
    print(f"wrote {out} ({args.which} of {args.checkpoint}); load it with AutoModel.from_pretrained({str(out)!r})")
    return 0
