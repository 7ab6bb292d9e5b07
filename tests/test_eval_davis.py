"""DAVIS label propagation.

``--protocol dino`` against a plain transcription of facebookresearch/dino
``eval_video_segmentation.py`` (frames, first mask, propagation, decoding, PNGs); the
``paper-text`` variant tracking a translating object with colour features (J&F > 0.9); the DAVIS
folder layout, the CLI with a tiny model and its recorded settings, and the errors of an
incomplete folder."""

from __future__ import annotations

import copy
import json
import queue
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from dora_tiny import save_tiny_dora
from PIL import Image

from dora_hf.cli import main as cli_main
from dora_hf.errors import DoraUserError
from dora_hf.evaluation.davis.dino_frames import (
    dino_first_frame_labels,
    prepare_dino_frame,
)
from dora_hf.evaluation.davis.evaluate import ProtocolFrameFeatures, evaluate_davis
from dora_hf.evaluation.davis.folder import read_davis
from dora_hf.evaluation.davis.label_propagation import (
    PropagationSettings,
    dino_labels_to_mask,
    first_frame_labels,
    labels_to_mask,
    neighbourhood_mask,
    propagate_labels,
    propagate_step,
)
from dora_hf.evaluation.davis.opencv_resize import resize_bilinear_uint8
from dora_hf.evaluation.davis.region_boundary import boundary_f, jaccard
from dora_hf.evaluation.protocols import DAVIS_PROTOCOLS

# numpy 2 on the reference's `np.array(tensor, dtype=np.uint8)`, transcribed as it is.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

BACKGROUND = (40, 60, 200)
OBJECTS = {1: (220, 40, 40), 2: (40, 200, 60)}
SIZE = (48, 64)
PAPER_TEXT = PropagationSettings("paper-text")


def synthetic_sequence(frames: int = 8) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """A red square moving right and a green bar moving down over a blue background."""
    images, labels = [], []
    for t in range(frames):
        image = np.empty((*SIZE, 3), dtype=np.uint8)
        image[:] = BACKGROUND
        label = np.zeros(SIZE, dtype=np.uint8)
        label[8:20, 4 + 4 * t : 16 + 4 * t] = 1
        label[2 + 4 * t : 10 + 4 * t, 44:60] = 2
        for obj, colour in OBJECTS.items():
            image[label == obj] = colour
        images.append(image)
        labels.append(label)
    return images, labels


def colour_features(frame: np.ndarray, stride: int = 2) -> torch.Tensor:
    """Identity-like features: each 2x2 block's mean colour, the same wherever it is in the frame."""
    height, width = frame.shape[0] // stride, frame.shape[1] // stride
    blocks = torch.tensor(frame[: height * stride, : width * stride], dtype=torch.float32)
    return blocks.reshape(height, stride, width, stride, 3).mean(dim=(1, 3))


def jf_of(predicted: list[np.ndarray], truth: list[np.ndarray], objects=(1, 2)) -> float:
    j = np.mean([jaccard(p == o, t == o) for p, t in zip(predicted, truth) for o in objects])
    f = np.mean([boundary_f(p == o, t == o) for p, t in zip(predicted, truth) for o in objects])
    return (j + f) / 2


def test_propagation_tracks_a_translating_object_with_colour_features():
    images, labels = synthetic_sequence()
    features = [colour_features(image) for image in images]
    first = first_frame_labels(labels[0], tuple(features[0].shape[:2]), num_objects=2)
    predicted = [labels_to_mask(soft, SIZE) for soft in propagate_labels(features, first, PAPER_TEXT)]
    assert len(predicted) == len(images) - 1
    assert jf_of(predicted, labels[1:]) > 0.9


