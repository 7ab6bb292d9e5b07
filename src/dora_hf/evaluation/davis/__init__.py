"""DAVIS-2017 video object segmentation by label propagation, scored with J&F.

`folder` reads a DAVIS folder, `label_propagation` carries the first frame's labels through the
video on frozen patch features, `region_boundary` scores region (J) and boundary (F), `evaluate`
runs a sequence end to end; the command is `dora-hf eval davis`.

The default protocol, ``dino``, is facebookresearch/dino ``eval_video_segmentation.py`` (with
its helpers ``read_frame``, ``read_seg``, ``to_one_hot``, ``extract_feature``,
``label_propagation``, ``restrict_neighborhood``, ``norm_mask``, ``imwrite_indexed``), followed
step for step; the values taken from it:

- context: the first frame and a queue of the 7 previous frames (``--n_last_frames 7``), which
  keeps each frame's features and its soft `(1, C, h, w)` labels;
- affinity ``exp(cosine / 0.1)`` (the ``/ 0.1`` in ``label_propagation``; ``--temperature``
  overrides it), times the 0/1 square neighbourhood of radius 12 (``--size_mask_neighborhood
  12``), top-5 (``--topk 5``) over all context patches together, values below the 5th largest
  zeroed, each target's weights divided by their sum;
- frames (`dino_frames`, `opencv_resize`): short side 480 (``scale_size=[480]``), long side
  ``int((480 * long / short // 64) * 64)``, ``cv2.resize`` bilinear on 8-bit pixels, ``/ 255``,
  mean ``(0.485, 0.456, 0.406)``, std ``(0.228, 0.224, 0.225)``;
- first mask (``read_seg``): PIL nearest to ``(tw // patch, th // patch)``, one-hot over labels
  0..max (``to_one_hot``);
- features: the last block's patch tokens after the final norm
  (``get_intermediate_layers(frame, n=1)[0][:, 1:]``);
- decoding: bilinear ``F.interpolate(scale_factor=patch_size, align_corners=False,
  recompute_scale_factor=False)``, ``norm_mask``, ``torch.max`` over labels, ``uint8``, PIL
  nearest resize to the original frame size (``Image.resize((ori_w, ori_h), 0)``).

``paper-text`` keeps the earlier variant: a queue of 20, top-7, temperature 0.7, a PIL resize
with both sides floored to the patch size, the model's normalisation and bilinear decoding
straight to the frame size.
"""

from __future__ import annotations

from ..._lazy import lazy_names

# Imported on first use: `dora-hf eval --help` imports this package without torch.
_EXPORTS = {
    "BackbonePatchFeatures": ".evaluate",
    "FeatureFunction": ".evaluate",
    "ProtocolFrameFeatures": ".evaluate",
    "evaluate_davis": ".evaluate",
    "segment_sequence": ".evaluate",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_names(__name__, _EXPORTS)
