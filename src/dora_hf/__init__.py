"""dora-hf: DoRA self-supervised pretraining from one long video, native to the Hugging Face stack.

Importing the package registers DoRA with transformers' Auto classes.
"""

from .modeling import (
    DoraBackbone,
    DoraConfig,
    DoraForImageClassification,
    DoraForPreTraining,
    DoraImageProcessor,
    DoraModel,
    DoraTrackingOutput,
)

__version__ = "0.1.0"

__all__ = [
    "DoraBackbone",
    "DoraConfig",
    "DoraForImageClassification",
    "DoraForPreTraining",
    "DoraImageProcessor",
    "DoraModel",
    "DoraTrackingOutput",
    "__version__",
]
