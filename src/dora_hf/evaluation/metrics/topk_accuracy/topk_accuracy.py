"""Top-1 / top-5 accuracy of ranked class predictions, as DINO reports k-NN and linear-probe results.

An `evaluate` metric module shipped inside dora-hf, loaded with
``evaluate.load(<path of this folder>)`` (no network needed); see ``README.md`` beside it.
"""

import datasets
import evaluate

_DESCRIPTION = """
Top-k accuracy of image classification from ranked predictions. Each prediction is the list of
class ids ordered from most to least likely (a k-NN vote or a classifier's logits, sorted); the
reference is the true class id. An example is correct at top-k when its class is among the first
k entries. With ranked lists shorter than k, top-k is computed over the list (DINO's k-NN with
fewer than 5 classes ranked).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of list of int): class ids, most likely first.
    references (list of int): true class ids.
    top_k (list of int, default [1, 5]): the k values to report.
Returns:
    top1, top5, ...: fraction of examples whose class is among the first k predictions.
Example:
    >>> metric = evaluate.load("path/to/topk_accuracy")
    >>> metric.compute(predictions=[[2, 0, 1], [1, 2, 0]], references=[2, 0], top_k=[1, 2])
    {'top1': 0.5, 'top2': 0.5}
"""

_CITATION = """
@inproceedings{caron2021emerging,
  title={Emerging Properties in Self-Supervised Vision Transformers},
  author={Caron, Mathilde and Touvron, Hugo and Misra, Ishan and J\\'egou, Herv\\'e and Mairal, Julien
          and Bojanowski, Piotr and Joulin, Armand},
  booktitle={ICCV}, year={2021}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class TopKAccuracy(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("int64")), "references": datasets.Value("int64")}
            ),
            reference_urls=["https://github.com/facebookresearch/dino/blob/main/eval_knn.py"],
        )

    def _compute(self, predictions, references, top_k=(1, 5)):
        if not references:
            raise ValueError("no examples to score")
        results = {}
        for k in top_k:
            hits = sum(int(truth in ranked[:k]) for ranked, truth in zip(predictions, references))
            results[f"top{k}"] = hits / len(references)
        return results
