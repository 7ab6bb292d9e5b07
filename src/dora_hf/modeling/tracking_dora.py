# Copyright 2026 The dora-hf authors. Licensed under the Apache License, Version 2.0.
"""DoRA's tracking head: discover objects in a clip's first frame and track them through the clip.

Follows the "multi-object discovery and tracking" of DoRA (arXiv:2310.08584, section 3) as the
authors' reference code computes it, batched over clips, frames and objects:

1. discovery (frame 0): the [CLS]-to-patch attention of ``k`` distinct heads pools the patch
   queries into ``k`` object prototypes;
2. refinement: Sinkhorn-Knopp optimal transport between the normalised patch features and the
   prototypes, whose plan pools the patch features into refined prototypes;
3. tracking (every frame): cross-attention of the refined prototypes over the frame's patch keys;
4. masks: each object's attention, L2-normalised over patches and thresholded at its mean,
   masks the frame's global view. The masks are constant on every patch, so the student applies
   them to its patch tokens (``view_patch_masks``); the masked pixels themselves
   (``masked_views``) are built only on request, for pictures.

Every step is a pure function of tensors so that it can be tested and reused on its own; the
``DoraTrackingHead`` module only wires them with the model's configuration. It has no weights.

All of it runs in float32 with autocast switched off, whatever mixed-precision region the caller
is in: the masks are thresholds of these products, and bf16 rounding of the matmuls flips the
patches that lie close to a threshold.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn
from transformers.utils import ModelOutput


def float32_region(device: torch.device | str) -> contextlib.AbstractContextManager:
    """A region with autocast off on `device`, so that float32 inputs give float32 products.

    `.float()` alone is not enough under autocast: it recasts the operands of every matmul to
    bf16/fp16. Device types without autocast (e.g. `meta`) get a no-op context.
    """
    device_type = torch.device(device).type
    if torch.amp.is_autocast_available(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()


def sinkhorn_knopp(scores: torch.Tensor, epsilon: float, iterations: int) -> torch.Tensor:
    """Balanced soft assignment of patches to prototypes (SwAV-style Sinkhorn-Knopp).

    Args:
        scores: `(B, P, k)` similarities between P patches and k prototypes.
        epsilon: entropic regularisation; ``exp(scores / epsilon)`` is the initial plan.
        iterations: number of (row, column) normalisation rounds.

    Returns:
        `(B, P, k)` transport plan in float32: every prototype holds 1/k of the mass before the
        final rescaling, and each patch's assignment sums to 1 (columns scaled by P at the end).

    The plan is computed in float32 whatever the input dtype (it is exponentiated) and whatever
    autocast region is active. Sums are clamped at the smallest normal float so that a patch
    whose scores all underflow keeps a zero assignment instead of producing NaN (the reference
    divides by zero there).
    """
    with float32_region(scores.device):
        q = scores.float() / epsilon
        q = q - q.amax(dim=(1, 2), keepdim=True)
        q = torch.exp(q).transpose(1, 2)  # (B, k, P)
        num_prototypes, num_patches = q.shape[1], q.shape[2]
        tiny = torch.finfo(q.dtype).tiny
        q = q / q.sum(dim=(1, 2), keepdim=True).clamp_min(tiny)
        for _ in range(iterations):
            q = q / (q.sum(dim=2, keepdim=True).clamp_min(tiny) * num_prototypes)
            q = q / (q.sum(dim=1, keepdim=True).clamp_min(tiny) * num_patches)
        q = q * num_patches
        return q.transpose(1, 2)


def discover_objects(
    cls_attention: torch.Tensor,
    queries: torch.Tensor,
    patch_features: torch.Tensor,
    head_indices: torch.Tensor,
    epsilon: float,
    iterations: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Object prototypes from one frame's attention, refined by optimal transport.

    Args:
        cls_attention: `(B, h, P)` [CLS]-to-patch attention probabilities of the tracker block.
        queries: `(B, h, P, dh)` patch queries of the tracker block.
        patch_features: `(B, P, d)` final-LayerNorm patch tokens.
        head_indices: `(k,)` distinct heads, one per object, shared by the batch.

    Returns:
        prototypes `(B, k, d)`, scores `(B, P, k)`, transport plan `(B, P, k)`,
        refined prototypes `(B, k, d)`, all float32 (autocast is off here).
    """
    with float32_region(queries.device):
        attention = cls_attention.index_select(1, head_indices).float()  # (B, k, P)
        all_queries = queries.transpose(1, 2).flatten(2).float()  # (B, P, h*dh): heads concatenated
        prototypes = attention @ all_queries
        normalized = patch_features.float()
        normalized = normalized / normalized.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        scores = normalized @ prototypes.transpose(1, 2)
        plan = sinkhorn_knopp(scores, epsilon, iterations)
        refined = plan.transpose(1, 2) @ normalized
        return prototypes, scores, plan, refined


