"""`dora-hf eval corloc`: LOST's boxes against a plain transcription of valeoai/LOST's
``object_discovery.py`` (``lost``, ``patch_scoring``, ``detect_box``) and ``datasets.py``
(``bbox_iou``), CorLoc on synthetic VOC folders with known answers, the VOC07/VOC12/COCO20k
layouts, the CLI end to end with a tiny DoRA model against LOST's feature extraction, and the
errors of bad input."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from dora_tiny import save_tiny_dora
from PIL import Image
from transformers import AutoModel

from dora_hf.cli import main as cli_main
from dora_hf.errors import DoraUserError
from dora_hf.evaluation.corloc.datasets import read_coco20k, read_dataset, read_voc
from dora_hf.evaluation.corloc.evaluate import evaluate_corloc
from dora_hf.evaluation.corloc.lost import lost
from dora_hf.evaluation.corloc.scoring import box_iou, localizes

# ---------------------------------------------------------------------------------------------
# valeoai/LOST, transcribed as in its code (object_discovery.py, datasets.py, main_lost.py).


def reference_lost(feats, dims, scales, init_image_size, k_patches=100):
    A = (feats @ feats.transpose(1, 2)).squeeze()
    sorted_patches, _scores = reference_patch_scoring(A)
    seed = sorted_patches[0]
    potentials = sorted_patches[:k_patches]
    similars = potentials[A[seed, potentials] > 0.0]
    M = torch.sum(A[similars, :], dim=0)
    pred, pred_feats = reference_detect_box(M, seed, dims, scales=scales, initial_im_size=init_image_size[1:])
    return np.asarray(pred), pred_feats, seed


def reference_patch_scoring(M, threshold=0.0):
    A = M.clone()
    A.fill_diagonal_(0)
    A[A < 0] = 0
    cent = -torch.sum(A > threshold, dim=1).type(torch.float32)
    sel = torch.argsort(cent, descending=True)
    return sel, cent


def reference_detect_box(A, seed, dims, initial_im_size=None, scales=None):
    ndimage = pytest.importorskip("scipy.ndimage")  # LOST's connected components
    w_featmap, h_featmap = dims
    correl = A.reshape(w_featmap, h_featmap).float()
    labeled_array, _num_features = ndimage.label(correl.cpu().numpy() > 0.0)
    cc = labeled_array[np.unravel_index(seed.cpu().numpy(), (w_featmap, h_featmap))]
    if cc == 0:
        raise ValueError("The seed is in the background component.")
    mask = np.where(labeled_array == cc)
    ymin, ymax = min(mask[0]), max(mask[0]) + 1
    xmin, xmax = min(mask[1]), max(mask[1]) + 1
    r_xmin, r_xmax = scales[1] * xmin, scales[1] * xmax
    r_ymin, r_ymax = scales[0] * ymin, scales[0] * ymax
    pred = [r_xmin, r_ymin, r_xmax, r_ymax]
    if initial_im_size:
        pred[2] = min(pred[2], initial_im_size[1])
        pred[3] = min(pred[3], initial_im_size[0])
    pred_feats = [ymin, xmin, ymax, xmax]
    return pred, pred_feats


def reference_bbox_iou(box1, box2, eps=1e-7):
    box2 = box2.T
    b1_x1, b1_y1, b1_x2, b1_y2 = box1[0], box1[1], box1[2], box1[3]
    b2_x1, b2_y1, b2_x2, b2_y2 = box2[0], box2[1], box2[2], box2[3]
    inter = (torch.min(b1_x2, b2_x2) - torch.max(b1_x1, b2_x1)).clamp(0) * (
        torch.min(b1_y2, b2_y2) - torch.max(b1_y1, b2_y1)
    ).clamp(0)
    w1, h1 = b1_x2 - b1_x1, b1_y2 - b1_y1 + eps
    w2, h2 = b2_x2 - b2_x1, b2_y2 - b2_y1 + eps
    union = w1 * h1 + w2 * h2 - inter + eps
    return inter / union


def reference_transform(path: Path) -> torch.Tensor:
    """torchvision's ``ToTensor()`` then ``Normalize`` with LOST's values, on the RGB image."""
    pic = Image.open(path).convert("RGB")
    img = torch.from_numpy(np.array(pic, np.uint8, copy=True)).view(pic.size[1], pic.size[0], 3)
    img = img.permute((2, 0, 1)).contiguous().to(dtype=torch.float32).div(255)
    mean = torch.as_tensor((0.485, 0.456, 0.406), dtype=torch.float32)
    std = torch.as_tensor((0.229, 0.224, 0.225), dtype=torch.float32)
    return img.sub_(mean[:, None, None]).div_(std[:, None, None])


def reference_main_lost(model, path: Path, gt_bbxs: np.ndarray, patch_size: int, k_patches: int = 100):
    """``main_lost.py``'s loop body for one image: padding, the qkv hook, ``k[:, 1:]``, LOST, IoU."""
    img = reference_transform(path)
    init_image_size = img.shape
    size_im = (
        img.shape[0],
        int(np.ceil(img.shape[1] / patch_size) * patch_size),
        int(np.ceil(img.shape[2] / patch_size) * patch_size),
    )
    paded = torch.zeros(size_im)
    paded[:, : img.shape[1], : img.shape[2]] = img
    img = paded
    w_featmap = img.shape[-2] // patch_size
    h_featmap = img.shape[-1] // patch_size
    feat_out = {}

    def hook_fn_forward_qkv(module, input, output):
        feat_out["qkv"] = output

    hook = model.encoder.layer[-1].attention.qkv.register_forward_hook(hook_fn_forward_qkv)
    with torch.no_grad():
        model(pixel_values=img[None, :, :, :], interpolate_pos_encoding=True)
    hook.remove()
    nh = model.config.num_attention_heads
    nb_im, nb_tokens = feat_out["qkv"].shape[:2]
    qkv = feat_out["qkv"].reshape(nb_im, nb_tokens, 3, nh, -1 // nh).permute(2, 0, 3, 1, 4)
    k = qkv[1].transpose(1, 2).reshape(nb_im, nb_tokens, -1)
    feats = k[:, 1:, :]
    pred, _, _ = reference_lost(feats, [w_featmap, h_featmap], [patch_size, patch_size], init_image_size, k_patches)
    ious = reference_bbox_iou(torch.from_numpy(pred), torch.from_numpy(gt_bbxs))
    return pred, bool(torch.any(ious >= 0.5))


# ---------------------------------------------------------------------------------------------
# LOST itself


def assert_same_as_reference(keys: torch.Tensor, grid, patch, image_hw, k_patches) -> None:
    pred, pred_feats, seed = reference_lost(keys[None], list(grid), [patch, patch], (3, *image_hw), k_patches)
    mine = lost(keys, grid, patch, image_hw, k_patches=k_patches)
    assert list(mine.box) == pred.tolist()
    assert list(mine.patch_box) == [int(v) for v in pred_feats]
    assert mine.seed == int(seed)


@pytest.mark.parametrize("seed", range(12))
def test_lost_matches_reference_on_random_keys(seed):
    generator = torch.Generator().manual_seed(seed)
    rows, cols = (int(v) for v in torch.randint(3, 24, (2,), generator=generator))
    dim = int(torch.randint(2, 40, (1,), generator=generator))
    keys = torch.randn(rows * cols, dim, generator=generator) + 0.3 * torch.randn(1, dim, generator=generator)
    patch = (8, 14, 16)[seed % 3]
    image_hw = (rows * patch - seed % patch, cols * patch - (3 * seed) % patch)
    for k_patches in (1, 7, 100, rows * cols + 5):
        assert_same_as_reference(keys, (rows, cols), patch, image_hw, k_patches)


@pytest.mark.parametrize("seed", range(6))
def test_lost_matches_reference_on_structured_keys(seed):
    """Clustered keys (many equal degrees: the tie order matters) and objects of several blobs."""
    generator = torch.Generator().manual_seed(100 + seed)
    rows, cols = 14, 19
    centres = torch.randn(4, 16, generator=generator)
    labels = torch.zeros(rows, cols, dtype=torch.long)
    labels[2:6, 3:8] = 1
    labels[9:13, 10 + seed : 12 + seed] = 2
    labels[7, :] = 3 if seed % 2 else 0
    labels[0, 0] = 1  # a separate blob of the object's cluster
    keys = centres[labels.flatten()]
    if seed >= 3:
        keys = keys + 0.05 * torch.randn(keys.shape, generator=generator)
    for k_patches in (1, 10, 100):
        assert_same_as_reference(keys, (rows, cols), 16, (rows * 16 - 5, cols * 16), k_patches)


def test_lost_finds_the_small_object_and_clips_to_the_image():
    rows, cols, patch = 6, 8, 8
    keys = torch.tensor([1.0, 0.0]).repeat(rows * cols, 1)
    object_patches = [(r, c) for r in (4, 5) for c in (6, 7)]
    for r, c in object_patches:
        keys[r * cols + c] = torch.tensor([-1.0, 1.0])
    found = lost(keys, (rows, cols), patch, (45, 61))
    assert found.patch_box == (4, 6, 6, 8)
    assert found.box == (48, 32, 61, 45)  # 64 and 48 clipped to the image's width and height
    assert divmod(found.seed, cols) in object_patches


def test_a_seed_outside_the_mask_is_losts_error():
    keys = torch.zeros(12, 4)
    with pytest.raises(ValueError, match="background component"):
        reference_lost(keys[None], [3, 4], [8, 8], (3, 24, 32))
    with pytest.raises(ValueError, match="background component"):
        lost(keys, (3, 4), 8, (24, 32))


def test_box_iou_matches_losts_bbox_iou_including_the_boundary():
    generator = torch.Generator().manual_seed(0)
    corners = torch.randint(0, 60, (200, 2, 2), generator=generator)
    boxes = torch.cat([corners.min(dim=1).values, corners.max(dim=1).values + 1], dim=1)
    for box in boxes[:20]:
        assert torch.equal(box_iou(box, boxes), reference_bbox_iou(box, boxes))
    # Half of a 10x10 box: IoU 0.5 up to LOST's eps, on the same side of the threshold as LOST.
    half = torch.tensor([[0, 0, 10, 5]])
    expected = bool(torch.any(reference_bbox_iou(torch.tensor([0, 0, 10, 10]), half) >= 0.5))
    assert localizes((0, 0, 10, 10), [[0, 0, 10, 5]]) == (expected, pytest.approx(0.5, abs=1e-6))
    assert localizes((0, 0, 10, 10), [[50, 50, 60, 60], [1, 1, 10, 10]])[0]
    assert not localizes((0, 0, 10, 10), [[0, 0, 4, 10]])[0]


# ---------------------------------------------------------------------------------------------
# Dataset folders

BACKGROUND = (40, 60, 200)
RED = (220, 40, 40)


def draw(size: tuple[int, int], objects: list[tuple[int, int, int, int]]) -> np.ndarray:
    """Blue image of `(height, width)` with red rectangles ``(x1, y1, x2, y2)`` (max excluded)."""
    image = np.empty((*size, 3), dtype=np.uint8)
    image[:] = BACKGROUND
    for x1, y1, x2, y2 in objects:
        image[y1:y2, x1:x2] = RED
    return image


def voc_xml(filename: str, objects: list[dict]) -> str:
    parts = [f"<annotation><folder>VOC</folder><filename>{filename}</filename>"]
    for obj in objects:
        xmin, ymin, xmax, ymax = obj["bndbox"]
        parts.append(
            f"<object><name>{obj.get('name', 'thing')}</name><truncated>{obj.get('truncated', 0)}</truncated>"
            f"<difficult>{obj.get('difficult', 0)}</difficult><bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin>"
            f"<xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>"
        )
    return "".join(parts) + "</annotation>"


def write_voc(folder: Path, images: dict[str, tuple[np.ndarray, list[dict]]], split: str = "trainval") -> Path:
    """A VOC folder: `images` maps an id to its pixels and its objects (1-based inclusive bndbox)."""
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for image_id, (pixels, objects) in images.items():
        Image.fromarray(pixels).save(folder / "JPEGImages" / f"{image_id}.jpg", quality=100, subsampling=0)
        (folder / "Annotations" / f"{image_id}.xml").write_text(voc_xml(f"{image_id}.jpg", objects))
    (folder / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in images))
    return folder


