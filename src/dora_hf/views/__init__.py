"""The batched views a training step builds on the device, in plain torch (no PyAV, no datasets).

`dora_views` (DoRA's global, masked and local views of whole clips), `dino_views` (DINO's
multi-crop of single frames), and their shared parts: `crop_boxes`, `resample` (resizing by
separable taps), `color_augment`.
"""
