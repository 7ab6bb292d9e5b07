"""Tracking head: Sinkhorn-Knopp, discovery, tracking and masks against naive loops and synthetic scenes."""

from __future__ import annotations

import pytest
import torch
from dora_tiny import tiny_config

from dora_hf import DoraForPreTraining
from dora_hf.modeling import DoraTrackerFeatures, DoraTrackingHead, discover_objects, sinkhorn_knopp, track_objects
from dora_hf.training.step import MultiViewStudent


def naive_sinkhorn(scores: torch.Tensor, epsilon: float, iterations: int) -> torch.Tensor:
    """One image at a time, with explicit row/column loops: (P, k) -> (P, k)."""
    q = torch.exp((scores - scores.max()) / epsilon).T.double()  # (k, P)
    q = q / q.sum()
    k, p = q.shape
    for _ in range(iterations):
        for row in range(k):
            q[row] = q[row] / q[row].sum() / k
        for col in range(p):
            q[:, col] = q[:, col] / q[:, col].sum() / p
    return (q * p).T


def naive_track(cls_attention, queries, keys, patch_features, views, heads, config):
    """Per-clip, per-frame, per-object loops in the structure of the reference code.

    cls_attention (B,T,h,P), queries/keys (B,T,h,P,dh), patch_features (B,T,P,d), views (B,T,C,H,W).
    """
    batch, frames = views.shape[:2]
    grid = views.shape[-1] // config.patch_size
    k = len(heads)
    refined = []
    for b in range(batch):
        q0 = torch.cat([queries[b, 0, h] for h in range(queries.shape[2])], dim=-1)  # (P, d)
        protos = torch.stack([cls_attention[b, 0, h] @ q0 for h in heads])  # (k, d)
        z = patch_features[b, 0]
        zn = z / z.norm(dim=-1, keepdim=True)
        plan = naive_sinkhorn(zn @ protos.T, config.sinkhorn_epsilon, config.sinkhorn_iterations).float()
        refined.append(plan.T @ zn)
    attention = torch.zeros(batch, k, frames, grid * grid)
    for b in range(batch):
        for t in range(frames):
            key = torch.cat([keys[b, t, h] for h in range(keys.shape[2])], dim=-1)  # (P, d)
            for j in range(k):
                logits = refined[b][j] @ key.T * key.shape[-1] ** -0.5
                attention[b, j, t] = logits.softmax(dim=-1)
    masks = torch.zeros(batch, k, frames, views.shape[-2], views.shape[-1], dtype=torch.bool)
    masked = torch.zeros(batch, k, *views.shape[1:])
    for j in range(k):
        for t in range(frames):
            normed = torch.stack([attention[b, j, t] / attention[b, j, t].norm() for b in range(batch)])
            if config.mask_threshold_scope == "batch":
                binary = normed > normed.mean()
            else:
                binary = torch.stack([normed[b] > normed[b].mean() for b in range(batch)])
            for b in range(batch):
                cells = binary[b].reshape(grid, grid)
                for gy in range(grid):
                    for gx in range(grid):
                        ys = slice(gy * config.patch_size, (gy + 1) * config.patch_size)
                        xs = slice(gx * config.patch_size, (gx + 1) * config.patch_size)
                        masks[b, j, t, ys, xs] = cells[gy, gx]
                keep = masks[b, j, t] if config.mask_mode == "keep" else ~masks[b, j, t]
                masked[b, j, t] = views[b, t] * keep
    return attention, masks, masked


def random_features(batch, frames, heads, patches, head_dim, seed=0):
    g = torch.Generator().manual_seed(seed)
    cls_attention = torch.rand(batch * frames, heads, patches + 1, generator=g).softmax(-1)[..., 1:]
    return DoraTrackerFeatures(
        queries=torch.randn(batch * frames, heads, patches, head_dim, generator=g),
        keys=torch.randn(batch * frames, heads, patches, head_dim, generator=g),
        cls_attention=cls_attention,
        patch_features=torch.randn(batch * frames, patches, heads * head_dim, generator=g),
    )


