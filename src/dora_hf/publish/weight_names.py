"""The one table between DINO's weight names (the DoRA reference, DINO and timm use them) and
this project's (transformers' ViT naming with DINO's fused ``qkv``).

`convert` reads it forwards (a reference checkpoint -> a DoRA folder), `export_formats` backwards
(a DoRA model -> a timm state dict); both directions are derived here from the same rows.
Templates: ``{i}`` is a block or layer number, ``{p}`` is ``weight`` or ``bias``.
"""

from __future__ import annotations

import re

BACKBONE_NAMES: tuple[tuple[str, str], ...] = (
    ("cls_token", "embeddings.cls_token"),
    ("pos_embed", "embeddings.position_embeddings"),
    ("patch_embed.proj.{p}", "embeddings.patch_embeddings.projection.{p}"),
    ("blocks.{i}.norm1.{p}", "encoder.layer.{i}.layernorm_before.{p}"),
    ("blocks.{i}.attn.qkv.{p}", "encoder.layer.{i}.attention.qkv.{p}"),
    ("blocks.{i}.attn.proj.{p}", "encoder.layer.{i}.attention.o_proj.{p}"),
    ("blocks.{i}.norm2.{p}", "encoder.layer.{i}.layernorm_after.{p}"),
    ("blocks.{i}.mlp.fc1.{p}", "encoder.layer.{i}.mlp.fc1.{p}"),
    ("blocks.{i}.mlp.fc2.{p}", "encoder.layer.{i}.mlp.fc2.{p}"),
    ("norm.{p}", "layernorm.{p}"),
)
"""(DINO name, project name) of every backbone tensor."""

HEAD_NAMES: tuple[tuple[str, str], ...] = (
    ("mlp.{i}.{p}", "mlp.{i}.{p}"),
    # transformers rewrites any `weight_g` / `weight_v` key on load and save, so DINO's weight-norm
    # gain and direction are stored under other names.
    ("last_layer.weight_g", "last_layer.magnitude"),
    ("last_layer.weight_v", "last_layer.direction"),
)
"""(DINO name, project name) of every projection-head tensor (after DINO's ``head.`` prefix)."""

_FIELDS = {"i": r"(?P<i>\d+)", "p": r"(?P<p>weight|bias)"}


def _pattern(template: str) -> str:
    pattern = re.escape(template)
    for field, group in _FIELDS.items():
        pattern = pattern.replace(re.escape("{" + field + "}"), group)
    return f"^{pattern}$"


def _replacement(template: str) -> str:
    return template.replace("{i}", r"\g<i>").replace("{p}", r"\g<p>")


def regex_table(names: tuple[tuple[str, str], ...], *, reverse: bool = False) -> list[tuple[str, str]]:
    """``(pattern, replacement)`` rows for `re.sub`: DINO -> project, or project -> DINO with `reverse`."""
    return [(_pattern(b), _replacement(a)) if reverse else (_pattern(a), _replacement(b)) for a, b in names]


def rename(key: str, table: list[tuple[str, str]]) -> str | None:
    """`key` renamed by the first row of `table` it matches; None when none does."""
    for pattern, target in table:
        if re.match(pattern, key):
            return re.sub(pattern, target, key)
    return None


BACKBONE_RENAMES = regex_table(BACKBONE_NAMES)
HEAD_RENAMES = regex_table(HEAD_NAMES)
TO_TIMM = regex_table(BACKBONE_NAMES, reverse=True)
