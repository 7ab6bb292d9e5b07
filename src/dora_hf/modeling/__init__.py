"""DoRA as transformers model classes, registered with the Auto classes on import.

The files of this folder import only torch, transformers and each other, so `save_pretrained`
can copy them next to the weights for users who load with `trust_remote_code=True`.
"""

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForPreTraining,
)

from .configuration_dora import DoraConfig
from .image_processing_dora import DoraImageProcessor
from .modeling_dora import DoraForPreTraining, DoraForPreTrainingOutput, DoraModel, DoraPreTrainedModel
from .tracking_dora import (
    DoraTrackerFeatures,
    DoraTrackingHead,
    DoraTrackingOutput,
    apply_masks,
    binarize_attention,
    discover_objects,
    kept_by_view,
    sinkhorn_knopp,
    track_objects,
    upsample_masks,
)

AutoConfig.register(DoraConfig.model_type, DoraConfig, exist_ok=True)
AutoModel.register(DoraConfig, DoraModel, exist_ok=True)
AutoModelForPreTraining.register(DoraConfig, DoraForPreTraining, exist_ok=True)
AutoImageProcessor.register(DoraConfig, image_processor_classes={"pil": DoraImageProcessor}, exist_ok=True)
# Recorded so that `save_pretrained` copies this folder's code next to the weights.
DoraConfig.register_for_auto_class()
DoraModel.register_for_auto_class("AutoModel")
DoraForPreTraining.register_for_auto_class("AutoModelForPreTraining")
DoraImageProcessor.register_for_auto_class("AutoImageProcessor")

__all__ = [
    "DoraConfig",
    "DoraForPreTraining",
    "DoraForPreTrainingOutput",
    "DoraImageProcessor",
    "DoraModel",
    "DoraPreTrainedModel",
    "DoraTrackerFeatures",
    "DoraTrackingHead",
    "DoraTrackingOutput",
    "apply_masks",
    "binarize_attention",
    "discover_objects",
    "kept_by_view",
    "sinkhorn_knopp",
    "track_objects",
    "upsample_masks",
]
