"""LOST's CorLoc protocol values, importable without torch (the command line shows them as defaults).

The authority is valeoai/LOST (commit fcedbec), whose values these are:

- ``main_lost.py``: ``--k_patches`` default 100; ``--which_features`` default ``k`` (the keys
  of the last block's attention); ``--set trainval`` for VOC07/VOC12 and ``--set train`` for
  COCO20k (its README's commands); a prediction is correct when ``bbox_iou(pred, gt) >= 0.5``
  for some ground-truth box, and CorLoc is the share of images whose prediction is correct.
- ``datasets.py``: ``transform = Compose([ToTensor(), Normalize((0.485, 0.456, 0.406),
  (0.229, 0.224, 0.225))])`` with no resizing; COCO20k images are ``COCO/images/train2014``
  read through ``COCO/annotations/instances_train2014.json`` restricted to the images of
  ``datasets/coco_20k_filenames.txt``.
"""

from __future__ import annotations

PROTOCOL = "lost"
"""The protocol name recorded in the results' settings."""

K_PATCHES = 100
"""Patches of lowest degree among which the seed's similar patches are taken (``--k_patches``)."""

IOU_THRESHOLD = 0.5
"""A predicted box localises the object when its IoU with some ground-truth box is at least this."""

IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)
"""``datasets.py``'s ``Normalize``: applied to every image whatever the model's own processor says."""

DATASETS = ("voc07", "voc12", "coco20k")
DATASET_NAMES = {"voc07": "VOC07", "voc12": "VOC12", "coco20k": "COCO20k"}
"""LOST's names of the three datasets (``--dataset`` choices of ``main_lost.py``)."""

DEFAULT_SPLITS = {"voc07": "trainval", "voc12": "trainval", "coco20k": "train"}
"""The splits LOST's README evaluates: VOC07 and VOC12 ``trainval``, COCO20k (a subset of) ``train`` 2014."""

VOC_YEARS = {"voc07": "2007", "voc12": "2012"}

COCO20K_LIST_NAME = "coco_20k_filenames.txt"
"""LOST's list of the COCO20k images (``datasets/coco_20k_filenames.txt``), looked for in the data root."""

COCO20K_NUM_IMAGES = 19817
COCO20K_IDS_SHA256 = "e29eebb7185528674d061f7fd21219e7a78de41f03f2b6f3c54ef870c6b904e4"
"""sha256 of LOST's COCO20k image ids, sorted, one per line: tells whether a list is LOST's."""
