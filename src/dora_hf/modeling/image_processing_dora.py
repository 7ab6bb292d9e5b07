# Copyright 2026 The dora-hf authors. Licensed under the Apache License, Version 2.0.
"""Image processor for DoRA: DINO's evaluation transform.

Resize the short side to 256 (bicubic), centre-crop 224, rescale to [0, 1] and normalise with
the ImageNet mean and std - the transform DINO and DoRA use for k-NN and linear evaluation.
Built on transformers' PIL backend, which needs no torchvision.
"""

from transformers.image_processing_backends import PilBackend
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling


class DoraImageProcessor(PilBackend):
    model_input_names = ["pixel_values"]
    resample = PILImageResampling.BICUBIC
    image_mean = IMAGENET_DEFAULT_MEAN
    image_std = IMAGENET_DEFAULT_STD
    size = {"shortest_edge": 256}
    default_to_square = False
    crop_size = {"height": 224, "width": 224}
    do_resize = True
    do_center_crop = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True

    @classmethod
    def for_image_size(cls, image_size: int) -> "DoraImageProcessor":
        """The same transform for a model of another input size (resize keeps DINO's 256/224 ratio)."""
        return cls(
            size={"shortest_edge": round(image_size * 256 / 224)},
            crop_size={"height": image_size, "width": image_size},
        )


__all__ = ["DoraImageProcessor"]
