"""One DINO training step on video frames: the baseline DoRA is compared with.

Every frame of every clip of the batch is one DINO image (B*T images per step), so DINO reads
exactly the frames DoRA reads. Per step: the multi-crop views of all images
(`data/dino_views.py`), one teacher forward over their 2*B*T global crops, one student call over
the global and the L*B*T local crops, DINO's loss (`dino_loss.py`) and its backward; clipping,
the frozen last layer, the optimiser step, the center and the EMA are DoRA's own
(`SelfDistillationStep`). The model stays `DoraForPreTraining`; its tracking head is not used.
"""

from __future__ import annotations

import torch

from .step import MultiViewStudent, SelfDistillationStep


class DinoStudent(MultiViewStudent):
    """The student over DINO's crops as one module call: the backbone once per resolution (global
    crops at the model's size, local crops with interpolated position embeddings) and the head
    once over both, as DINO's `MultiCropWrapper` does."""

    def forward(self, global_views: torch.Tensor, local_views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Student logits of the global crops `(N, 2, D)` and of the local crops `(N, L, D)`.

        Args:
            global_views: `(N, 2, C, H, W)`.
            local_views: `(N, L, C, h, w)`.
        """
        features = self.model.dora(pixel_values=global_views.flatten(0, 1)).pooler_output
        global_logits, local_logits = self.project(features, local_views.flatten(0, 1))
        return global_logits.unflatten(0, global_views.shape[:2]), local_logits.unflatten(0, local_views.shape[:2])


class DinoTrainingStep(SelfDistillationStep):
    """One DINO step over the frames of a batch of clips; see `SelfDistillationStep` for the rest."""

    student_class = DinoStudent

    def _forward_backward(
        self, frames: torch.Tensor, epoch: float, return_tracks: bool
    ) -> tuple[torch.Tensor, torch.Tensor, None]:
        """Crops, teacher, student and loss of one micro-batch, then its backward (no tracks)."""
        crops = self.make_views(frames.to(self.accelerator.device, non_blocking=True))
        global_views, local_views = crops.global_views, crops.local_views
        with self.accelerator.autocast():
            with torch.no_grad():  # the teacher sees the two global crops only
                teacher_logits = self.teacher(global_views.flatten(0, 1)).logits.unflatten(0, global_views.shape[:2])
            global_logits, local_logits = self.student(global_views, local_views)
            loss = self.loss_fn(teacher_logits, global_logits, local_logits, epoch, update_center=False)
        self.accelerator.backward(loss)
        return loss.detach(), teacher_logits, None
