"""Downstream evaluation and pictures of what a DoRA model tracks.

- `dora-hf eval knn|linear|davis` (`commands.py`): DINO's k-NN and linear evaluations on any
  Hugging Face image-classification dataset, DAVIS-2017 label propagation scored with J&F.
- `dora-hf visualize` (`visualize.py`): discovered and tracked objects as a GIF or PNG.
- Results JSON and their ``model-index`` form for model cards (`results.py`):
  `results_to_model_index(results, model_name, dataset_name)` and `results_to_eval_results`.
- The shipped `evaluate` metric modules (`metrics/`, loaded by `metric_modules.load_metric`).
"""

from .results import (
    read_results,
    results_to_eval_results,
    results_to_model_index,
    write_results,
)

__all__ = ["read_results", "results_to_eval_results", "results_to_model_index", "write_results"]
