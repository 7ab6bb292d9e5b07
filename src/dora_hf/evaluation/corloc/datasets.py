"""The images and ground-truth boxes of LOST's object-discovery datasets: VOC07, VOC12, COCO20k.

Follows valeoai/LOST ``datasets.py`` in its default setup (``remove_hards=False``, the one
behind its CorLoc numbers), which reads the datasets through torchvision's ``VOCDetection`` and
``CocoDetection``:

- VOC (``extract_gt_VOC``): the images listed in ``ImageSets/Main/<split>.txt`` (``trainval``),
  in that order, read from ``JPEGImages/<id>.jpg``, with ``Annotations/<id>.xml``; *every*
  object counts, ``difficult`` and ``truncated`` ones included; a box is
  ``[xmin - 1, ymin - 1, xmax, ymax]`` of the integer ``bndbox`` (1-based inclusive pixels to
  0-based, max excluded); an image is named by the annotation's ``<filename>``.
  LOST's ``--no_hard`` setup ("VOC_all" in its paper) drops difficult/truncated objects and
  skips the images left without any; it is not this protocol and is not offered.
- COCO20k (``select_coco_20k``, ``extract_gt_COCO``): the train2014 images whose ids
  (``int(name.split("_")[-1].split(".")[0])``) are in LOST's ``datasets/coco_20k_filenames.txt``
  (19,817 images), read through ``annotations/instances_train2014.json`` from
  ``images/train2014/<file_name>``, in increasing id order (``CocoDetection`` sorts them);
  ``iscrowd == 1`` annotations are dropped (``remove_iscrowd=True``); a box is
  ``[x, y, x + w, y + h]``, each rounded with Python's ``int(round(v))``; an image is named by
  its id.

An image without any ground-truth box after this has no CorLoc in LOST: its evaluation loop
stops on it (``bbox_iou`` of an empty array), so here it is an error naming the image, before
any model is loaded, as are a missing split list, annotation file or image, and a malformed
XML or JSON. A listed COCO20k image absent from the JSON (which LOST would silently leave out)
is an error too: it means the wrong annotation file.
"""

from __future__ import annotations

import hashlib
import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import DoraUserError
from .protocol import COCO20K_IDS_SHA256, COCO20K_LIST_NAME, DATASET_NAMES, VOC_YEARS

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class GroundTruthImage:
    """One image and the boxes LOST counts in it."""

    name: str
    """LOST's name of the image: the VOC annotation's ``<filename>``, the COCO image id."""
    path: Path
    boxes: tuple[Box, ...]
    """``(x1, y1, x2, y2)`` integer pixels, max excluded."""


@dataclass(frozen=True)
class DiscoveryDataset:
    """The images of one split, in LOST's order, and what identifies them."""

    name: str
    root: Path
    split: str
    images: list[GroundTruthImage]
    details: dict = field(default_factory=dict)


def read_dataset(
    dataset: str, data_root: Path, split: str, *, coco20k_list: Path | None = None, max_images: int | None = None
) -> DiscoveryDataset:
    """``--dataset voc07|voc12|coco20k`` under ``--data-root``."""
    if dataset in VOC_YEARS:
        return read_voc(data_root, VOC_YEARS[dataset], split, max_images=max_images)
    if dataset == "coco20k":
        if split != "train":
            raise DoraUserError(f"--split {split}: COCO20k is a subset of COCO train2014; its split is 'train'")
        data_root = Path(data_root)
        return read_coco20k(
            data_root / "annotations" / "instances_train2014.json",
            data_root / "images" / "train2014",
            coco20k_list or data_root / COCO20K_LIST_NAME,
            max_images=max_images,
            root=data_root,
        )
    raise DoraUserError(f"--dataset {dataset}: unknown; choose one of voc07, voc12, coco20k")


