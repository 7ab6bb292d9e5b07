"""iBOT's ADE20K semantic-segmentation recipes for a ViT-S/16, as values importable without torch.

DoRA's paper evaluates semantic segmentation "following iBOT"; iBOT trains with mmsegmentation.
Every value below is read from bytedance/ibot, `evaluation/semantic_segmentation/`:

- `configs/linear/vit_small_512_ade20k_160k.py` (the linear head): a frozen backbone
  (`frozen_stages=12`) returning blocks `out_indices=[3, 5, 7, 11]` (0-based blocks, our stages
  4, 6, 8 and 12) without the neck (`with_fpn=False`); an mmseg `FCNHead` with
  `input_transform='resize_concat'`, `num_convs=0`, `channels=1536`, `dropout_ratio=0`, so the head
  is one 1x1 convolution on the four maps concatenated (no BatchNorm: with `num_convs=0` its
  `norm_cfg` builds nothing); AdamW lr 3e-5, betas (0.9, 0.999), weight decay 0.05, no layer decay.
- `configs/upernet/vit_small_512_ade20k_160k.py` (UperNet): the same blocks through the neck
  (`with_fpn=True`, `drop_path_rate=0.1`), `UPerHead` with `channels=384` and pool scales
  (1, 2, 3, 6), an auxiliary `FCNHead` on the third map (256 channels, one conv, loss weight 0.4),
  both from `configs/_base_/models/upernet.py`; AdamW lr 3e-5, weight decay 0.05, layer decay 0.9
  over 12 layers (`LayerDecayOptimizerConstructor`, `mmcv_custom/layer_decay_optimizer_constructor.py`).
- Both: `lr_config` poly, `power=1.0`, `min_lr=0.0`, linear warm-up of 1500 iterations from
  `warmup_ratio=1e-6`; 160k iterations (`schedules/schedule_160k.py`); test mode `slide` with
  512 crops and a (341, 341) stride; the data pipeline of `configs/_base_/datasets/ade20k.py`:
  `reduce_zero_label=True`, training images rescaled (aspect kept) to `img_scale=(2048, 512)` times
  a ratio in (0.5, 2.0), a 512 random crop whose most frequent class covers under 75% of it
  (`cat_max_ratio=0.75`, 10 tries), a horizontal flip with probability 0.5, mmseg's
  `PhotoMetricDistortion`, ImageNet normalisation (mean 123.675/116.28/103.53, std
  58.395/57.12/57.375 on 0-255 RGB), padding to 512 (image 0, labels 255); test images rescaled
  (aspect kept) to (2048, 512), i.e. a 512 short side unless the long side would pass 2048.
- `evaluation/README.md`, the commands iBOT ran: ViT-S/16 UperNet with `data.samples_per_gpu=4`
  on 4 GPUs (batch 16), `model.backbone.out_with_norm=true` (every map through the final
  LayerNorm) and `optimizer.lr=3e-5`; the linear head (the command is given for ViT-B/16) with
  `data.samples_per_gpu=4` on 4 GPUs (batch 16), `out_with_norm=true` and `optimizer.lr=8e-4`,
  which replaces the config file's 3e-5: the lr iBOT ran the linear protocol with, and the
  default here.

Images are normalised with the evaluated model's processor mean and std (DoRA's are ImageNet's,
the values above). The geometry scales with the crop: `img_scale` is (4 c, c) for a crop `c` and the test stride
`2 c // 3` (341 for 512), so a small `--crop-size` keeps the recipe's proportions.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

PROTOCOLS = ("ibot",)
"""Recipes `dora-hf eval segmentation --protocol` knows."""
HEADS = ("linear", "upernet")

IGNORE_INDEX = 255
"""Label of unscored pixels: ADE20K's "other" after `reduce_labels`, and the crop padding."""

IBOT_STAGES = (4, 6, 8, 12)
"""Blocks (1-based, `DoraBackbone` stages) the heads read on a 12-block ViT: iBOT's [3, 5, 7, 11]."""


@dataclass(frozen=True)
class SegmentationRecipe:
    """One recipe's parameters; `ibot_recipe(head)` gives iBOT's."""

    head: str
    learning_rate: float
    layer_decay: float
    """Each block's lr is `layer_decay ** (depth + 1 - block)` times the head's; 1.0: none."""
    iterations: int = 160_000
    batch_size: int = 16
    crop_size: int = 512
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_iterations: int = 1500
    warmup_ratio: float = 1e-6
    poly_power: float = 1.0
    min_learning_rate: float = 0.0
    drop_path_rate: float = 0.1
    """Stochastic depth of the fine-tuned backbone (UperNet); a frozen backbone runs without."""
    scale_ratio_range: tuple[float, float] = (0.5, 2.0)
    long_side_factor: int = 4
    """`img_scale` is (`long_side_factor` x crop, crop): mmseg's (2048, 512) for a 512 crop."""
    cat_max_ratio: float = 0.75
    flip_probability: float = 0.5
    brightness_delta: int = 32
    contrast_range: tuple[float, float] = (0.5, 1.5)
    saturation_range: tuple[float, float] = (0.5, 1.5)
    hue_delta: int = 18
    decoder_channels: int = 384
    """UperNet's `channels` (iBOT sets 384 for ViT-S; the mmseg base config has 512)."""
    auxiliary_channels: int = 256
    auxiliary_loss_weight: float = 0.4
    pool_scales: tuple[int, ...] = (1, 2, 3, 6)
    test_stride: int | None = None
    """Sliding-window stride at test time; None: `2 * crop_size // 3` (iBOT's 341 for 512)."""

    @property
    def stride(self) -> int:
        return self.test_stride if self.test_stride is not None else max(1, 2 * self.crop_size // 3)

    @property
    def image_scale(self) -> tuple[int, int]:
        """mmseg's `img_scale` (long, short) for this crop."""
        return (self.long_side_factor * self.crop_size, self.crop_size)

    def with_options(self, **options: object) -> SegmentationRecipe:
        """The recipe with the options that are not None replaced."""
        return replace(self, **{key: value for key, value in options.items() if value is not None})


IBOT_LINEAR = SegmentationRecipe(head="linear", learning_rate=8e-4, layer_decay=1.0)
IBOT_UPERNET = SegmentationRecipe(head="upernet", learning_rate=3e-5, layer_decay=0.9)


def ibot_recipe(head: str) -> SegmentationRecipe:
    """iBOT's recipe for `head` ("linear" or "upernet")."""
    return {"linear": IBOT_LINEAR, "upernet": IBOT_UPERNET}[head]


def ibot_stages(num_hidden_layers: int) -> tuple[int, ...]:
    """iBOT's four blocks scaled to a depth: 4, 6, 8, 12 of 12 (and 8, 12, 16, 24 of 24, as its ViT-L)."""
    return tuple(num_hidden_layers * stage // 12 for stage in IBOT_STAGES)
