"""J&F: DAVIS region similarity (J) and boundary accuracy (F) of video object segmentation.

An `evaluate` metric module shipped inside dora-hf, loaded with
``evaluate.load(<path of this folder>)`` (no network needed); see ``README.md`` beside it.
"""

from collections import defaultdict

import datasets
import evaluate
import numpy as np

from dora_hf.evaluation.davis.region_boundary import VOID_LABEL, object_scores

_DESCRIPTION = """
J&F of semi-supervised video object segmentation, computed as the DAVIS-2017 toolkit computes it.
Each example is one frame: a predicted label map and the reference label map (0 background,
1..N objects, 255 void), as uint8 arrays, PIL images or PNG paths (DAVIS palette PNGs work as-is).
Frames are grouped into sequences by `sequences` (one id per frame, in frame order; all frames
form one sequence when omitted). A sequence's objects are the labels of its first reference
frame; the first and last frames are left out of the scores (`exclude_first_last`), as DAVIS does.
J and F are averaged over each object's frames, then over all objects of all sequences.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: predicted label maps, one per frame.
    references: reference label maps, one per frame.
    sequences (list of str, optional): the sequence of each frame.
    exclude_first_last (bool, default True): leave each sequence's first and last frame out.
Returns:
    J, F, J&F: means over all objects; J_recall, F_recall: mean fraction of frames scoring
    above 0.5; per_sequence: {sequence: {J, F, J&F, num_objects, num_frames}};
    per_object: {"sequence/object": {J, F}}.
Example:
    >>> metric = evaluate.load("path/to/jaccard_f")
    >>> metric.compute(predictions=[mask0, mask1, mask2], references=[gt0, gt1, gt2])["J&F"]
"""

_CITATION = """
@inproceedings{Perazzi2016,
  title={A Benchmark Dataset and Evaluation Methodology for Video Object Segmentation},
  author={Perazzi, F. and Pont-Tuset, J. and McWilliams, B. and Van Gool, L. and Gross, M. and Sorkine-Hornung, A.},
  booktitle={CVPR}, year={2016}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class JaccardF(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Image(), "references": datasets.Image()}),
            reference_urls=["https://github.com/davisvideochallenge/davis2017-evaluation"],
        )

    def _compute(self, predictions, references, sequences=None, exclude_first_last=True):
        if sequences is None:
            sequences = ["sequence"] * len(references)
        if len(sequences) != len(references):
            raise ValueError(f"{len(sequences)} sequence ids for {len(references)} frames")
        frames = defaultdict(list)
        for sequence, predicted, truth in zip(sequences, predictions, references):
            frames[sequence].append((np.asarray(predicted), np.asarray(truth)))

        per_sequence, per_object = {}, {}
        j_means, f_means, j_recalls, f_recalls = [], [], [], []
        for sequence, pairs in frames.items():
            first = pairs[0][1]
            num_objects = int(first[first != VOID_LABEL].max(initial=0))
            scored = pairs[1:-1] if exclude_first_last else pairs
            if num_objects == 0 or not scored:
                continue
            j, f = object_scores([p for p, _ in scored], [t for _, t in scored], num_objects)
            for obj in range(num_objects):
                per_object[f"{sequence}/{obj + 1}"] = {"J": float(j[obj].mean()), "F": float(f[obj].mean())}
            j_means += list(j.mean(axis=1))
            f_means += list(f.mean(axis=1))
            j_recalls += list((j > 0.5).mean(axis=1))
            f_recalls += list((f > 0.5).mean(axis=1))
            sequence_j, sequence_f = float(j.mean(axis=1).mean()), float(f.mean(axis=1).mean())
            per_sequence[sequence] = {
                "J": sequence_j,
                "F": sequence_f,
                "J&F": (sequence_j + sequence_f) / 2,
                "num_objects": num_objects,
                "num_frames": len(scored),
            }
        if not j_means:
            raise ValueError("no object to score: every sequence's first reference frame is empty or too short")
        mean_j, mean_f = float(np.mean(j_means)), float(np.mean(f_means))
        return {
            "J": mean_j,
            "F": mean_f,
            "J&F": (mean_j + mean_f) / 2,
            "J_recall": float(np.mean(j_recalls)),
            "F_recall": float(np.mean(f_recalls)),
            "per_sequence": per_sequence,
            "per_object": per_object,
        }
