"""The DAVIS-2017 folder layout, read and checked.

    ROOT/JPEGImages/480p/<sequence>/00000.jpg ...
    ROOT/Annotations/480p/<sequence>/00000.png ...   (palette PNGs: 0 background, 1..N objects)
    ROOT/ImageSets/2017/val.txt                     (one sequence name per line)

Every problem (missing folder, a listed sequence without frames, no first-frame mask) is a
`DoraUserError` naming the path, before any model runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ...errors import DoraUserError

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class DavisSequence:
    name: str
    frames: list[Path]
    """Frame images in time order."""
    annotations: list[Path | None]
    """The annotation of each frame (None where the folder has none)."""

    def first_annotation(self) -> np.ndarray:
        """The first frame's label map `(H, W)` uint8 (palette indices)."""
        return read_label_map(self.annotations[0])

    def palette(self) -> list[int] | None:
        """The first annotation's colour palette, to save predictions the way DAVIS stores them."""
        with Image.open(self.annotations[0]) as image:
            return image.getpalette() if image.mode == "P" else None


def read_label_map(path: Path) -> np.ndarray:
    """A label map from a palette PNG (its indices) or a greyscale PNG (its values)."""
    with Image.open(path) as image:
        if image.mode not in ("P", "L"):
            raise DoraUserError(f"{path}: annotation is a {image.mode} image; expected palette (P) or greyscale (L) labels")
        return np.array(image, dtype=np.uint8)


def read_davis(
    root: str | Path, split: str = "val", resolution: str = "480p", sequences: list[str] | None = None
) -> list[DavisSequence]:
    """The sequences of ``split`` (or the named ``sequences``) with their frames and annotations."""
    root = Path(root)
    if not root.is_dir():
        raise DoraUserError(f"{root}: no such DAVIS folder")
    images_dir = root / "JPEGImages" / resolution
    annotations_dir = root / "Annotations" / resolution
    if not images_dir.is_dir():
        raise DoraUserError(f"{root}: not a DAVIS folder (no JPEGImages/{resolution})")
    if not annotations_dir.is_dir():
        raise DoraUserError(
            f"{root}: DAVIS folder without annotations (no Annotations/{resolution}); "
            "semi-supervised evaluation needs the masks (at least of every sequence's first frame)"
        )
    names = sequences or _split_sequences(root, split)
    result = []
    for name in names:
        frames = sorted(p for p in (images_dir / name).glob("*") if p.suffix.lower() in FRAME_SUFFIXES)
        if not frames:
            raise DoraUserError(f"{images_dir / name}: sequence {name!r} has no frames")
        annotations = [annotations_dir / name / f"{frame.stem}.png" for frame in frames]
        annotations = [path if path.is_file() else None for path in annotations]
        if annotations[0] is None:
            raise DoraUserError(
                f"{annotations_dir / name / (frames[0].stem + '.png')}: sequence {name!r} has no first-frame mask"
            )
        result.append(DavisSequence(name=name, frames=frames, annotations=annotations))
    return result


def _split_sequences(root: Path, split: str) -> list[str]:
    listing = root / "ImageSets" / "2017" / f"{split}.txt"
    if not listing.is_file():
        found = sorted(p.stem for p in (root / "ImageSets" / "2017").glob("*.txt"))
        hint = f"; available: {', '.join(found)}" if found else "; pass --sequences to name sequences directly"
        raise DoraUserError(f"{listing}: no list of the {split!r} sequences{hint}")
    names = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
    if not names:
        raise DoraUserError(f"{listing}: lists no sequences")
    return names