@pytest.mark.parametrize("scope", ["batch", "per_image"])
@pytest.mark.parametrize("mode", ["keep", "remove"])
def test_batched_tracking_equals_per_frame_per_object_loops(scope, mode):
    config = tiny_config(mask_threshold_scope=scope, mask_mode=mode)
    batch, frames, heads, grid, head_dim = 3, 4, 4, 4, 12
    feats = random_features(batch, frames, heads, grid * grid, head_dim)
    views = torch.randn(batch, frames, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    out = DoraTrackingHead(config)(feats, views, head_indices=[2, 0, 3])

    shaped = lambda x, *tail: x.reshape(batch, frames, *tail)  # noqa: E731
    attention, masks, masked = naive_track(
        shaped(feats.cls_attention, heads, grid * grid),
        shaped(feats.queries, heads, grid * grid, head_dim),
        shaped(feats.keys, heads, grid * grid, head_dim),
        shaped(feats.patch_features, grid * grid, heads * head_dim),
        views,
        [2, 0, 3],
        config,
    )
    torch.testing.assert_close(out.cross_attention, attention, atol=1e-5, rtol=1e-4)
    assert out.masks.dtype == torch.bool and out.masks.shape == (batch, 3, frames, 32, 32)
    assert torch.equal(out.masks, masks)
    torch.testing.assert_close(out.masked_views, masked)
    assert out.patch_masks.shape == (batch, 3, frames, grid, grid)



@pytest.mark.parametrize("scope", ["batch", "per_image"])
@pytest.mark.parametrize("mode", ["keep", "remove"])
def test_view_patch_masks_are_what_each_masked_view_keeps(scope, mode):
    config = tiny_config(mask_threshold_scope=scope, mask_mode=mode)
    feats = random_features(2, 3, 4, 16, 12, seed=3)
    views = torch.randn(2, 3, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    head = DoraTrackingHead(config)
    out = head(feats, views, head_indices=[1, 3, 0])
    kept = out.view_patch_masks
    assert kept.dtype == torch.bool and kept.shape == out.patch_masks.shape == (2, 3, 3, 4, 4)
    assert torch.equal(kept, out.patch_masks if mode == "keep" else ~out.patch_masks)
    # the masked views are the frames times the kept patches, cell by cell
    for gy in range(4):
        for gx in range(4):
            cell = out.masked_views[..., gy * 8 : (gy + 1) * 8, gx * 8 : (gx + 1) * 8]
            frame = views[..., gy * 8 : (gy + 1) * 8, gx * 8 : (gx + 1) * 8].unsqueeze(1)
            keep = kept[:, :, :, gy, gx, None, None, None]
            torch.testing.assert_close(cell, frame * keep, atol=0, rtol=0)
    # without pixel masks: nothing at pixel resolution, the same patch masks
    lean = head(feats, views, head_indices=[1, 3, 0], output_pixel_masks=False)
    assert lean.masks is None and lean.masked_views is None
    assert torch.equal(lean.view_patch_masks, kept) and torch.equal(lean.patch_masks, out.patch_masks)


def test_sinkhorn_matches_naive_loops_and_holds_marginals():
    g = torch.Generator().manual_seed(0)
    scores = (torch.rand(3, 16, 3, generator=g) * 2 - 1) * 0.3
    plan = sinkhorn_knopp(scores, 0.05, 30)
    for b in range(3):
        torch.testing.assert_close(plan[b].double(), naive_sinkhorn(scores[b], 0.05, 30), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(plan.sum(-1), torch.ones(3, 16), atol=1e-5, rtol=0)  # each patch: 1


def test_sinkhorn_marginals_at_reference_size_and_convergence():
    g = torch.Generator().manual_seed(1)
    # 196 patches, 3 prototypes, cosine-like scores
    scores = (torch.rand(4, 196, 3, generator=g) * 2 - 1) * 0.3
    plan = sinkhorn_knopp(scores, 0.05, 30)
    assert (plan.sum(-1) - 1).abs().max() < 1e-4
    assert ((plan.sum(1) - 196 / 3).abs() / (196 / 3)).max() < 1e-4
    # sharper scores need more rounds: the same algorithm converges when given them
    sharp = (torch.rand(4, 196, 3, generator=g) * 2 - 1)
    plan = sinkhorn_knopp(sharp, 0.05, 400)
    assert ((plan.sum(1) - 196 / 3).abs() / (196 / 3)).max() < 1e-4
    assert torch.isfinite(sinkhorn_knopp(sharp * 100, 0.05, 30)).all()


def synthetic_scene(batch=2, frames=4, grid=6, heads=4, head_dim=4, shift=1):
    """Three objects of 2x2 patches on a grid, each moving right by `shift` cells per frame.

    Object j's patches carry feature and key direction e_j; background carries e_3 for features
    and zero keys. Head `heads_for[j]` attends (from [CLS]) to object j in frame 0.
    """
    dim = heads * head_dim
    patches = grid * grid
    heads_for = [3, 0, 2]
    starts = [(0, 0), (3, 1), (1, 3)]  # (row, col) of each object's top-left cell in frame 0
    where = torch.zeros(frames, 3, grid, grid, dtype=torch.bool)
    for t in range(frames):
        for j, (r, c) in enumerate(starts):
            cc = (c + shift * t) % (grid - 1)
            where[t, j, r : r + 2, cc : cc + 2] = True
    basis = torch.eye(dim)
    features = torch.zeros(batch, frames, patches, dim)
    keys = torch.zeros(batch, frames, patches, dim)
    queries = torch.zeros(batch, frames, patches, dim)
    cls_attention = torch.full((batch, frames, heads, patches), 0.01)
    for t in range(frames):
        flat = where[t].reshape(3, patches)
        features[:, t] = basis[3]
        for j in range(3):
            features[:, t, flat[j]] = basis[j] + 0.1 * basis[3]
            keys[:, t, flat[j]] = 30.0 * basis[j]
            queries[:, t, flat[j]] = basis[j]
            cls_attention[:, t, heads_for[j], flat[j]] = 1.0
    cls_attention = cls_attention / cls_attention.sum(-1, keepdim=True)
    split = lambda x: x.reshape(batch * frames, patches, heads, head_dim).transpose(1, 2)  # noqa: E731
    feats = DoraTrackerFeatures(
        queries=split(queries),
        keys=split(keys),
        cls_attention=cls_attention.reshape(batch * frames, heads, patches),
        patch_features=features.reshape(batch * frames, patches, dim),
    )
    return feats, where, heads_for


@pytest.mark.parametrize("scope", ["batch", "per_image"])
def test_masks_follow_moving_objects(scope):
    config = tiny_config(patch_size=8, image_size=48, mask_threshold_scope=scope)
    feats, where, heads_for = synthetic_scene()
    views = torch.ones(2, 4, 3, 48, 48)
    out = DoraTrackingHead(config)(feats, views, head_indices=heads_for)
    expected = where.unsqueeze(0).expand(2, -1, -1, -1, -1).transpose(1, 2)  # (B, k, T, g, g)
    assert torch.equal(out.patch_masks, expected)
    # pixel masks are the patch masks blown up by the patch size; masked views keep only the object
    assert torch.equal(out.masks[:, :, :, ::8, ::8], expected)
    assert torch.equal(out.masked_views[:, :, :, 0] > 0, out.masks)
    # discovery: object j's prototype is the query direction e_j
    assert torch.equal(out.prototypes[0].argmax(-1), torch.tensor([0, 1, 2]))


def test_remove_mode_zeroes_the_object_instead():
    feats, where, heads_for = synthetic_scene()
    views = torch.ones(2, 4, 3, 48, 48)
    keep = DoraTrackingHead(tiny_config(image_size=48))(feats, views, head_indices=heads_for)
    remove = DoraTrackingHead(tiny_config(image_size=48, mask_mode="remove"))(feats, views, head_indices=heads_for)
    assert torch.equal(keep.masks, remove.masks)
    torch.testing.assert_close(keep.masked_views + remove.masked_views, views.unsqueeze(1).expand_as(keep.masked_views))


def test_per_image_threshold_makes_masks_independent_of_the_batch():
    config = tiny_config(mask_threshold_scope="per_image")
    head = DoraTrackingHead(config)
    feats = random_features(3, 2, 4, 16, 12, seed=5)
    views = torch.randn(3, 2, 3, 32, 32)
    together = head(feats, views, head_indices=[0, 1, 2]).masks
    alone = head(DoraTrackerFeatures(**{k: v[:2] for k, v in feats.items()}), views[:1], head_indices=[0, 1, 2]).masks
    assert torch.equal(together[:1], alone)


def test_head_draws_are_distinct_reproducible_and_validated():
    head = DoraTrackingHead(tiny_config())
    draws = [head.draw_heads(torch.Generator().manual_seed(s)) for s in range(20)]
    assert all(d.unique().numel() == 3 and d.max() < 4 for d in draws)
    assert torch.equal(draws[3], head.draw_heads(torch.Generator().manual_seed(3)))
    assert len({tuple(d.tolist()) for d in draws}) > 1
    feats = random_features(1, 2, 4, 16, 12)
    views = torch.zeros(1, 2, 3, 32, 32)
    for bad in ([0, 0, 1], [0, 1], [0, 1, 4]):
        with pytest.raises(ValueError, match="head_indices"):
            head(feats, views, head_indices=bad)


def test_discover_and_track_runs_without_gradients_end_to_end():
    torch.manual_seed(0)
    model = DoraForPreTraining(tiny_config()).eval()
    clips = torch.randn(2, 3, 3, 32, 32, requires_grad=True)
    out = model.discover_and_track(clips, generator=torch.Generator().manual_seed(0))
    assert out.masks.shape == (2, 3, 3, 32, 32) and out.masked_views.shape == (2, 3, 3, 3, 32, 32)
    assert not out.masked_views.requires_grad and not out.refined_prototypes.requires_grad
    again = model.discover_and_track(clips, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out.masks, again.masks) and torch.equal(out.head_indices, again.head_indices)


def test_gradients_reach_only_the_student():
    torch.manual_seed(0)
    student = DoraForPreTraining(tiny_config()).train()
    teacher = DoraForPreTraining(tiny_config()).eval()
    teacher.load_state_dict(student.state_dict())
    teacher.requires_grad_(False)
    clips = torch.randn(2, 3, 3, 32, 32)
    with torch.no_grad():
        teacher_out = teacher(clips.flatten(0, 1), output_tracker_features=True)
        tracks = teacher.tracking_head(teacher_out.tracker_features, clips, head_indices=[0, 1, 2])
    target = torch.softmax(teacher_out.logits / 0.04, dim=-1).reshape(2, 1, 3, -1)
    student_logits = student(tracks.masked_views.flatten(0, 2)).logits.reshape(2, 3, 3, -1)
    loss = -(target * torch.log_softmax(student_logits / 0.1, dim=-1)).sum(-1).mean()
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    grads = [p.grad for n, p in student.named_parameters() if p.requires_grad]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("scope", ["batch", "per_image"])
@pytest.mark.parametrize("mode", ["keep", "remove"])
def test_student_on_masked_patch_tokens_equals_student_on_masked_views(scope, mode):
    """`MultiViewStudent` (one projection per frame, masks on tokens) against the student run
    on the `k*B*T` masked images, as the step used to: logits and gradients."""
    torch.manual_seed(0)
    config = tiny_config(mask_threshold_scope=scope, mask_mode=mode, drop_path_rate=0.0)
    teacher = DoraForPreTraining(config).eval()
    student = DoraForPreTraining(config).train()
    gen = torch.Generator().manual_seed(6)
    clips = torch.randn(2, 3, 3, 32, 32, generator=gen)
    local_views = torch.randn(2, 2, 3, 3, 16, 16, generator=gen)  # (B, L, T, C, h, w)
    tracks = teacher.discover_and_track(clips, head_indices=[0, 1, 2])
    assert 0 < tracks.view_patch_masks.float().mean() < 1

    masked_logits, local_logits = MultiViewStudent(student)(clips, tracks.view_patch_masks, local_views)
    probes = [torch.randn(masked_logits.shape, generator=gen), torch.randn(local_logits.shape, generator=gen)]
    params = [p for p in student.parameters() if p.requires_grad]
    token_grads = torch.autograd.grad((masked_logits * probes[0]).sum() + (local_logits * probes[1]).sum(), params)

    features = torch.cat(
        (
            student.dora(pixel_values=tracks.masked_views.flatten(0, 2)).pooler_output,
            student.dora(pixel_values=local_views.flatten(0, 2), interpolate_pos_encoding=True).pooler_output,
        )
    )
    expected_masked, expected_local = student.projection_head(features).split([2 * 3 * 3, 2 * 2 * 3])
    expected_masked, expected_local = expected_masked.reshape(2, 3, 3, -1), expected_local.reshape(2, 2, 3, -1)
    pixel_grads = torch.autograd.grad((expected_masked * probes[0]).sum() + (expected_local * probes[1]).sum(), params)

    torch.testing.assert_close(masked_logits, expected_masked, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(local_logits, expected_local, atol=1e-5, rtol=1e-5)
    names = [n for n, p in student.named_parameters() if p.requires_grad]
    for name, got, expected in zip(names, token_grads, pixel_grads):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4, msg=lambda m, n=name: f"{n}: {m}")
    patch_weight = names.index("dora.embeddings.patch_embeddings.projection.weight")
    assert token_grads[patch_weight].abs().sum() > 0


def test_tracking_head_gives_the_same_tracks_inside_a_bf16_autocast_region():
    """The head computes in float32 with autocast off: the same float32 features give bit-equal
    prototypes, plan, attention and masks inside and outside `torch.autocast(bfloat16)`."""
    config = tiny_config(patch_size=16, image_size=224, num_attention_heads=6, hidden_size=384)
    batch, frames, heads, patches, head_dim = 2, 4, 6, 196, 64  # the reference's ViT-S/16 sizes
    feats = random_features(batch, frames, heads, patches, head_dim, seed=7)
    views = torch.randn(batch, frames, 3, 224, 224, generator=torch.Generator().manual_seed(8))
    head = DoraTrackingHead(config)
    plain = head(feats, views, head_indices=[4, 0, 2])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = head(feats, views, head_indices=[4, 0, 2])
    for name in ("prototypes", "assignment", "refined_prototypes", "cross_attention", "masked_views"):
        assert getattr(mixed, name).dtype == torch.float32, name
        assert torch.equal(getattr(mixed, name), getattr(plain, name)), name
    for name in ("patch_masks", "view_patch_masks", "masks"):
        assert torch.equal(getattr(mixed, name), getattr(plain, name)), name

    # Not vacuous: the same tracking written with plain matmuls flips masks inside the region.
    shaped = lambda x, *tail: x.reshape(batch, frames, *tail)  # noqa: E731
    args = (
        shaped(feats.cls_attention, heads, patches),
        shaped(feats.queries, heads, patches, head_dim),
        shaped(feats.keys, heads, patches, head_dim),
        shaped(feats.patch_features, patches, heads * head_dim),
        views,
        [4, 0, 2],
        config,
    )
    _, naive_masks, _ = naive_track(*args)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, naive_bf16_masks, _ = naive_track(*args)
    assert (naive_bf16_masks != naive_masks)[..., ::16, ::16].sum() >= 5  # 18 of 4704 patches here
    assert torch.equal(plain.masks, naive_masks)  # and the head's masks are the float32 ones


def test_tracking_functions_are_float32_inside_autocast():
    """The pure functions, called on their own inside an autocast region, are float32 too."""
    g = torch.Generator().manual_seed(9)
    feats = random_features(2, 1, 6, 196, 64, seed=9)
    heads = torch.tensor([1, 3, 5])
    keys = torch.randn(2, 3, 6, 196, 64, generator=g)
    outside = discover_objects(feats.cls_attention, feats.queries, feats.patch_features, heads, 0.05, 30)
    outside_tracks = track_objects(outside[3], keys)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = discover_objects(feats.cls_attention, feats.queries, feats.patch_features, heads, 0.05, 30)
        inside_tracks = track_objects(inside[3], keys)
        plan = sinkhorn_knopp(outside[1], 0.05, 30)
    for got, expected in zip((*inside, inside_tracks, plan), (*outside, outside_tracks, outside[2])):
        assert got.dtype == torch.float32 and torch.equal(got, expected)
