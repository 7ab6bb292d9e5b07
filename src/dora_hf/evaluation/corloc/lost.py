"""LOST (Siméoni et al., BMVC 2021): one object box from the keys of a ViT's last attention layer.

Follows valeoai/LOST ``object_discovery.py`` (``lost``, ``patch_scoring``, ``detect_box``):

1. ``A = keys @ keys.T``, the similarity of every pair of patches;
2. the degree of a patch is the number of *other* patches it is positively similar to
   (``patch_scoring``: diagonal zeroed, negatives set to 0, ``A > 0`` summed per row);
   patches are ordered by ``torch.argsort(-degree, descending=True)``, the same call, so that
   patches of equal degree come in the same order as LOST's;
3. the seed is the first patch in that order (lowest degree);
4. seed expansion: among the ``k_patches`` (100) first patches, those positively similar to the
   seed (``A[seed, potentials] > 0``, the seed itself included); their rows of ``A`` are summed;
5. ``detect_box``: the patches where that sum is ``> 0`` form a mask; the seed's connected
   component in it (4-connected, as ``scipy.ndimage.label``'s default structure) gives the box
   ``[xmin, ymin, xmax + 1, ymax + 1]`` in patches (max excluded), times the patch size in
   pixels; ``xmax`` and ``ymax`` are clipped to the image's width and height (the image was
   padded to a multiple of the patch size). A seed outside the mask is LOST's ``ValueError``.

Everything is torch on the keys' device; the connected component grows from the seed by
4-neighbour steps within the mask until it stops changing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LostBox:
    """LOST's prediction for one image."""

    box: tuple[int, int, int, int]
    """``(xmin, ymin, xmax, ymax)`` in pixels of the unpadded image, max excluded (LOST's ``pred``)."""
    patch_box: tuple[int, int, int, int]
    """``(ymin, xmin, ymax, xmax)`` in patches, max excluded (LOST's ``pred_feats``)."""
    seed: int
    """Index of the seed patch in the row-major patch grid."""


def lost(
    keys: torch.Tensor,
    grid: tuple[int, int],
    patch_size: int,
    image_size: tuple[int, int] | None = None,
    k_patches: int = 100,
) -> LostBox:
    """LOST's box from `(num_patches, d)` keys on a `grid` of `(rows, cols)` patches.

    `image_size` is the unpadded image's `(height, width)`: the box's right and bottom edges are
    clipped to it; None leaves them on the patch grid.
    """
    rows, cols = grid
    if keys.ndim != 2 or keys.shape[0] != rows * cols:
        raise ValueError(f"keys of shape {tuple(keys.shape)} do not fit a {rows}x{cols} patch grid")
    if k_patches < 1:
        raise ValueError(f"k_patches must be at least 1, not {k_patches}")
    similarity = keys @ keys.transpose(0, 1)
    order = lowest_degree_first(similarity)
    seed = order[0]
    potentials = order[:k_patches]
    similars = potentials[similarity[seed, potentials] > 0.0]
    expansion = torch.sum(similarity[similars, :], dim=0)
    return detect_box(expansion, int(seed), grid, patch_size, image_size)


def lowest_degree_first(similarity: torch.Tensor) -> torch.Tensor:
    """Patch indices by increasing degree, ties in the order of LOST's ``patch_scoring`` sort."""
    positive = similarity > 0
    positive.fill_diagonal_(False)
    inverse_degree = -torch.sum(positive, dim=1).type(torch.float32)
    return torch.argsort(inverse_degree, descending=True)


def detect_box(
    scores: torch.Tensor,
    seed: int,
    grid: tuple[int, int],
    patch_size: int,
    image_size: tuple[int, int] | None = None,
) -> LostBox:
    """The box of the seed's 4-connected component of ``scores > 0`` on the patch grid."""
    rows, cols = grid
    mask = scores.reshape(rows, cols).float() > 0.0
    seed_row, seed_col = divmod(seed, cols)
    if not bool(mask[seed_row, seed_col]):
        raise ValueError("The seed is in the background component.")
    component = seed_component(mask, seed_row, seed_col)
    in_row = component.any(dim=1).nonzero().flatten()
    in_col = component.any(dim=0).nonzero().flatten()
    ymin, ymax = int(in_row[0]), int(in_row[-1]) + 1
    xmin, xmax = int(in_col[0]), int(in_col[-1]) + 1
    box = [patch_size * xmin, patch_size * ymin, patch_size * xmax, patch_size * ymax]
    if image_size:
        height, width = image_size
        box[2] = min(box[2], int(width))
        box[3] = min(box[3], int(height))
    return LostBox(box=tuple(box), patch_box=(ymin, xmin, ymax, xmax), seed=seed)


def seed_component(mask: torch.Tensor, row: int, col: int) -> torch.Tensor:
    """The 4-connected component of boolean `(rows, cols)` `mask` holding `(row, col)`."""
    component = torch.zeros_like(mask)
    component[row, col] = True
    while True:
        padded = F.pad(component, (1, 1, 1, 1))
        grown = (
            component
            | padded[:-2, 1:-1]
            | padded[2:, 1:-1]
            | padded[1:-1, :-2]
            | padded[1:-1, 2:]
        ) & mask
        if torch.equal(grown, component):
            return component
        component = grown
