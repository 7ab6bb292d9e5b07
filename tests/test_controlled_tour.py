"""The controlled walking tour (frames, masks, files) and the known-object scores, each against a
plain per-pixel or per-object transcription written here."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from dora_hf.demo import controlled_tour
from dora_hf.demo.controlled_tour import (
    PHOTOS,
    TourSegment,
    TourSettings,
    build_segment,
    main,
    write_tour,
)
from dora_hf.errors import DoraUserError
from dora_hf.evaluation.corloc.scoring import localizes
from dora_hf.evaluation.davis.folder import read_davis, read_label_map
from dora_hf.evaluation.discovery import known_objects as ko
from dora_hf.prepare.options import PrepareOptions
from dora_hf.prepare.pipeline import prepare_dataset
from dora_hf.prepare.video_decode import probe_video

TINY = TourSettings(width=40, height=30, fps=5, davis_frames=8)
"""The same tour at a size a per-pixel Python loop can check in milliseconds."""


@pytest.fixture(scope="module")
def tiny_train() -> TourSegment:
    return build_segment("train", 3, 300, TINY)  # 60 s at 5 fps


@pytest.fixture(scope="module")
def tiny_train_frames(tiny_train: TourSegment) -> list[tuple[np.ndarray, np.ndarray]]:
    return list(tiny_train.frames())


# ----------------------------------------------------------------------------- plain transcriptions


def plain_pixel_owners(segment: TourSegment, frame: int) -> tuple[list[list[list[int]]], dict[int, np.ndarray]]:
    """For each pixel, the ids of every live object covering it, nearest first, and the sprite
    colour each would give it: the compositing rule written out pixel by pixel."""
    s = segment.settings
    cx, cy, scale = segment.camera.at(frame)
    live = [o for o in segment.objects if o.spawn_frame <= frame and (o.retire_frame is None or frame < o.retire_frame)]
    nearest_first = sorted(live, key=lambda o: (o.depth, o.id))
    owners = [[[] for _ in range(s.width)] for _ in range(s.height)]
    colours = {}
    for v in range(s.height):
        y = cy + (v + 0.5 - s.height / 2) * scale
        for u in range(s.width):
            x = cx + (u + 0.5 - s.width / 2) * scale
            for obj in nearest_first:
                ox, oy, angle = obj.pose(frame, s.fps)
                dx, dy = x - ox, y - oy
                c, sn = math.cos(angle), math.sin(angle)
                lx = math.floor(c * dx + sn * dy + obj.size / 2)
                ly = math.floor(-sn * dx + c * dy + obj.size / 2)
                rgb, alpha = segment.sprites[obj.id]
                if 0 <= lx < obj.size and 0 <= ly < obj.size and alpha[ly][lx]:
                    owners[v][u].append(obj.id)
                    colours[(v, u, obj.id)] = rgb[ly][lx]
    return owners, colours


def plain_bilinear(canvas: np.ndarray, x: float, y: float) -> np.ndarray:
    xs, ys = x - 0.5, y - 0.5
    x0, y0 = math.floor(xs), math.floor(ys)
    wx, wy = xs - x0, ys - y0
    h, w = canvas.shape[:2]

    def cl(value: int, top: int) -> int:
        return min(max(value, 0), top - 1)

    a, b = canvas[cl(y0, h)][cl(x0, w)], canvas[cl(y0, h)][cl(x0 + 1, w)]
    c, d = canvas[cl(y0 + 1, h)][cl(x0, w)], canvas[cl(y0 + 1, h)][cl(x0 + 1, w)]
    return (a * (1 - wx) + b * wx) * (1 - wy) + (c * (1 - wx) + d * wx) * wy


def plain_box(mask: np.ndarray) -> list[int] | None:
    points = [(x, y) for y in range(mask.shape[0]) for x in range(mask.shape[1]) if mask[y][x]]
    if not points:
        return None
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return [min(xs), min(ys), max(xs) + 1, max(ys) + 1]


def touches_border(mask: np.ndarray) -> bool:
    return bool(mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())


# ----------------------------------------------------------------------------- the generator


def test_same_seed_same_frames_and_masks_other_seed_other(tiny_train_frames) -> None:
    again = build_segment("train", 3, 40, TINY)
    for (rgb, ids), (rgb2, ids2) in zip(tiny_train_frames[:40], again.frames()):
        assert rgb.tobytes() == rgb2.tobytes() and ids.tobytes() == ids2.tobytes()
    other = list(build_segment("train", 4, 40, TINY).frames())
    assert any(a[0].tobytes() != b[0].tobytes() for a, b in zip(tiny_train_frames, other))
    assert any(a[1].tobytes() != b[1].tobytes() for a, b in zip(tiny_train_frames, other))


def test_a_longer_tour_begins_with_the_shorter_one(tiny_train: TourSegment, tiny_train_frames) -> None:
    """The simulation is causal: the length does not change the first frames, nor random access."""
    short = build_segment("train", 3, 25, TINY)
    for frame, (rgb, ids) in enumerate(short.frames()):
        assert np.array_equal(rgb, tiny_train_frames[frame][0]) and np.array_equal(ids, tiny_train_frames[frame][1])
    rgb, ids = tiny_train.render(123)
    assert np.array_equal(rgb, tiny_train_frames[123][0]) and np.array_equal(ids, tiny_train_frames[123][1])


def test_masks_and_colours_match_a_per_pixel_depth_ordered_composite(tiny_train: TourSegment, tiny_train_frames):
    """Frames where objects overlap (the nearest must win) and a few others, checked pixel by pixel."""
    candidates = []
    for frame in range(0, tiny_train.num_frames, 3):
        live = tiny_train.live_objects(frame)
        for a, b in itertools.combinations(live, 2):
            (xa, ya, _), (xb, yb, _) = a.pose(frame, TINY.fps), b.pose(frame, TINY.fps)
            if math.hypot(xa - xb, ya - yb) < (a.size + b.size) / 3:
                candidates.append(frame)
                break
    frames = candidates[:: max(1, len(candidates) // 4)][:4] + [0, 101, 299]
    overlapping = 0
    for frame in frames:
        rgb, ids = tiny_train_frames[frame]
        owners, colours = plain_pixel_owners(tiny_train, frame)
        cx, cy, scale = tiny_train.camera.at(frame)
        for v in range(TINY.height):
            for u in range(TINY.width):
                covering = owners[v][u]
                expected = covering[0] if covering else 0
                assert ids[v, u] == expected, (frame, v, u)
                overlapping += len(covering) > 1
                if covering:
                    assert np.array_equal(rgb[v, u], colours[(v, u, expected)])
                else:
                    x = cx + (u + 0.5 - TINY.width / 2) * scale
                    y = cy + (v + 0.5 - TINY.height / 2) * scale
                    assert np.abs(rgb[v, u].astype(float) - np.rint(plain_bilinear(tiny_train.canvas, x, y))).max() <= 1
    assert overlapping > 20  # occlusion really was exercised


def test_sprites_follow_their_outline_and_objects_have_the_stated_size(tiny_train: TourSegment) -> None:
    for obj in tiny_train.objects[:5]:
        _, alpha = tiny_train.sprites[obj.id]
        for j in range(obj.size):
            for i in range(obj.size):
                x, y = i + 0.5 - obj.size / 2, j + 0.5 - obj.size / 2
                phi = math.atan2(y, x)
                r = 1 + sum(a * math.cos(k * phi + p) for k, a, p in obj.harmonics)
                if abs(math.hypot(x, y) - obj.radius * r) > 1e-9:  # off the outline itself, where rounding decides
                    assert alpha[j, i] == (math.hypot(x, y) < obj.radius * r)
        centres = np.arange(obj.size) + 0.5 - obj.size / 2
        distances = np.hypot(*np.meshgrid(centres, centres))
        assert distances[alpha].max() + math.sqrt(0.5) <= obj.reach  # no pixel of it lies beyond its reach
        share = alpha.sum() / (TINY.width * TINY.height)
        assert 0.055 < share < 0.16  # 7-14% of the frame at zoom 1, up to rasterisation at this tiny size


def test_objects_enter_and_leave_across_the_edges(tiny_train: TourSegment, tiny_train_frames) -> None:
    ids = np.stack([i for _, i in tiny_train_frames])
    last = len(ids) - 1
    entered = left = 0
    for obj in tiny_train.objects:
        visible = np.flatnonzero((ids == obj.id).any((1, 2)))
        if not len(visible):
            continue
        first_seen, last_seen = int(visible[0]), int(visible[-1])
        if obj.spawn_frame >= 0:  # spawned during the segment: outside the view at first
            assert first_seen > obj.spawn_frame
            assert not (ids[obj.spawn_frame : first_seen] == obj.id).any()
            owners, _ = plain_pixel_owners(tiny_train, first_seen)
            footprint = np.array([[obj.id in cell for cell in row] for row in owners])
            assert touches_border(footprint)
            entered += 1
        if last_seen < last:
            assert not (ids[last_seen + 1 :] == obj.id).any()
            assert obj.retire_frame is None or obj.retire_frame > last_seen
            owners, _ = plain_pixel_owners(tiny_train, last_seen)
            footprint = np.array([[obj.id in cell for cell in row] for row in owners])
            assert touches_border(footprint)
            left += 1
    assert entered >= 3 and left >= 3
    visible_per_frame = [len(np.unique(f)) - 1 for f in ids]
    assert max(visible_per_frame) >= 3 and min(visible_per_frame) <= TINY.slots


def test_held_out_shares_no_photograph_object_or_stream_with_training(tiny_train: TourSegment) -> None:
    held_out = build_segment("held_out", 3, 40, TINY)
    train_photos = set(PHOTOS["train"].scene) | set(PHOTOS["train"].objects)
    held_out_photos = set(PHOTOS["held_out"].scene) | set(PHOTOS["held_out"].objects)
    assert not train_photos & held_out_photos
    assert not set(PHOTOS["train"].scene) & set(PHOTOS["train"].objects)
    assert {o.photo for o in held_out.objects} <= set(PHOTOS["held_out"].objects)
    assert {o.photo for o in tiny_train.objects} <= set(PHOTOS["train"].objects)
    assert not {o.harmonics for o in held_out.objects} & {o.harmonics for o in tiny_train.objects}
    assert held_out.camera != tiny_train.camera
    train_sprites = {tiny_train.sprites[o.id][0].tobytes() for o in tiny_train.objects}
    assert not any(held_out.sprites[o.id][0].tobytes() in train_sprites for o in held_out.objects)


# ----------------------------------------------------------------------------- the files


SMALL = TourSettings(width=64, height=48, fps=10, davis_frames=10)


@pytest.fixture(scope="module")
def small_tour(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tour(tmp_path_factory.mktemp("tour") / "tour", seconds=3, seed=1, held_out_seconds=2.5, settings=SMALL)


def test_tour_folder_has_the_videos_davis_folder_and_truth(small_tour: Path) -> None:
    assert sorted(p.name for p in small_tour.iterdir()) == ["held_out.mp4", "held_out_davis", "train.mp4", "truth.json"]
    assert not [p for p in small_tour.parent.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_videos_decode_with_probe_video_and_show_the_rendered_frames(small_tour: Path) -> None:
    for name, frames in (("train", 30), ("held_out", 25)):
        info = probe_video(small_tour / f"{name}.mp4")
        assert (info.codec, info.width, info.height, info.fps, info.num_frames) == ("h264", 64, 48, 10.0, frames)
        rendered = [rgb for rgb, _ in build_segment(name, 1, frames, SMALL).frames()]
        with av.open(str(small_tour / f"{name}.mp4")) as container:
            decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        assert len(decoded) == frames
        errors = [np.abs(d.astype(int) - r.astype(int)).mean() for d, r in zip(decoded, rendered)]
        assert max(errors) < 8  # H.264 at CRF 18 on a tiny textured frame


def test_prepare_data_prepares_the_training_video(small_tour: Path, tmp_path: Path) -> None:
    options = PrepareOptions(clip_step=5, frames_per_clip=2, keep_every=1, frames_per_shard=20)
    summary = prepare_dataset([small_tour / "train.mp4"], tmp_path / "frames", options, progress=False, log=None)
    assert summary.num_rows == 30  # every frame kept: nothing blank or frozen


def plain_davis_labels(ids: list[np.ndarray]) -> list[np.ndarray]:
    """First frame's objects 1..k by id, then new ones in order of appearance (by id within a frame)."""
    labels: dict[int, int] = {}
    for i in sorted(int(v) for v in np.unique(ids[0]) if v):
        labels[i] = len(labels) + 1
    out = []
    for frame in ids:
        for i in sorted(int(v) for v in np.unique(frame) if v):
            labels.setdefault(i, len(labels) + 1)
        out.append(np.vectorize(lambda v: labels.get(int(v), 0))(frame).astype(np.uint8))
    return out