def track_objects(refined_prototypes: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Cross-attention of the prototypes over every frame's patch keys.

    Args:
        refined_prototypes: `(B, k, d)`.
        keys: `(B, T, h, P, dh)` patch keys of the tracker block for every frame.

    Returns:
        `(B, k, T, P)` float32 attention of each object over the patches of each frame (softmax
        over P), scaled by ``d ** -0.5`` with ``d = h * dh`` as in the reference.
    """
    with float32_region(keys.device):
        frame_keys = keys.permute(0, 1, 3, 2, 4).flatten(3).float()  # (B, T, P, d)
        scale = frame_keys.shape[-1] ** -0.5
        logits = torch.einsum("bkd,btpd->bktp", refined_prototypes.float(), frame_keys) * scale
        return logits.softmax(dim=-1)


def binarize_attention(cross_attention: torch.Tensor, scope: str) -> torch.Tensor:
    """Binary patch masks: an object's attention, L2-normalised over patches, above its mean.

    Args:
        cross_attention: `(B, k, T, P)`.
        scope: ``"per_image"`` (mean over each frame's patches) or ``"batch"`` (the reference:
            one mean over all clips and patches for each object and frame).

    Returns:
        `(B, k, T, P)` boolean masks.
    """
    normalized = cross_attention / cross_attention.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    if scope == "batch":
        threshold = normalized.mean(dim=(0, 3), keepdim=True)
    elif scope == "per_image":
        threshold = normalized.mean(dim=3, keepdim=True)
    else:
        raise ValueError(f"unknown mask threshold scope {scope!r}; expected 'per_image' or 'batch'")
    return normalized > threshold


def upsample_masks(patch_masks: torch.Tensor, grid: tuple[int, int], patch_size: int) -> torch.Tensor:
    """`(B, k, T, P)` patch masks to `(B, k, T, gh*patch, gw*patch)` pixel masks (nearest)."""
    batch, objects, frames, _ = patch_masks.shape
    masks = patch_masks.reshape(batch, objects, frames, grid[0], grid[1])
    return masks.repeat_interleave(patch_size, dim=3).repeat_interleave(patch_size, dim=4)


def kept_by_view(masks: torch.Tensor, mode: str) -> torch.Tensor:
    """What a masked view keeps of its frame, from the tracked-object masks (any shape, boolean).

    ``"keep"`` (reference code) keeps the tracked object and zeroes the rest; ``"remove"`` zeroes
    the object.
    """
    if mode == "keep":
        return masks
    if mode == "remove":
        return ~masks
    raise ValueError(f"unknown mask mode {mode!r}; expected 'keep' or 'remove'")


def apply_masks(views: torch.Tensor, masks: torch.Tensor, mode: str) -> torch.Tensor:
    """Masked views `(B, k, T, C, H, W)` from global views `(B, T, C, H, W)` and masks `(B, k, T, H, W)`.

    See `kept_by_view` for the modes. Zero is the mean colour because the views are already
    normalised.
    """
    return views.unsqueeze(1) * kept_by_view(masks, mode).unsqueeze(3).to(views.dtype)


@dataclass
class DoraTrackerFeatures(ModelOutput):
    """What the tracking head reads from one forward pass over `N` images.

    Args:
        queries: `(N, h, P, dh)` patch queries of the tracker block.
        keys: `(N, h, P, dh)` patch keys of the tracker block.
        cls_attention: `(N, h, P)` [CLS]-to-patch attention probabilities of the tracker block,
            recomputed from its queries and keys (the blocks themselves run fused attention).
        patch_features: `(N, P, d)` patch tokens after the final LayerNorm.
    """

    queries: torch.Tensor | None = None
    keys: torch.Tensor | None = None
    cls_attention: torch.Tensor | None = None
    patch_features: torch.Tensor | None = None


@dataclass
class DoraTrackingOutput(ModelOutput):
    """Result of discovering `k` objects in a batch of `B` clips of `T` frames and tracking them.

    Args:
        head_indices: `(k,)` attention heads that discovered the objects.
        prototypes: `(B, k, d)` attention-pooled queries of frame 0.
        assignment: `(B, P, k)` Sinkhorn-Knopp transport plan of frame 0's patches.
        refined_prototypes: `(B, k, d)`.
        cross_attention: `(B, k, T, P)` each object's attention over each frame's patches.
        patch_masks: `(B, k, T, gh, gw)` boolean masks of the tracked objects on the patch grid.
        view_patch_masks: `(B, k, T, gh, gw)` boolean: the patches each masked view keeps
            (`patch_masks`, inverted when `mask_mode="remove"`); flattened over the grid, the
            student's `patch_mask`.
        masks: `(B, k, T, H, W)` boolean pixel masks, when `output_pixel_masks=True`.
        masked_views: `(B, k, T, C, H, W)` the global views masked by the tracks, when
            `output_pixel_masks=True`.
    """

    head_indices: torch.Tensor | None = None
    prototypes: torch.Tensor | None = None
    assignment: torch.Tensor | None = None
    refined_prototypes: torch.Tensor | None = None
    cross_attention: torch.Tensor | None = None
    patch_masks: torch.Tensor | None = None
    view_patch_masks: torch.Tensor | None = None
    masks: torch.Tensor | None = None
    masked_views: torch.Tensor | None = None


class DoraTrackingHead(nn.Module):
    """Discovery on frame 0, Sinkhorn-Knopp refinement, tracking and masking, for whole batches.

    Computes in float32 with autocast off (its inputs are cast to float32), so a caller inside a
    mixed-precision region gets the same masks as a float32 caller given the same features.
    """

    def __init__(self, config):
        super().__init__()
        self.num_objects = config.num_objects
        self.num_heads = config.num_attention_heads
        self.patch_size = config.patch_size
        self.sinkhorn_iterations = config.sinkhorn_iterations
        self.sinkhorn_epsilon = config.sinkhorn_epsilon
        self.mask_mode = config.mask_mode
        self.mask_threshold_scope = config.mask_threshold_scope

    def draw_heads(self, generator: torch.Generator | None = None, device: torch.device | None = None) -> torch.Tensor:
        """`k` distinct heads drawn uniformly (one draw per step, shared by the batch)."""
        heads = torch.randperm(self.num_heads, generator=generator)[: self.num_objects]
        if device is None or torch.device(device).type == "cpu":
            return heads
        # From pinned memory the copy is queued on the stream instead of blocking the host.
        return heads.pin_memory().to(device, non_blocking=True)

    def forward(
        self,
        features: DoraTrackerFeatures,
        pixel_values: torch.Tensor,
        head_indices: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        output_pixel_masks: bool = True,
    ) -> DoraTrackingOutput:
        """Track objects through clips.

        Args:
            features: tracker features of the `B*T` frames, clip-major (frame `t` of clip `b` at
                row `b*T + t`), as returned by `DoraForPreTraining(..., output_tracker_features=True)`.
            pixel_values: `(B, T, C, H, W)` the global views those features came from.
            head_indices: `(k,)` explicit heads (reproducible); drawn with `generator` otherwise.
            output_pixel_masks: also return the pixel `masks` and the `masked_views`. Training
                leaves them out: the student masks its patch tokens with `view_patch_masks`
                instead, and `masked_views` would be `k` float copies of every frame.
        """
        if pixel_values.ndim != 5:
            raise ValueError(f"pixel_values must be (batch, frames, channels, height, width), got {tuple(pixel_values.shape)}")
        batch, frames, _, height, width = pixel_values.shape
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(f"view size {height}x{width} is not a multiple of the patch size {self.patch_size}")
        if head_indices is None:
            head_indices = self.draw_heads(generator, pixel_values.device)
        else:
            # Checked on the host: explicit indices come from the user, not from the hot path.
            requested = torch.as_tensor(head_indices, dtype=torch.long).cpu()
            if (
                requested.ndim != 1
                or requested.numel() != self.num_objects
                or requested.unique().numel() != requested.numel()
                or int(requested.min()) < 0
                or int(requested.max()) >= self.num_heads
            ):
                raise ValueError(
                    f"head_indices must hold {self.num_objects} distinct heads in [0, {self.num_heads}), "
                    f"got {requested.tolist()}"
                )
            head_indices = requested.to(pixel_values.device)

        # float32 with autocast off for every caller, e.g. a training step inside `autocast()`.
        with float32_region(pixel_values.device):
            heads, patches, head_dim = features.queries.shape[1:]
            queries = features.queries.float().reshape(batch, frames, heads, patches, head_dim)
            keys = features.keys.float().reshape(batch, frames, heads, patches, head_dim)
            cls_attention = features.cls_attention.float().reshape(batch, frames, heads, patches)
            patch_features = features.patch_features.float().reshape(batch, frames, patches, -1)

            prototypes, _, assignment, refined = discover_objects(
                cls_attention[:, 0],
                queries[:, 0],
                patch_features[:, 0],
                head_indices,
                self.sinkhorn_epsilon,
                self.sinkhorn_iterations,
            )
            cross_attention = track_objects(refined, keys)
            patch_masks = binarize_attention(cross_attention, self.mask_threshold_scope)
            grid = (height // self.patch_size, width // self.patch_size)
            masks = masked_views = None
            if output_pixel_masks:
                masks = upsample_masks(patch_masks, grid, self.patch_size)
                masked_views = apply_masks(pixel_values, masks, self.mask_mode)
            patch_masks = patch_masks.reshape(batch, self.num_objects, frames, *grid)
        return DoraTrackingOutput(
            head_indices=head_indices,
            prototypes=prototypes,
            assignment=assignment,
            refined_prototypes=refined,
            cross_attention=cross_attention,
            patch_masks=patch_masks,
            view_patch_masks=kept_by_view(patch_masks, self.mask_mode),
            masks=masks,
            masked_views=masked_views,
        )
