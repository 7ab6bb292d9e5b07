"""DAVIS label propagation: a translating object tracked with colour features (J&F > 0.9), the
DAVIS folder layout, the CLI with a tiny model, and the errors of an incomplete folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from dora_tiny import save_tiny_dora
from PIL import Image

from dora_hf.cli import main as cli_main
from dora_hf.errors import DoraUserError
from dora_hf.evaluation.davis.evaluate import evaluate_davis
from dora_hf.evaluation.davis.folder import read_davis
from dora_hf.evaluation.davis.label_propagation import (
    PropagationSettings,
    first_frame_labels,
    labels_to_mask,
    neighbourhood_mask,
    propagate_labels,
    propagate_step,
)
from dora_hf.evaluation.davis.region_boundary import boundary_f, jaccard

BACKGROUND = (40, 60, 200)
OBJECTS = {1: (220, 40, 40), 2: (40, 200, 60)}
SIZE = (48, 64)


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
    predicted = [labels_to_mask(soft, SIZE) for soft in propagate_labels(features, first)]
    assert len(predicted) == len(images) - 1
    assert jf_of(predicted, labels[1:]) > 0.9


def test_propagation_needs_the_features_not_just_the_first_mask():
    # Features that carry no information (constant) cannot follow the motion: the labels only
    # spread around where the first mask was, which scores far lower on this sequence.
    images, labels = synthetic_sequence()
    blank = [torch.ones(SIZE[0] // 2, SIZE[1] // 2, 3) for _ in images]
    first = first_frame_labels(labels[0], (SIZE[0] // 2, SIZE[1] // 2), num_objects=2)
    predicted = [labels_to_mask(soft, SIZE) for soft in propagate_labels(blank, first, PropagationSettings(radius=1))]
    assert jf_of(predicted, labels[1:]) < 0.6


def test_one_step_is_a_softmax_weighted_vote_of_the_top_k_neighbours():
    torch.manual_seed(0)
    target, sources = torch.randn(2, 3, 4), torch.randn(2, 2, 3, 4)
    source_labels = torch.rand(2, 5, 2, 3)
    settings = PropagationSettings(top_k=3, temperature=0.7, radius=1)
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
    scores = evaluate_davis(sequences, colour_features, save_dir=tmp_path / "masks", progress=False)
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
    argv = ["eval", "davis", "--model", str(tiny_model), "--davis-root", str(root), "--short-side", "32",
            "--context-frames", "2", "--out", str(out), "--no-progress"]
    assert cli_main(argv) == 0
    results = json.loads(out.read_text())
    assert results["task"] == "davis" and results["dataset"]["num_sequences"] == 1
    assert [m["name"] for m in results["metrics"]] == ["J&F mean", "J mean", "F mean"]
    assert 0.0 <= results["metrics"][0]["value"] <= 1.0
    assert set(results["details"]["per_sequence"]) == {"squares"}
    assert results["settings"]["context_frames"] == 2 and results["settings"]["top_k"] == 7


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