def test_davis_folder_reads_with_read_davis_and_holds_the_masks(small_tour: Path) -> None:
    sequences = read_davis(small_tour / "held_out_davis")
    assert [s.name for s in sequences] == ["tour000", "tour001"]  # 25 frames: two whole sequences of 10
    frames = list(build_segment("held_out", 1, 25, SMALL).frames())
    truth = json.loads((small_tour / "truth.json").read_text())["segments"]["held_out"]["davis"]["sequences"]
    for index, sequence in enumerate(sequences):
        assert len(sequence.frames) == 10 and all(a is not None for a in sequence.annotations)
        assert sequence.palette()[3:6] == [128, 0, 0]  # DAVIS's palette: object 1 is dark red
        ids = [i for _, i in frames[10 * index : 10 * index + 10]]
        expected = plain_davis_labels(ids)
        for annotation, labels in zip(sequence.annotations, expected):
            assert np.array_equal(read_label_map(annotation), labels)
        mapping = {int(label): object_id for label, object_id in truth[index]["labels"].items()}
        for annotation, frame_ids in zip(sequence.annotations, ids):
            labels = read_label_map(annotation)
            for label, object_id in mapping.items():
                assert np.array_equal(labels == label, frame_ids == object_id)


def test_truth_json_boxes_areas_and_objects_match_the_masks(small_tour: Path) -> None:
    truth = json.loads((small_tour / "truth.json").read_text())
    assert truth["seed"] == 1 and truth["settings"]["width"] == 64
    for name, frames in (("train", 30), ("held_out", 25)):
        record = truth["segments"][name]
        assert record["num_frames"] == frames and len(record["frames"]) == frames
        rendered = [ids for _, ids in build_segment(name, 1, frames, SMALL).frames()]
        for entry, ids in zip(record["frames"], rendered):
            expected = {str(i): plain_box(ids == i) for i in np.unique(ids) if i}
            assert entry["boxes"] == expected
            assert entry["areas"] == {k: int((ids == int(k)).sum()) for k in expected}
        for obj in record["objects"]:
            seen = [t for t, ids in enumerate(rendered) if (ids == obj["id"]).any()]
            assert obj["first_visible_frame"] == (seen[0] if seen else None)
            assert obj["last_visible_frame"] == (seen[-1] if seen else None)
    train_objects = {o["photo"] for o in truth["segments"]["train"]["objects"]}
    held_out_objects = {o["photo"] for o in truth["segments"]["held_out"]["objects"]}
    assert not train_objects & held_out_objects