def known_voc(folder: Path) -> Path:
    """Four images, objects on the 8-px grid; LOST with `red_keys` localises three of them."""
    return write_voc(folder, {
        # Found: the drawn square is the annotated object.
        "000010": (draw((48, 64), [(8, 16, 24, 32)]), [{"bndbox": (9, 17, 24, 32)}]),
        # Found: image not a multiple of 8, object in the corner; the box is clipped to 61x45.
        "000003": (draw((45, 61), [(48, 32, 61, 45)]), [{"bndbox": (49, 33, 61, 45), "truncated": 1}]),
        # Missed: the annotation is elsewhere than the drawn object.
        "000007": (draw((40, 40), [(0, 0, 8, 16)]), [{"bndbox": (25, 25, 40, 40)}]),
        # Found: of two objects, the one hit is marked difficult (LOST counts it).
        "000001": (
            draw((32, 48), [(32, 8, 48, 24)]),
            [{"bndbox": (1, 1, 10, 10)}, {"bndbox": (33, 9, 48, 24), "difficult": 1}],
        ),
    })


def red_keys(padded: torch.Tensor, patch: int = 8) -> torch.Tensor:
    """Constructed keys: `(-1, 1)` for a patch with any red pixel, `(1, 0)` for the rest.

    Object patches are similar only to each other, so they have the lowest degree and LOST's
    box is exactly the red patches' bounding box.
    """
    _, height, width = padded.shape
    red = padded[0] > 0.5  # normalised red channel: 220 -> 1.65, 40 -> -1.43, padding 0
    patches = red.reshape(height // patch, patch, width // patch, patch).any(dim=3).any(dim=1).flatten()
    keys = torch.tensor([1.0, 0.0]).repeat(patches.numel(), 1)
    keys[patches] = torch.tensor([-1.0, 1.0])
    return keys


def test_corloc_on_a_synthetic_voc_folder_with_known_answers(tmp_path):
    dataset = read_voc(known_voc(tmp_path / "VOC2007"), "2007")
    run = evaluate_corloc(dataset, red_keys, 8, progress=False)
    assert (run.num_images, run.num_correct, run.corloc) == (4, 3, 0.75)
    boxes = {name: p["box"] for name, p in run.predictions.items()}
    assert boxes == {
        "000010.jpg": [8, 16, 24, 32],
        "000003.jpg": [48, 32, 61, 45],
        "000007.jpg": [0, 0, 8, 16],
        "000001.jpg": [32, 8, 48, 24],
    }
    assert [p["correct"] for p in run.predictions.values()] == [True, True, False, True]
    assert run.predictions["000010.jpg"]["iou"] == pytest.approx(1.0)


def test_voc07_and_voc12_layouts(tmp_path):
    objects = [{"bndbox": (1, 2, 30, 20), "difficult": 1}, {"bndbox": (5, 6, 7, 8), "truncated": 1}]
    images = {"b": (draw((24, 32), []), objects), "a": (draw((24, 32), []), objects[:1])}
    voc07 = write_voc(tmp_path / "voc07", images)
    dataset = read_dataset("voc07", voc07, "trainval")
    assert dataset.name == "VOC07" and dataset.split == "trainval"
    assert [i.name for i in dataset.images] == ["b.jpg", "a.jpg"]  # the list's order
    assert dataset.images[0].boxes == ((0, 1, 30, 20), (4, 5, 7, 8))  # every object, 1-based to 0-based
    assert dataset.images[0].path == voc07 / "JPEGImages" / "b.jpg"
    # VOC12 inside torchvision's VOCdevkit/VOC2012 layout, another split, and --max-images.
    write_voc(tmp_path / "voc12" / "VOCdevkit" / "VOC2012", images, split="val")
    dataset = read_dataset("voc12", tmp_path / "voc12", "val", max_images=1)
    assert dataset.name == "VOC12" and dataset.split == "val"
    assert [(i.name, i.boxes) for i in dataset.images] == [("b.jpg", ((0, 1, 30, 20), (4, 5, 7, 8)))]


def coco_json(images: dict[int, str], annotations: list[tuple[int, list[float], int]]) -> dict:
    return {
        "images": [{"id": i, "file_name": name, "width": 32, "height": 24} for i, name in images.items()],
        "annotations": [
            {"id": n, "image_id": i, "bbox": bbox, "iscrowd": crowd, "category_id": 1}
            for n, (i, bbox, crowd) in enumerate(annotations)
        ],
        "categories": [{"id": 1, "name": "thing"}],
    }


def write_coco(root: Path, annotations: list | None = None, listed: tuple[int, ...] = (42, 7)) -> Path:
    """A COCO folder (annotations/instances_train2014.json, images/train2014/) and a COCO20k list."""
    names = {i: f"COCO_train2014_{i:012d}.jpg" for i in (7, 42, 99)}
    (root / "annotations").mkdir(parents=True)
    (root / "images" / "train2014").mkdir(parents=True)
    for name in names.values():
        Image.fromarray(draw((24, 32), [])).save(root / "images" / "train2014" / name)
    if annotations is None:
        annotations = [
            (42, [10.5, 2.5, 5.0, 3.49], 0),  # int(round()) of 10.5, 2.5, 15.5, 5.99: 10, 2, 16, 6
            (7, [0, 0, 32, 24], 1),  # a crowd region: dropped
            (7, [1.2, 3.7, 10.0, 10.0], 0),
            (99, [0, 0, 5, 5], 0),  # not in the list
            (42, [0.0, 0.0, 1.0, 1.0], 0),
        ]
    (root / "annotations" / "instances_train2014.json").write_text(json.dumps(coco_json(names, annotations)))
    (root / "coco_20k_filenames.txt").write_text("".join(f"train2014/{names[i]}\n" for i in listed))
    return root


def test_coco20k_layout(tmp_path):
    root = write_coco(tmp_path / "COCO")
    dataset = read_dataset("coco20k", root, "train")
    assert dataset.name == "COCO20k"
    assert [i.name for i in dataset.images] == ["7", "42"]  # increasing ids, as CocoDetection
    assert dataset.images[0].boxes == ((1, 4, 11, 14),)
    assert dataset.images[1].boxes == ((10, 2, 16, 6), (0, 0, 1, 1))
    assert dataset.images[1].path == root / "images" / "train2014" / "COCO_train2014_000000000042.jpg"
    assert dataset.details["image_list_size"] == 2 and dataset.details["image_list_is_lost"] is False
    # The list elsewhere, and --max-images.
    moved = tmp_path / "list.txt"
    (root / "coco_20k_filenames.txt").rename(moved)
    dataset = read_coco20k(root / "annotations" / "instances_train2014.json", root / "images" / "train2014", moved,
                           max_images=1)
    assert [i.name for i in dataset.images] == ["7"]


# ---------------------------------------------------------------------------------------------
# Bad input: one clear line, nothing written


def voc_with(tmp_path: Path, change) -> Path:
    root = known_voc(tmp_path / "VOC")
    change(root)
    return root


BAD_VOC = {
    "missing annotation": (
        lambda root: (root / "Annotations" / "000007.xml").unlink(), "000007.xml: annotation file not found"
    ),
    "no boxes": (
        lambda root: (root / "Annotations" / "000007.xml").write_text(voc_xml("000007.jpg", [])),
        "image 000007.jpg has no ground-truth boxes",
    ),
    "missing image": (lambda root: (root / "JPEGImages" / "000003.jpg").unlink(), "000003.jpg: image listed in"),
    "malformed xml": (
        lambda root: (root / "Annotations" / "000001.xml").write_text("<annotation><filename>x"),
        "000001.xml: malformed XML",
    ),
    "non-integer box": (
        lambda root: (root / "Annotations" / "000001.xml").write_text(voc_xml("1.jpg", [{"bndbox": (1, 2, "x", 4)}])),
        "000001.xml: malformed VOC annotation",
    ),
    "missing split": (lambda root: (root / "ImageSets" / "Main" / "trainval.txt").unlink(), "no list of the 'trainval'"),
}


@pytest.mark.parametrize("case", BAD_VOC, ids=list(BAD_VOC))
def test_bad_voc_input_is_one_clear_line(case, tmp_path, capsys):
    change, message = BAD_VOC[case]
    root = voc_with(tmp_path, change)
    with pytest.raises(DoraUserError, match=message):
        read_voc(root, "2007")
    out, boxes = tmp_path / "out.json", tmp_path / "boxes.json"
    argv = ["eval", "corloc", "--model", "nowhere", "--dataset", "voc07", "--data-root", str(root),
            "--out", str(out), "--save-boxes", str(boxes), "--no-progress"]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not out.exists() and not boxes.exists()


def broken_json(root: Path) -> None:
    (root / "annotations" / "instances_train2014.json").write_text('{"images": [')


BAD_COCO = {
    "missing annotation file": (lambda root: (root / "annotations" / "instances_train2014.json").unlink(),
                                "COCO annotation file not found"),
    "malformed json": (broken_json, "instances_train2014.json: malformed JSON"),
    "not coco": (lambda root: (root / "annotations" / "instances_train2014.json").write_text("[1, 2]"),
                 "malformed COCO JSON"),
    "crowd only": (lambda root: None, "image 7 has no ground-truth boxes (crowd regions excluded)"),
    "missing image": (
        lambda root: (root / "images" / "train2014" / "COCO_train2014_000000000042.jpg").unlink(),
        "COCO_train2014_000000000042.jpg: image 42 of",
    ),
    "missing list": (lambda root: (root / "coco_20k_filenames.txt").unlink(), "COCO20k image list not found"),
    "listed image not in the json": (
        lambda root: (root / "coco_20k_filenames.txt").write_text("train2014/COCO_train2014_000000000005.jpg\n"),
        "1 image(s) of",
    ),
}


@pytest.mark.parametrize("case", BAD_COCO, ids=list(BAD_COCO))
def test_bad_coco_input_is_one_clear_line(case, tmp_path, capsys):
    change, message = BAD_COCO[case]
    annotations = [(7, [0, 0, 32, 24], 1), (42, [1, 1, 5, 5], 0)] if case == "crowd only" else None
    root = write_coco(tmp_path / "COCO", annotations)
    change(root)
    with pytest.raises(DoraUserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_dataset("coco20k", root, "train")
    out = tmp_path / "out.json"
    argv = ["eval", "corloc", "--model", "nowhere", "--dataset", "coco20k", "--data-root", str(root),
            "--out", str(out), "--no-progress"]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not out.exists()


def test_bad_options_are_clear_errors(tmp_path, capsys):
    root = known_voc(tmp_path / "VOC")
    base = ["eval", "corloc", "--model", "nowhere", "--dataset", "voc07", "--data-root", str(root),
            "--out", str(tmp_path / "out.json")]
    for extra, message in (
        (["--k-patches", "0"], "--k-patches 0: must be at least 1"),
        (["--max-images", "0"], "--max-images 0: must be at least 1"),
        (["--save-boxes", str(tmp_path)], "is a folder"),
    ):
        assert cli_main(base + extra) == 2
        assert message in capsys.readouterr().err
    with pytest.raises(DoraUserError, match="COCO20k is a subset of COCO train2014"):
        read_dataset("coco20k", tmp_path, "val")
    with pytest.raises(DoraUserError, match="not a VOC2012 folder"):
        read_dataset("voc12", tmp_path, "trainval")
    assert not (tmp_path / "out.json").exists()


# ---------------------------------------------------------------------------------------------
# The command end to end


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return save_tiny_dora(tmp_path_factory.mktemp("model") / "tiny-dora")


def test_eval_corloc_cli_matches_losts_pipeline(tiny_model, tmp_path):
    """Boxes and CorLoc of the command equal LOST's own pipeline (transform, padding, qkv hook, k[:, 1:])."""
    rng = np.random.default_rng(0)
    images = {}
    for n, (height, width) in enumerate([(40, 56), (45, 61), (32, 32), (27, 50), (64, 40)]):
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        pixels[height // 4 : height // 2, width // 3 : width // 2] = RED
        x1, y1 = int(rng.integers(1, width // 2)), int(rng.integers(1, height // 2))
        images[f"{n:06d}"] = (pixels, [{"bndbox": (x1, y1, width - int(rng.integers(0, 8)), height)}])
    root = write_voc(tmp_path / "VOC", images)
    out, boxes = tmp_path / "corloc.json", tmp_path / "boxes.json"
    argv = ["eval", "corloc", "--model", str(tiny_model), "--dataset", "voc07", "--data-root", str(root),
            "--save-boxes", str(boxes), "--out", str(out), "--no-progress"]
    assert cli_main(argv) == 0

    model = AutoModel.from_pretrained(tiny_model).eval()
    expected_boxes, expected_correct = {}, 0
    for image_id, (_, objects) in images.items():
        gt = np.asarray([[o["bndbox"][0] - 1, o["bndbox"][1] - 1, o["bndbox"][2], o["bndbox"][3]] for o in objects])
        pred, hit = reference_main_lost(model, root / "JPEGImages" / f"{image_id}.jpg", gt, 8)
        expected_boxes[f"{image_id}.jpg"] = pred.tolist()
        expected_correct += hit

    saved = json.loads(boxes.read_text())
    assert saved["protocol"] == "lost" and saved["dataset"] == "VOC07"
    assert {name: p["box"] for name, p in saved["images"].items()} == expected_boxes
    results = json.loads(out.read_text())
    assert results["task"] == "corloc" and results["dataset"]["num_images"] == 5
    assert results["metrics"][0]["type"] == "corloc"
    assert results["metrics"][0]["value"] == expected_correct / 5
    assert results["settings"]["protocol"] == "lost" and results["settings"]["k_patches"] == 100
    assert results["details"]["num_correct"] == expected_correct


RUN_CLI = textwrap.dedent(
    """
    import json, sys
    from dora_hf.cli import main
    try:
        code = main(sys.argv[1:])
    except SystemExit as exit:
        code = exit.code
    heavy = sorted(name for name in ("torch", "transformers") if name in sys.modules)
    print("REPORT " + json.dumps({"code": code, "heavy": heavy}))
    """
)


def test_help_imports_neither_torch_nor_transformers():
    result = subprocess.run(
        [sys.executable, "-c", RUN_CLI, "eval", "corloc", "--help"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    report = json.loads(next(line for line in result.stdout.splitlines() if line.startswith("REPORT "))[7:])
    assert report == {"code": 0, "heavy": []}, result.stdout + result.stderr
    assert "usage: dora-hf eval corloc" in result.stdout and "--k-patches" in result.stdout
