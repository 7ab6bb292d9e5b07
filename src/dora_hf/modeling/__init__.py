"""DoRA as transformers model classes, registered with the Auto classes on import.

The files of this folder import only torch, transformers (with huggingface_hub, which it
requires) and each other, so `save_pretrained` can copy them next to the weights for users who
load with `trust_remote_code=True`. This file is not copied: what it does holds where the
package is imported.
"""

import json
import os

from transformers import (
    AutoBackbone,
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForPreTraining,
)
from transformers.models.auto.auto_factory import _BaseAutoModelClass
from transformers.models.auto.video_processing_auto import AutoVideoProcessor

from .configuration_dora import DoraConfig
from .image_processing_dora import DoraImageProcessor
from .modeling_dora import (
    DoraBackbone,
    DoraForImageClassification,
    DoraForPreTraining,
    DoraForPreTrainingOutput,
    DoraModel,
    DoraModelOutput,
    DoraPreTrainedModel,
)
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
AutoBackbone.register(DoraConfig, DoraBackbone, exist_ok=True)
AutoModelForImageClassification.register(DoraConfig, DoraForImageClassification, exist_ok=True)
AutoImageProcessor.register(DoraConfig, image_processor_classes={"pil": DoraImageProcessor}, exist_ok=True)
# DoRA has no video processor, and says so. Without an entry, `AutoVideoProcessor` (which every
# vision pipeline tries) reads the image processor's `auto_map` in preprocessor_config.json as
# the promise of a remote `DoraVideoProcessor`, finds no local class for DoraConfig and asks
# "Do you wish to run the custom code? [y/N]" (waiting 15 s for an answer). With an empty
# entry the local side is known, `resolve_trust_remote_code` does not ask, and the lookup fails
# quietly, as the pipelines expect of a model without one. `trust_remote_code=True` and
# environments without this package are unaffected.
AutoVideoProcessor.register(DoraConfig, video_processor_classes={}, exist_ok=True)


def _is_local_dora_folder(path: object) -> bool:
    """Whether `path` is a folder on disk whose config.json is a DoRA configuration."""
    if not isinstance(path, (str, os.PathLike)):
        return False
    config_file = os.path.join(os.fspath(path), "config.json")
    try:
        with open(config_file, encoding="utf-8") as handle:
            return json.load(handle).get("model_type") == DoraConfig.model_type
    except (OSError, ValueError, AttributeError):
        return False


_hub_or_timm_backbone = AutoBackbone.from_pretrained.__func__


def _backbone_from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
    """`AutoBackbone.from_pretrained`, which also loads a DoRA folder saved on disk.

    transformers' `AutoBackbone.from_pretrained` first asks the Hub whether the name is a model
    repository and otherwise takes it for a timm model name: a local folder is never a repository
    (an absolute path is refused outright, a relative one is looked up online), so a saved folder
    never reached the registered `DoraBackbone`. A local DoRA folder now goes through the common
    Auto-class loading, as `AutoModel.from_pretrained` does; any other name is left as it was.
    """
    if _is_local_dora_folder(pretrained_model_name_or_path):
        kwargs.pop("use_timm_backbone", None)
        return _BaseAutoModelClass.from_pretrained.__func__(cls, pretrained_model_name_or_path, *model_args, **kwargs)
    return _hub_or_timm_backbone(cls, pretrained_model_name_or_path, *model_args, **kwargs)


if not getattr(AutoBackbone.from_pretrained, "_loads_local_dora_folders", False):
    _backbone_from_pretrained._loads_local_dora_folders = True
    AutoBackbone.from_pretrained = classmethod(_backbone_from_pretrained)

# Recorded so that `save_pretrained` copies this folder's code next to the weights.
DoraConfig.register_for_auto_class()
DoraModel.register_for_auto_class("AutoModel")
DoraForPreTraining.register_for_auto_class("AutoModelForPreTraining")
DoraBackbone.register_for_auto_class("AutoBackbone")
DoraForImageClassification.register_for_auto_class("AutoModelForImageClassification")
DoraImageProcessor.register_for_auto_class("AutoImageProcessor")

__all__ = [
    "DoraBackbone",
    "DoraConfig",
    "DoraForImageClassification",
    "DoraForPreTraining",
    "DoraForPreTrainingOutput",
    "DoraImageProcessor",
    "DoraModel",
    "DoraModelOutput",
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