def voc_folder(root: Path, year: str) -> Path:
    """The folder holding ``Annotations/``: `root` itself, or torchvision's ``root/VOCdevkit/VOC<year>``."""
    root = Path(root)
    for folder in (root, root / "VOCdevkit" / f"VOC{year}"):
        if (folder / "Annotations").is_dir():
            return folder
    if not root.is_dir():
        raise DoraUserError(f"{root}: no such folder")
    raise DoraUserError(
        f"{root}: not a VOC{year} folder (no Annotations/ in it nor in VOCdevkit/VOC{year}/); "
        "expected JPEGImages/, Annotations/ and ImageSets/Main/"
    )


def read_voc(root: Path, year: str, split: str = "trainval", *, max_images: int | None = None) -> DiscoveryDataset:
    """A VOC2007/VOC2012 split: its images in list order and all their objects' boxes."""
    folder = voc_folder(root, year)
    split_file = folder / "ImageSets" / "Main" / f"{split}.txt"
    if not split_file.is_file():
        available = sorted(p.stem for p in split_file.parent.glob("*.txt") if "_" not in p.stem)
        raise DoraUserError(
            f"{split_file}: no list of the {split!r} images"
            + (f"; available: {', '.join(available)}" if available else " (no ImageSets/Main/ lists at all)")
        )
    ids = [line.strip() for line in split_file.read_text().splitlines() if line.strip()]
    if not ids:
        raise DoraUserError(f"{split_file}: lists no images")
    if max_images is not None:
        ids = ids[:max_images]
    images = []
    for image_id in ids:
        path = folder / "JPEGImages" / f"{image_id}.jpg"
        if not path.is_file():
            raise DoraUserError(f"{path}: image listed in {split_file} not found")
        name, boxes = read_voc_annotation(folder / "Annotations" / f"{image_id}.xml")
        images.append(GroundTruthImage(name=name, path=path, boxes=boxes))
    return DiscoveryDataset(name=f"VOC{year[2:]}", root=folder, split=split, images=images)


def read_voc_annotation(path: Path) -> tuple[str, tuple[Box, ...]]:
    """An annotation's ``<filename>`` and the boxes of all its objects (LOST's ``extract_gt_VOC``)."""
    if not path.is_file():
        raise DoraUserError(f"{path}: annotation file not found")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise DoraUserError(f"{path}: malformed XML ({err})") from err
    if root.tag != "annotation":
        raise DoraUserError(f"{path}: malformed VOC annotation (root element <{root.tag}>, not <annotation>)")
    filename = root.findtext("filename")
    if not filename or not filename.strip():
        raise DoraUserError(f"{path}: malformed VOC annotation (no <filename>)")
    boxes = []
    for index, obj in enumerate(root.findall("object")):
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise DoraUserError(f"{path}: malformed VOC annotation (object {index} has no <bndbox>)")
        try:
            xmin, ymin, xmax, ymax = (int(bndbox.findtext(key)) for key in ("xmin", "ymin", "xmax", "ymax"))
        except (TypeError, ValueError) as err:
            raise DoraUserError(
                f"{path}: malformed VOC annotation (object {index}: <bndbox> needs integer xmin, ymin, xmax, ymax)"
            ) from err
        # 1-based inclusive pixel indices to 0-based coordinates with the max excluded.
        boxes.append((xmin - 1, ymin - 1, xmax, ymax))
    if not boxes:
        raise DoraUserError(
            f"{path}: image {filename.strip()} has no ground-truth boxes; LOST's CorLoc counts every image "
            "of the split and has none for an image without objects"
        )
    return filename.strip(), tuple(boxes)