def test_propagation_needs_the_features_not_just_the_first_mask():
    # Features that carry no information (constant) cannot follow the motion: the labels only
    # spread around where the first mask was, which scores far lower on this sequence.
    images, labels = synthetic_sequence()
    blank = [torch.ones(SIZE[0] // 2, SIZE[1] // 2, 3) for _ in images]
    first = first_frame_labels(labels[0], (SIZE[0] // 2, SIZE[1] // 2), num_objects=2)
    predicted = [labels_to_mask(soft, SIZE) for soft in propagate_labels(blank, first, PropagationSettings("paper-text", radius=1))]
    assert jf_of(predicted, labels[1:]) < 0.6


def test_one_step_is_a_softmax_weighted_vote_of_the_top_k_neighbours():
    torch.manual_seed(0)
    target, sources = torch.randn(2, 3, 4), torch.randn(2, 2, 3, 4)
    source_labels = torch.rand(2, 5, 2, 3)
    settings = PropagationSettings("paper-text", top_k=3, temperature=0.7, radius=1)
    got = propagate_step(target, sources, source_labels, settings, neighbourhood_mask((2, 3), 1))
    t = torch.nn.functional.normalize(target.reshape(6, 4), dim=1)
    s = torch.nn.functional.normalize(sources.reshape(2, 6, 4), dim=2)
    labels = source_labels.reshape(2, 5, 6)
    rows, cols = np.divmod(np.arange(6), 3)
    for i in range(6):
        candidates = []
        for n in range(2):
            for j in range(6):
                if abs(rows[i] - rows[j]) <= 1 and abs(cols[i] - cols[j]) <= 1:
                    candidates.append((float(t[i] @ s[n, j]), n, j))
        top = sorted(candidates, reverse=True)[:3]
        weights = torch.softmax(torch.tensor([c[0] for c in top]) / 0.7, dim=0)
        expected = sum(w * labels[n, :, j] for w, (_, n, j) in zip(weights, top))
        torch.testing.assert_close(got.reshape(5, 6)[:, i], expected)


def write_davis(root: Path, sequences: dict[str, int], annotations: bool = True) -> Path:
    palette = [0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (256 * 3 - 9)
    for name, frames in sequences.items():
        images, labels = synthetic_sequence(frames)
        (root / "JPEGImages" / "480p" / name).mkdir(parents=True)
        for t, (image, label) in enumerate(zip(images, labels)):
            Image.fromarray(image).save(root / "JPEGImages" / "480p" / name / f"{t:05d}.jpg", quality=95)
            if annotations:
                (root / "Annotations" / "480p" / name).mkdir(parents=True, exist_ok=True)
                mask = Image.fromarray(label)
                mask.putpalette(palette)
                mask.save(root / "Annotations" / "480p" / name / f"{t:05d}.png")
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("".join(f"{name}\n" for name in sequences))
    return root


def test_davis_folder_evaluated_with_colour_features(tmp_path):
    root = write_davis(tmp_path / "DAVIS", {"squares": 8, "short": 5})
    sequences = read_davis(root)
    assert [s.name for s in sequences] == ["squares", "short"]
    scores = evaluate_davis(sequences, colour_features, PAPER_TEXT, save_dir=tmp_path / "masks", progress=False)
    assert scores["J&F"] > 0.9
    assert set(scores["per_sequence"]) == {"squares", "short"}
    assert scores["per_sequence"]["squares"]["num_frames"] == 6  # first and last frames are not scored
    saved = Image.open(tmp_path / "masks" / "squares" / "00003.png")
    assert saved.mode == "P" and set(np.unique(np.asarray(saved))) == {0, 1, 2}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return save_tiny_dora(tmp_path_factory.mktemp("model") / "tiny-dora")


def test_eval_davis_cli_with_a_model(tiny_model, tmp_path):
    root = write_davis(tmp_path / "DAVIS", {"squares": 4})
    out = tmp_path / "davis.json"
    argv = ["eval", "davis", "--model", str(tiny_model), "--davis-root", str(root), "--protocol", "paper-text",
            "--short-side", "32", "--context-frames", "2", "--out", str(out), "--no-progress"]
    assert cli_main(argv) == 0
    results = json.loads(out.read_text())
    assert results["task"] == "davis" and results["dataset"]["num_sequences"] == 1
    assert [m["name"] for m in results["metrics"]] == ["J&F mean", "J mean", "F mean"]
    assert 0.0 <= results["metrics"][0]["value"] <= 1.0
    assert set(results["details"]["per_sequence"]) == {"squares"}
    assert results["settings"]["protocol"] == "paper-text"
    assert results["settings"]["context_frames"] == 2 and results["settings"]["top_k"] == 7
    assert results["settings"]["temperature"] == 0.7 and results["settings"]["long_side_multiple"] == 8
    assert results["settings"]["overridden"] == ["context_frames", "short_side"]
    assert results["metrics"][0]["args"]["protocol"] == "paper-text"


def test_incomplete_davis_folders_are_clear_errors(tmp_path, capsys):
    no_masks = write_davis(tmp_path / "no-masks", {"squares": 3}, annotations=False)
    with pytest.raises(DoraUserError, match="DAVIS folder without annotations"):
        read_davis(no_masks)
    with pytest.raises(DoraUserError, match="not a DAVIS folder"):
        read_davis(tmp_path)
    root = write_davis(tmp_path / "ok", {"squares": 3})
    with pytest.raises(DoraUserError, match="no list of the 'test-dev' sequences; available: val"):
        read_davis(root, split="test-dev")
    with pytest.raises(DoraUserError, match="sequence 'missing' has no frames"):
        read_davis(root, sequences=["missing"])
    (root / "Annotations" / "480p" / "squares" / "00000.png").unlink()
    with pytest.raises(DoraUserError, match="no first-frame mask"):
        read_davis(root)
    # Through the command line: exit status 2 and the message, before any model is loaded.
    assert cli_main(["eval", "davis", "--model", "nowhere", "--davis-root", str(no_masks)]) == 2
    assert "DAVIS folder without annotations" in capsys.readouterr().err


# --- `--protocol dino` against facebookresearch/dino `eval_video_segmentation.py` -------------
#
# A plain transcription of the reference, function by function, on the CPU and without its
# command line: `args` carries `n_last_frames`, `size_mask_neighborhood`, `topk`, `patch_size`.
# `cv2.imread` is stood in for by PIL (BGR order kept) and `cv2.resize` by `ref_cv2_resize`,
# OpenCV's 8-bit INTER_LINEAR (modules/imgproc/src/resize.cpp) one output pixel at a time.


def ref_cv2_resize(img: np.ndarray, dsize: tuple[int, int]) -> np.ndarray:
    """``cv2.resize(img, dsize)`` for uint8 images: 11-bit weights, integer row sums, fixed-point blend."""
    src_h, src_w, cn = img.shape
    dst_w, dst_h = dsize
    scale_x = 1.0 / (dst_w / src_w)
    scale_y = 1.0 / (dst_h / src_h)
    xofs, alpha = [], []
    for dx in range(dst_w):
        fx = np.float32((dx + 0.5) * scale_x - 0.5)
        sx = int(np.floor(fx))
        fx = np.float32(fx - np.float32(sx))
        if sx < 0:
            fx, sx = np.float32(0), 0
        if sx >= src_w - 1:
            fx, sx = np.float32(0), src_w - 1
        xofs.append(sx)
        alpha.append((int(np.rint((np.float32(1) - fx) * np.float32(2048))), int(np.rint(fx * np.float32(2048)))))
    yofs, beta = [], []
    for dy in range(dst_h):
        fy = np.float32((dy + 0.5) * scale_y - 0.5)
        sy = int(np.floor(fy))
        fy = np.float32(fy - np.float32(sy))
        yofs.append(sy)
        beta.append((int(np.rint((np.float32(1) - fy) * np.float32(2048))), int(np.rint(fy * np.float32(2048)))))

    def hresize(y: int) -> list[list[int]]:  # HResizeLinear: one row, values scaled by 2048
        row = []
        for dx in range(dst_w):
            sx, (a0, a1) = xofs[dx], alpha[dx]
            if sx >= src_w - 1:  # past the last source pixel centre: that pixel alone
                row.append([int(img[y, sx, c]) * 2048 for c in range(cn)])
            else:
                row.append([int(img[y, sx, c]) * a0 + int(img[y, sx + 1, c]) * a1 for c in range(cn)])
        return row

    rows = {}
    out = np.zeros((dst_h, dst_w, cn), dtype=np.uint8)
    for dy in range(dst_h):
        y0, y1 = min(max(yofs[dy], 0), src_h - 1), min(max(yofs[dy] + 1, 0), src_h - 1)
        for y in (y0, y1):
            if y not in rows:
                rows[y] = hresize(y)
        b0, b1 = beta[dy]
        for dx in range(dst_w):
            for c in range(cn):
                value = ((rows[y0][dx][c] >> 4) * b0 >> 16) + ((rows[y1][dx][c] >> 4) * b1 >> 16)
                out[dy, dx, c] = min(max((value + 2) >> 2, 0), 255)
    return out


def ref_restrict_neighborhood(args, h, w):
    mask = torch.zeros(h, w, h, w)
    for i in range(h):
        for j in range(w):
            for p in range(2 * args.size_mask_neighborhood + 1):
                for q in range(2 * args.size_mask_neighborhood + 1):
                    if i - args.size_mask_neighborhood + p < 0 or i - args.size_mask_neighborhood + p >= h:
                        continue
                    if j - args.size_mask_neighborhood + q < 0 or j - args.size_mask_neighborhood + q >= w:
                        continue
                    mask[i, j, i - args.size_mask_neighborhood + p, j - args.size_mask_neighborhood + q] = 1
    mask = mask.reshape(h * w, h * w)
    return mask


def ref_norm_mask(mask):
    c, h, w = mask.size()
    for cnt in range(c):
        mask_cnt = mask[cnt, :, :]
        if mask_cnt.max() > 0:
            mask_cnt = mask_cnt - mask_cnt.min()
            mask_cnt = mask_cnt / mask_cnt.max()
            mask[cnt, :, :] = mask_cnt
    return mask


def ref_label_propagation(args, model, frame_tar, list_frame_feats, list_segs, mask_neighborhood=None):
    feat_tar, h, w = ref_extract_feature(model, frame_tar, return_h_w=True)
    return_feat_tar = feat_tar.T
    ncontext = len(list_frame_feats)
    feat_sources = torch.stack(list_frame_feats)
    feat_tar = torch.nn.functional.normalize(feat_tar, dim=1, p=2)
    feat_sources = torch.nn.functional.normalize(feat_sources, dim=1, p=2)
    feat_tar = feat_tar.unsqueeze(0).repeat(ncontext, 1, 1)
    aff = torch.exp(torch.bmm(feat_tar, feat_sources) / 0.1)
    if args.size_mask_neighborhood > 0:
        if mask_neighborhood is None:
            mask_neighborhood = ref_restrict_neighborhood(args, h, w)
            mask_neighborhood = mask_neighborhood.unsqueeze(0).repeat(ncontext, 1, 1)
        aff *= mask_neighborhood
    aff = aff.transpose(2, 1).reshape(-1, h * w)
    tk_val, _ = torch.topk(aff, dim=0, k=args.topk)
    tk_val_min, _ = torch.min(tk_val, dim=0)
    aff[aff < tk_val_min] = 0
    aff = aff / torch.sum(aff, keepdim=True, axis=0)
    segs = torch.cat(list_segs)
    nmb_context, C, h, w = segs.shape
    segs = segs.reshape(nmb_context, C, -1).transpose(2, 1).reshape(-1, C).T
    seg_tar = torch.mm(segs, aff)
    seg_tar = seg_tar.reshape(1, C, h, w)
    return seg_tar, return_feat_tar, mask_neighborhood


def ref_extract_feature(model, frame, return_h_w=False):
    out = model.get_intermediate_layers(frame.unsqueeze(0), n=1)[0]
    out = out[:, 1:, :]
    h, w = int(frame.shape[1] / model.patch_embed.patch_size), int(frame.shape[2] / model.patch_embed.patch_size)
    dim = out.shape[-1]
    out = out[0].reshape(h, w, dim)
    out = out.reshape(-1, dim)
    if return_h_w:
        return out, h, w
    return out


def ref_postprocess(args, frame_tar_avg, ori_h, ori_w):
    """The upsampling, ``norm_mask``, argmax and resize of ``eval_video_tracking_davis``."""
    frame_tar_avg = torch.nn.functional.interpolate(
        frame_tar_avg, scale_factor=args.patch_size, mode="bilinear", align_corners=False,
        recompute_scale_factor=False,
    )[0]
    frame_tar_avg = ref_norm_mask(frame_tar_avg)
    _, frame_tar_seg = torch.max(frame_tar_avg, dim=0)
    frame_tar_seg = np.array(frame_tar_seg.squeeze().cpu(), dtype=np.uint8)
    return np.array(Image.fromarray(frame_tar_seg).resize((ori_w, ori_h), 0))


def ref_imwrite_indexed(filename, array, color_palette):
    if np.atleast_3d(array).shape[2] != 1:
        raise Exception("Saving indexed PNGs requires 2D array.")
    im = Image.fromarray(array)
    im.putpalette(color_palette.ravel())
    im.save(filename, format="PNG")


def ref_eval_video_tracking_davis(args, model, frame_list, video_folder, first_seg, seg_ori, color_palette):
    video_folder.mkdir(parents=True, exist_ok=True)
    que = queue.Queue(args.n_last_frames)
    frame1, ori_h, ori_w = ref_read_frame(frame_list[0], args.scale_size)
    frame1_feat = ref_extract_feature(model, frame1).T
    ref_imwrite_indexed(video_folder / "00000.png", seg_ori, color_palette)
    mask_neighborhood = None
    for cnt in range(1, len(frame_list)):
        frame_tar = ref_read_frame(frame_list[cnt], args.scale_size)[0]
        used_frame_feats = [frame1_feat] + [pair[0] for pair in list(que.queue)]
        used_segs = [first_seg] + [pair[1] for pair in list(que.queue)]
        frame_tar_avg, feat_tar, mask_neighborhood = ref_label_propagation(
            args, model, frame_tar, used_frame_feats, used_segs, mask_neighborhood
        )
        if que.qsize() == args.n_last_frames:
            que.get()
        seg = copy.deepcopy(frame_tar_avg)
        que.put([feat_tar, seg])
        frame_tar_seg = ref_postprocess(args, frame_tar_avg, ori_h, ori_w)
        ref_imwrite_indexed(video_folder / (frame_list[cnt].stem + ".png"), frame_tar_seg, color_palette)


def ref_to_one_hot(y_tensor, n_dims=None):
    if n_dims is None:
        n_dims = int(y_tensor.max() + 1)
    _, h, w = y_tensor.size()
    y_tensor = y_tensor.type(torch.LongTensor).view(-1, 1)
    n_dims = n_dims if n_dims is not None else int(torch.max(y_tensor)) + 1
    y_one_hot = torch.zeros(y_tensor.size()[0], n_dims).scatter_(1, y_tensor, 1)
    y_one_hot = y_one_hot.view(h, w, n_dims)
    return y_one_hot.permute(2, 0, 1).unsqueeze(0)


def ref_read_frame(frame_dir, scale_size=[480]):  # noqa: B006 (the reference's signature)
    img = np.ascontiguousarray(np.asarray(Image.open(frame_dir).convert("RGB"))[:, :, ::-1])  # cv2.imread: BGR
    ori_h, ori_w, _ = img.shape
    if len(scale_size) == 1:
        if ori_h > ori_w:
            tw = scale_size[0]
            th = (tw * ori_h) / ori_w
            th = int((th // 64) * 64)
        else:
            th = scale_size[0]
            tw = (th * ori_w) / ori_h
            tw = int((tw // 64) * 64)
    else:
        th, tw = scale_size
    img = ref_cv2_resize(img, (tw, th))
    img = img.astype(np.float32)
    img = img / 255.0
    img = img[:, :, ::-1]
    img = np.transpose(img.copy(), (2, 0, 1))
    img = torch.from_numpy(img).float()
    img = ref_color_normalize(img)
    return img, ori_h, ori_w


def ref_read_seg(seg_dir, factor, scale_size=[480]):  # noqa: B006
    seg = Image.open(seg_dir)
    _w, _h = seg.size
    if len(scale_size) == 1:
        if _w > _h:
            _th = scale_size[0]
            _tw = (_th * _w) / _h
            _tw = int((_tw // 64) * 64)
        else:
            _tw = scale_size[0]
            _th = (_tw * _h) / _w
            _th = int((_th // 64) * 64)
    else:
        _th = scale_size[1]
        _tw = scale_size[0]
    small_seg = np.array(seg.resize((_tw // factor, _th // factor), 0))
    small_seg = torch.from_numpy(small_seg.copy()).contiguous().float().unsqueeze(0)
    return ref_to_one_hot(small_seg), np.asarray(seg)


def ref_color_normalize(x, mean=[0.485, 0.456, 0.406], std=[0.228, 0.224, 0.225]):  # noqa: B006
    for t, m, s in zip(x, mean, std):
        t.sub_(m)
        t.div_(s)
    return x


class PatchProjection:
    """A stand-in for DINO's ViT: each patch's pixels through a fixed random projection, plus a
    [CLS] token, served as ``get_intermediate_layers`` and ``patch_embed.patch_size`` serve them."""

    def __init__(self, patch_size: int = 8, dim: int = 24):
        generator = torch.Generator().manual_seed(0)
        self.weight = torch.randn(3 * patch_size * patch_size, dim, generator=generator)
        self.patch_embed = SimpleNamespace(patch_size=patch_size)

    def get_intermediate_layers(self, x: torch.Tensor, n: int = 1) -> list[torch.Tensor]:
        p = self.patch_embed.patch_size
        grid = (x.shape[2] // p, x.shape[3] // p)
        patches = x[:, :, : grid[0] * p, : grid[1] * p].unfold(2, p, p).unfold(3, p, p)
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(x.shape[0], grid[0] * grid[1], -1)
        tokens = torch.tanh(patches @ self.weight / p)
        return [torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1)]

    def patch_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """The project's side: `(3, H, W)` prepared pixels -> `(h, w, d)` (the same tokens)."""
        tokens = self.get_intermediate_layers(pixels[None], n=1)[0][0, 1:]
        p = self.patch_embed.patch_size
        return tokens.reshape(pixels.shape[1] // p, pixels.shape[2] // p, -1)


ODD_SIZE = (50, 110)
"""Frames of the DINO test sequence: resized at a short side of 64 to 64 x 128 (128 floored to 64)."""


def write_textured_davis(root: Path, frames: int = 10) -> Path:
    """A DAVIS folder with one sequence: three objects (one a 3-pixel speck that the patch grid
    loses) moving over a textured background, JPEG frames, palette masks."""
    rng = np.random.default_rng(0)
    background = rng.integers(0, 256, (*ODD_SIZE, 3), dtype=np.uint8)
    background = np.asarray(Image.fromarray(background).resize((ODD_SIZE[1] // 4, ODD_SIZE[0] // 4)).resize(
        (ODD_SIZE[1], ODD_SIZE[0]), Image.BILINEAR))
    palette = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] + [0] * (256 * 3 - 12)
    (root / "JPEGImages" / "480p" / "seq").mkdir(parents=True)
    (root / "Annotations" / "480p" / "seq").mkdir(parents=True)
    for t in range(frames):
        image, label = background.copy(), np.zeros(ODD_SIZE, dtype=np.uint8)
        label[10:30, 5 + 5 * t : 27 + 5 * t] = 1
        label[3 + 3 * t : 20 + 3 * t, 70:95] = 2
        label[40:41, 100:103] = 3
        image[label == 1] = (230, 50, 40)
        image[label == 2] = np.clip(background[label == 2].astype(int) // 3 + (30, 170, 40), 0, 255)
        image[label == 3] = (250, 250, 250)
        Image.fromarray(image).save(root / "JPEGImages" / "480p" / "seq" / f"{t:05d}.jpg", quality=90)
        mask = Image.fromarray(label)
        mask.putpalette(palette)
        mask.save(root / "Annotations" / "480p" / "seq" / f"{t:05d}.png")
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("seq\n")
    return root


@pytest.mark.parametrize(
    ("settings", "args"),
    [
        (PropagationSettings(short_side=64), {"n_last_frames": 7, "topk": 5, "size_mask_neighborhood": 12}),
        (PropagationSettings("dino", context_frames=2, top_k=3, radius=2, short_side=64),
         {"n_last_frames": 2, "topk": 3, "size_mask_neighborhood": 2}),
    ],
    ids=["released-defaults", "overrides"],
)
def test_dino_protocol_writes_the_reference_label_maps(tmp_path, settings, args):
    root = write_textured_davis(tmp_path / "DAVIS")
    model = PatchProjection()
    args = SimpleNamespace(**args, patch_size=8, scale_size=[64])
    frames = sorted((root / "JPEGImages" / "480p" / "seq").glob("*.jpg"))
    first_seg, seg_ori = ref_read_seg(root / "Annotations" / "480p" / "seq" / "00000.png", args.patch_size, args.scale_size)
    assert first_seg.shape == (1, 3, 8, 16)  # the 3-pixel object 3 is gone from the patch grid: labels 0..2
    palette = np.asarray(Image.open(root / "Annotations" / "480p" / "seq" / "00000.png").getpalette(), dtype=np.uint8)
    ref_eval_video_tracking_davis(args, model, frames, tmp_path / "reference", first_seg, seg_ori, palette)

    features = ProtocolFrameFeatures(model.patch_features, 8, settings)
    scores = evaluate_davis(read_davis(root), features, settings, save_dir=tmp_path / "ours", progress=False)
    assert 0 <= scores["J&F"] <= 1
    for frame in frames:
        reference = np.asarray(Image.open(tmp_path / "reference" / f"{frame.stem}.png"))
        ours = np.asarray(Image.open(tmp_path / "ours" / "seq" / f"{frame.stem}.png"))
        assert reference.shape == ours.shape == ODD_SIZE
        np.testing.assert_array_equal(ours, reference, err_msg=frame.name)
    assert len(np.unique(reference)) > 1  # the objects are still there at the end


@pytest.mark.parametrize("size", [(37, 53), (53, 37), (45, 45), (40, 41), (150, 211)])
def test_dino_frames_are_prepared_as_read_frame_prepares_them(tmp_path, size):
    rng = np.random.default_rng(size[0] * 1000 + size[1])
    image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    path = tmp_path / "frame.png"
    Image.fromarray(image).save(path)
    reference, ori_h, ori_w = ref_read_frame(path, [96])
    ours = prepare_dino_frame(np.asarray(Image.open(path).convert("RGB")), 96)
    assert (ori_h, ori_w) == size and ours.dtype == torch.float32
    assert ours.shape == reference.shape
    assert torch.equal(ours, reference)


def test_opencv_resize_matches_opencv_itself_where_it_is_installed():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    davis = [((480, 854), (480, 832)), ((854, 480), (832, 480)), ((96, 170), (48, 85))]  # the last: OpenCV's 2x path
    random = [tuple(tuple(int(v) for v in rng.integers(1, top, 2)) for top in (90, 150)) for _ in range(50)]
    for src, dst in davis + random:
        image = rng.integers(0, 256, (*src, 3), dtype=np.uint8)
        np.testing.assert_array_equal(resize_bilinear_uint8(image, dst), cv2.resize(image, (dst[1], dst[0])))


def test_dino_first_mask_is_read_seg_on_the_patch_grid(tmp_path):
    label = np.zeros((53, 90), dtype=np.uint8)
    label[5:30, 10:40], label[30:50, 50:88], label[0:2, 0:2] = 1, 4, 6  # 6: too small for the grid
    path = tmp_path / "mask.png"
    Image.fromarray(label).save(path)
    reference, original = ref_read_seg(path, 8, [64])
    ours = dino_first_frame_labels(label, 64, 8)
    assert torch.equal(ours[None], reference) and ours.shape[0] == 5  # labels 0..4, 2 and 3 empty
    np.testing.assert_array_equal(original, label)


def test_dino_decoding_is_the_reference_post_processing_constant_channels_included():
    torch.manual_seed(0)
    soft = torch.rand(4, 5, 7)
    soft[1] = 0.0  # never positive: left as it is
    soft[2] = 0.25  # constant and positive: 0/0 in norm_mask, NaN, which torch.max then picks
    args = SimpleNamespace(patch_size=8)
    reference = ref_postprocess(args, soft.clone()[None], 45, 61)
    ours = dino_labels_to_mask(soft, 8, (45, 61))
    assert ours.dtype == np.uint8 and ours.shape == (45, 61)
    np.testing.assert_array_equal(ours, reference)
    soft[2] = torch.rand(5, 7)
    np.testing.assert_array_equal(dino_labels_to_mask(soft, 8, (45, 61)), ref_postprocess(args, soft.clone()[None], 45, 61))


def test_restrict_neighborhood_is_the_neighbourhood_mask():
    args = SimpleNamespace(size_mask_neighborhood=2)
    assert torch.equal(neighbourhood_mask((4, 6), 2).float(), ref_restrict_neighborhood(args, 4, 6))


def test_protocol_settings_and_overrides():
    assert PropagationSettings() == PropagationSettings("dino", 7, 5, 12, 0.1, 480)
    assert PropagationSettings().overridden == []
    old = PropagationSettings("paper-text")
    assert (old.context_frames, old.top_k, old.radius, old.temperature, old.short_side) == (20, 7, 12, 0.7, 480)
    tuned = PropagationSettings("dino", top_k=7, temperature=0.1)
    assert tuned.as_dict() == {
        "protocol": "dino", "context_frames": 7, "top_k": 7, "radius": 12, "temperature": 0.1, "short_side": 480,
        "overridden": ["top_k"],
    }
    assert set(DAVIS_PROTOCOLS) == {"dino", "paper-text"}
    with pytest.raises(ValueError, match="unknown DAVIS protocol 'dinov2'"):
        PropagationSettings("dinov2")


def test_eval_davis_cli_records_the_dino_protocol(tiny_model, tmp_path):
    root = write_davis(tmp_path / "DAVIS", {"squares": 4})
    out = tmp_path / "davis.json"
    argv = ["eval", "davis", "--model", str(tiny_model), "--davis-root", str(root), "--short-side", "64",
            "--top-k", "3", "--out", str(out), "--no-progress", "--save-masks", str(tmp_path / "masks")]
    assert cli_main(argv) == 0
    results = json.loads(out.read_text())
    assert results["settings"] == {
        "protocol": "dino", "context_frames": 7, "top_k": 3, "radius": 12, "temperature": 0.1, "short_side": 64,
        "overridden": ["top_k", "short_side"], "long_side_multiple": 64,
        "pixel_mean": [0.485, 0.456, 0.406], "pixel_std": [0.228, 0.224, 0.225],
        "features": "last-layer patch tokens (after the final LayerNorm)",
    }
    assert results["metrics"][0]["args"] == {
        "protocol": "dino", "context_frames": 7, "top_k": 3, "radius": 12, "temperature": 0.1,
    }
    assert 0.0 <= results["metrics"][0]["value"] <= 1.0
    saved = np.asarray(Image.open(tmp_path / "masks" / "squares" / "00003.png"))
    assert saved.shape == SIZE
    assert not list((tmp_path / "masks" / "squares").glob(".*"))  # no partial files left


def test_dino_protocol_refuses_what_its_reference_cannot_do(tiny_model, tmp_path, capsys):
    root = write_davis(tmp_path / "DAVIS", {"squares": 3})
    # 48x64 frames at a short side of 32: the long side floors to 0 (a multiple of 64).
    argv = ["eval", "davis", "--model", str(tiny_model), "--davis-root", str(root), "--short-side", "32",
            "--out", str(tmp_path / "x.json"), "--no-progress"]
    assert cli_main(argv) == 2
    assert "--short-side 32: DINO's protocol resizes a 48x64 frame to 32x0" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()
    argv[argv.index("--short-side") + 1] = "64"
    assert cli_main([*argv, "--temperature", "0"]) == 2
    assert "--protocol dino --temperature 0.0 --short-side 64: invalid propagation settings" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()
    # A square frame: read_frame makes it 72 x 64 (height x width), read_seg 64 x 72.
    square = tmp_path / "square"
    (square / "JPEGImages" / "480p" / "sq").mkdir(parents=True)
    (square / "Annotations" / "480p" / "sq").mkdir(parents=True)
    for t in range(2):
        Image.fromarray(np.zeros((40, 40, 3), dtype=np.uint8)).save(square / "JPEGImages" / "480p" / "sq" / f"{t:05d}.jpg")
        Image.fromarray(np.eye(40, dtype=np.uint8)).save(square / "Annotations" / "480p" / "sq" / f"{t:05d}.png")
    model = PatchProjection()
    with pytest.raises(DoraUserError, match="square"):
        evaluate_davis(read_davis(square, sequences=["sq"]), ProtocolFrameFeatures(model.patch_features, 8,
                       PropagationSettings(short_side=72)), PropagationSettings(short_side=72), progress=False)