def test_command_line_writes_the_tour_and_refuses_bad_options(tmp_path: Path, capsys) -> None:
    out = tmp_path / "tour"
    assert main(["--out", str(out), "--seconds", "1", "--seed", "2", "--held-out-seconds", "5", "--no-progress"]) == 0
    assert probe_video(out / "train.mp4").num_frames == 10
    assert probe_video(out / "held_out.mp4").width == 320
    assert [s.name for s in read_davis(out / "held_out_davis")] == ["tour000"]
    capsys.readouterr()
    assert main(["--out", str(out), "--seconds", "1", "--held-out-seconds", "5", "--no-progress"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["--out", str(tmp_path / "b"), "--seconds", "0", "--no-progress"]) == 2
    assert "--seconds must be a positive" in capsys.readouterr().err
    assert main(["--out", str(tmp_path / "c"), "--seconds", "1", "--held-out-seconds", "2", "--no-progress"]) == 2
    assert "shorter than one DAVIS sequence" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tour"]


def test_a_failed_write_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(controlled_tour.output, "write_segment", fail)
    with pytest.raises(DoraUserError, match="nothing was written"):
        write_tour(tmp_path / "tour", seconds=1, held_out_seconds=1, settings=SMALL)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- the scores


def plain_clip_iou(mask: np.ndarray, truth: np.ndarray, object_id: int) -> float:
    inter = union = 0
    for t, y, x in itertools.product(*map(range, truth.shape)):
        a, b = bool(mask[t, y, x]), truth[t, y, x] == object_id
        inter += a and b
        union += a or b
    return inter / union if union else 0.0


def plain_frame_match(mask: np.ndarray, truth: np.ndarray, t: int) -> int:
    best, best_id = 0.0, 0
    for object_id in sorted(set(truth[t].ravel().tolist()) - {0}):
        inter = union = 0
        for y, x in itertools.product(range(truth.shape[1]), range(truth.shape[2])):
            a, b = bool(mask[t, y, x]), truth[t, y, x] == object_id
            inter += a and b
            union += a or b
        if inter / union > best:
            best, best_id = inter / union, object_id
    return best_id


@pytest.fixture
def clip() -> tuple[np.ndarray, np.ndarray]:
    """5 frames of 6x7 with objects 1, 3, 4 (2 absent: it is not in this clip); 4 tracked objects:
    object 3 exactly, object 1 roughly then swapped to 4, nothing (empty), and background only."""
    rng = np.random.default_rng(0)
    truth = np.zeros((5, 6, 7), dtype=np.int64)
    truth[:, 0:3, 0:3] = 1
    truth[:, 3:6, 4:7] = 3
    truth[:4, 0:2, 4:7] = 4  # leaves after frame 3
    truth[2, 1, 1] = 3  # a speck of 3 in front of 1
    masks = np.zeros((4, 5, 6, 7), dtype=bool)
    masks[0] = truth == 3
    masks[1] = (truth == 1) | (rng.random(truth.shape) < 0.1)
    masks[1, 3] = truth[3] == 4  # switches to object 4 while object 1 is still visible
    masks[3, :, 3:6, 0:3] = True  # only background
    return masks, truth


def test_clip_ious_match_a_plain_loop_and_skip_absent_objects(clip) -> None:
    masks, truth = clip
    ious, ids = ko.clip_ious(masks, truth)
    assert ids.tolist() == [1, 3, 4]
    for k, g in itertools.product(range(4), range(3)):
        assert ious[k, g] == pytest.approx(plain_clip_iou(masks[k], truth, int(ids[g])))
    assert ious[0, 1] == 1.0 and not ious[2].any() and not ious[3].any()
    ious_t, _ = ko.clip_ious(torch.from_numpy(masks), torch.from_numpy(truth))
    assert np.array_equal(ious_t, ious)


def brute_force_matching(ious: np.ndarray) -> tuple[float, dict[int, int]]:
    """The largest total IoU over every one-to-one assignment of rows to columns."""
    k, g = ious.shape
    best, best_pairs = -1.0, {}
    for cols in itertools.permutations(list(range(g)) + [None] * k, k):
        total = sum(ious[r, c] for r, c in enumerate(cols) if c is not None)
        if total > best + 1e-12:
            best, best_pairs = total, {r: c for r, c in enumerate(cols) if c is not None and ious[r, c] > 0}
    return best, best_pairs


def plain_greedy(ious: np.ndarray) -> dict[int, int]:
    pairs, rows, cols = {}, set(), set()
    while True:
        candidates = [
            (ious[r, c], -r, -c)
            for r in range(ious.shape[0])
            for c in range(ious.shape[1])
            if r not in rows and c not in cols
        ]
        if not candidates or max(candidates)[0] <= 0:
            return pairs
        _, r, c = max(candidates)
        pairs[-r] = -c
        rows.add(-r)
        cols.add(-c)


@pytest.mark.parametrize("shape", [(3, 3), (4, 2), (2, 5)])
def test_matching_hungarian_is_optimal_and_greedy_takes_the_largest_first(shape) -> None:
    rng = np.random.default_rng(sum(shape))
    for _ in range(10):
        ious = rng.random(shape) * (rng.random(shape) < 0.7)
        assignment, method = ko.match_objects(ious)
        assert method == "hungarian"
        best, pairs = brute_force_matching(ious)
        assert ko.matched_ious(ious, assignment).sum() == pytest.approx(best)
        assert {r: int(c) for r, c in enumerate(assignment) if c >= 0} == pairs
        greedy, method = ko.match_objects(ious, "greedy")
        assert method == "greedy"
        assert {r: int(c) for r, c in enumerate(greedy) if c >= 0} == plain_greedy(ious)


def test_greedy_is_used_without_scipy_and_can_be_worse(monkeypatch) -> None:
    monkeypatch.setattr(ko, "_have_scipy", lambda: False)
    ious = np.array([[0.9, 0.8], [0.85, 0.0]])
    assignment, method = ko.match_objects(ious)
    assert method == "greedy" and assignment.tolist() == [0, -1]
    assert ko.match_objects(ious, "hungarian")[0].tolist() == [1, 0]  # 0.8 + 0.85 > 0.9


def test_found_share_identity_and_summary_match_plain_loops(clip) -> None:
    masks, truth = clip
    scores = ko.score_known_objects(masks, truth)
    ious = [[plain_clip_iou(masks[k], truth, g) for g in (1, 3, 4)] for k in range(4)]
    _, pairs = brute_force_matching(np.array(ious))
    plain_matched = [ious[k][pairs[k]] if k in pairs else 0.0 for k in range(4)]
    assert scores.matched_iou == pytest.approx(plain_matched)
    assert scores.matched_object == [[1, 3, 4][pairs[k]] if k in pairs else 0 for k in range(4)]
    assert scores.matched_object[2] == 0 and scores.matched_iou[2] == 0  # the empty track matches nothing
    assert scores.matched_object[3] == 0  # nor does the one on the background
    assert scores.found == pytest.approx(sum(v >= 0.5 for v in plain_matched) / 3)
    assert scores.object_ids == [1, 3, 4] and scores.matching == "hungarian"

    # identity: per pair (t-1, t) whose earlier match is still visible at t
    for k in range(4):
        matches = [plain_frame_match(masks[k], truth, t) for t in range(5)]
        assert ko.frame_matches(masks, truth)[k].tolist() == matches
        counted = same = 0
        for t in range(1, 5):
            if matches[t - 1] and (truth[t] == matches[t - 1]).any():
                counted += 1
                same += matches[t] == matches[t - 1]
        expected = same / counted if counted else None
        if expected is None:
            assert math.isnan(scores.identity[k])
        else:
            assert scores.identity[k] == pytest.approx(expected)
    assert scores.identity[0] == 1.0 and scores.identity[1] == pytest.approx(2 / 3)
    assert math.isnan(scores.identity[2]) and math.isnan(scores.identity[3])


def test_an_object_leaving_does_not_count_against_identity() -> None:
    truth = np.zeros((4, 4, 4), dtype=np.int64)
    truth[:2, :2, :2] = 5  # object 5 leaves after frame 1
    truth[:, 2:, 2:] = 6
    masks = (truth == 5)[None] | np.zeros((1, 4, 4, 4), dtype=bool)
    masks[0, 2:, 2:, 2:] = True  # picks up object 6 once 5 is gone
    per_object, overall = ko.identity_share(masks, truth)
    assert per_object.tolist() == [1.0] and overall == 1.0  # pairs (0,1), (2,3); (1,2) is not counted


def test_found_counts_an_iou_of_exactly_one_half_and_at_most_k_of_g_objects() -> None:
    truth = np.zeros((2, 4, 4), dtype=np.int64)
    truth[:, 0, :] = 1  # 8 pixels over the clip
    truth[:, 3, :] = 2
    truth[:, 2, :2] = 3
    masks = np.zeros((2, 2, 4, 4), dtype=bool)
    masks[0, :, 0, :2] = True  # 4 of object 1's 8 pixels: IoU 0.5 exactly
    masks[1] = truth == 2
    scores = ko.score_known_objects(masks, truth)
    assert scores.matched_iou == [0.5, 1.0] and scores.found == pytest.approx(2 / 3)  # object 3 has no track left


def test_scores_without_any_object_in_the_clip() -> None:
    truth = np.zeros((3, 4, 5), dtype=np.int64)
    masks = np.ones((2, 3, 4, 5), dtype=bool)
    scores = ko.score_known_objects(masks, truth)
    assert scores.object_ids == [] and scores.matched_iou == [0.0, 0.0] and scores.matched_object == [0, 0]
    assert math.isnan(scores.found) and math.isnan(scores.identity_overall)
    hits, scored, corloc = ko.box_corloc(np.zeros((3, 4)), truth)
    assert not hits.any() and not scored.any() and math.isnan(corloc)


def test_shapes_that_do_not_fit_are_refused() -> None:
    with pytest.raises(ValueError, match="masks must be"):
        ko.clip_ious(np.zeros((2, 3, 4, 4), dtype=bool), np.zeros((3, 4, 5), dtype=np.int64))
    with pytest.raises(ValueError, match="boxes must be"):
        ko.box_corloc(np.zeros((2, 4)), np.zeros((3, 4, 5), dtype=np.int64))


def test_instance_boxes_match_a_plain_loop(tiny_train_frames) -> None:
    truth = np.stack([ids for _, ids in tiny_train_frames[:30:3]])
    ids, boxes, present = ko.instance_boxes(truth)
    assert ids.tolist() == sorted(set(np.unique(truth).tolist()) - {0})
    for t, (g, object_id) in itertools.product(range(len(truth)), enumerate(ids)):
        box = plain_box(truth[t] == object_id)
        assert present[t, g] == (box is not None)
        if box is not None:
            assert boxes[t, g].tolist() == box


def plain_lost_iou(a: list[int], b: list[int], eps: float = 1e-7) -> float:
    inter = max(min(a[2], b[2]) - max(a[0], b[0]), 0) * max(min(a[3], b[3]) - max(a[1], b[1]), 0)
    union = (a[2] - a[0]) * (a[3] - a[1] + eps) + (b[2] - b[0]) * (b[3] - b[1] + eps) - inter + eps
    return inter / union


def test_corloc_matches_a_plain_loop_and_losts_localizes() -> None:
    truth = np.zeros((5, 20, 30), dtype=np.int64)
    truth[0, 2:10, 3:12] = 1
    truth[0, 12:18, 20:28] = 2
    truth[1, 2:10, 3:12] = 1
    truth[3, 0:20, 0:15] = 7
    truth[4, 5:15, 5:25] = 2
    truth[4, 8:12, 10:14] = 3  # in front of 2
    boxes = np.array(
        [
            [19, 11, 29, 19],  # a near fit of object 2, not of object 1: a hit
            [3, 2, 7, 10],  # under half of object 1: a miss
            [0, 0, 5, 5],  # frame 2 shows nothing: not scored
            [0, 0, 14, 19],  # most of object 7: a hit
            [10, 8, 15, 13],  # around object 3 only: a hit
        ]
    )
    hits, scored, corloc = ko.box_corloc(boxes, truth)
    expected_hits, expected_scored = [], []
    for t in range(5):
        gt = [plain_box(truth[t] == i) for i in sorted(set(np.unique(truth[t]).tolist()) - {0})]
        expected_scored.append(bool(gt))
        best = max((plain_lost_iou(boxes[t].tolist(), b) for b in gt), default=0.0)
        assert best < 0.45 or best > 0.55  # clear of the threshold, where float32 and float64 agree
        expected_hits.append(best >= 0.5)
        if gt:
            assert localizes(tuple(boxes[t].tolist()), gt)[0] == expected_hits[-1]
    assert hits.tolist() == expected_hits == [True, False, False, True, True]
    assert scored.tolist() == expected_scored
    assert corloc == pytest.approx(3 / 4)


def test_scores_of_the_tour_with_its_own_masks_are_perfect(tiny_train_frames) -> None:
    """Tracking objects 1..3 exactly over a clip: IoU 1 where visible, identity 1, all found when K >= G."""
    truth = np.stack([ids for _, ids in tiny_train_frames[:20]])
    present = sorted(set(np.unique(truth).tolist()) - {0})
    masks = np.stack([truth == i for i in present])
    scores = ko.score_known_objects(masks, truth)
    assert scores.matched_iou == [1.0] * len(present) and scores.found == 1.0 and scores.identity_overall == 1.0
    boxes, _ = ko.mask_boxes(truth == present[0])
    _, scored, corloc = ko.box_corloc(boxes, truth)
    assert corloc == pytest.approx(((truth == present[0]).any((1, 2)) & scored).sum() / scored.sum())