def coco20k_ids(image_list: Path) -> list[int]:
    """The image ids of a COCO20k list (``train2014/COCO_train2014_000000560992.jpg`` per line)."""
    if not Path(image_list).is_file():
        raise DoraUserError(
            f"{image_list}: COCO20k image list not found; it is LOST's datasets/{COCO20K_LIST_NAME} "
            "(github.com/valeoai/LOST), pass it with --coco20k-list"
        )
    ids = []
    for number, line in enumerate(Path(image_list).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            ids.append(int(line.strip().split("_")[-1].split(".")[0]))
        except ValueError as err:
            raise DoraUserError(
                f"{image_list}:{number}: not a COCO file name ({line.strip()!r}, expected ..._<id>.jpg)"
            ) from err
    if not ids:
        raise DoraUserError(f"{image_list}: lists no images")
    return ids


def read_coco20k(
    annotations: Path,
    image_dir: Path,
    image_list: Path,
    *,
    max_images: int | None = None,
    root: Path | None = None,
) -> DiscoveryDataset:
    """The COCO20k images (ids in `image_list`) with their non-crowd boxes, in increasing id order."""
    listed = sorted(set(coco20k_ids(image_list)))
    instances = _read_instances(Path(annotations))
    files = {}
    for entry in instances["images"]:
        if not isinstance(entry, dict) or "id" not in entry or "file_name" not in entry:
            raise DoraUserError(f"{annotations}: malformed COCO JSON (an image entry without id or file_name)")
        files[entry["id"]] = entry["file_name"]
    absent = [image_id for image_id in listed if image_id not in files]
    if absent:
        raise DoraUserError(
            f"{annotations}: {len(absent)} image(s) of {image_list} are not in it (e.g. id {absent[0]}); "
            "COCO20k needs COCO's instances_train2014.json"
        )
    selected = listed[:max_images] if max_images is not None else listed
    by_image: dict[int, list[dict]] = {image_id: [] for image_id in selected}
    for ann in instances["annotations"]:
        if not isinstance(ann, dict) or "image_id" not in ann:
            raise DoraUserError(f"{annotations}: malformed COCO JSON (an annotation without image_id)")
        if ann["image_id"] in by_image:
            by_image[ann["image_id"]].append(ann)
    images = []
    for image_id in selected:
        path = Path(image_dir) / files[image_id]
        if not path.is_file():
            raise DoraUserError(f"{path}: image {image_id} of {image_list} not found")
        boxes = tuple(_coco_box(annotations, image_id, ann) for ann in by_image[image_id] if _is_kept(annotations, ann))
        if not boxes:
            raise DoraUserError(
                f"{annotations}: image {image_id} has no ground-truth boxes (crowd regions excluded); LOST's "
                "CorLoc counts every image of the split and has none for an image without objects"
            )
        images.append(GroundTruthImage(name=str(image_id), path=path, boxes=boxes))
    digest = hashlib.sha256("\n".join(map(str, listed)).encode()).hexdigest()
    return DiscoveryDataset(
        name=DATASET_NAMES["coco20k"],
        root=Path(root) if root is not None else Path(image_dir),
        split="train",
        images=images,
        details={
            "image_list": str(image_list),
            "image_list_size": len(listed),
            "image_list_is_lost": digest == COCO20K_IDS_SHA256,
            "annotations": str(annotations),
        },
    )


def _read_instances(path: Path) -> dict:
    if not path.is_file():
        raise DoraUserError(f"{path}: COCO annotation file not found")
    try:
        with path.open("rb") as handle:
            instances = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DoraUserError(f"{path}: malformed JSON ({err})") from err
    if not isinstance(instances, dict) or not all(
        isinstance(instances.get(key), list) for key in ("images", "annotations")
    ):
        raise DoraUserError(f"{path}: malformed COCO JSON (needs 'images' and 'annotations' lists)")
    return instances


def _is_kept(source: Path, ann: dict) -> bool:
    """LOST's ``remove_iscrowd``: crowd regions are not objects to localise."""
    if "iscrowd" not in ann:
        raise DoraUserError(f"{source}: malformed COCO JSON (annotation {ann.get('id', '?')} has no iscrowd)")
    return ann["iscrowd"] != 1


def _coco_box(source: Path, image_id: int, ann: dict) -> Box:
    bbox = ann.get("bbox")
    if (
        not isinstance(bbox, list)
        or len(bbox) != 4
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox)
    ):
        raise DoraUserError(
            f"{source}: malformed COCO JSON (annotation {ann.get('id', '?')} of image {image_id}: "
            "bbox must be [x, y, width, height])"
        )
    x, y, w, h = bbox
    return tuple(round(v) for v in (x, y, x + w, y + h))  # type: ignore[return-value]
