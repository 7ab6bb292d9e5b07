"""DINO's multi-crop self-distillation loss, the baseline DoRA is compared with."""

from __future__ import annotations

import torch
from torch import Tensor

from .self_distillation import SelfDistillationLoss, soft_cross_entropy


class DinoLoss(SelfDistillationLoss):
    """Implementation of the loss described in 'Emerging Properties in Self-Supervised Vision
    Transformers' (DINO) [0], as its reference code computes it (``DINOLoss`` in
    ``main_dino.py`` [1]).

    Every student view of an image, its 2 global crops and its L local crops, is compared with
    each of the teacher's 2 global crops except the same crop: ``2 * (2 + L) - 2`` terms
    ``CE(p_q, s_v)``, each averaged over the batch, summed and divided by their number. The
    teacher targets ``p_q = softmax((t_q - center) / tau)`` and the center come from
    :class:`~dora_hf.losses.dora_loss.SelfDistillationLoss`, the same as DoRA's.

    The terms are not computed one by one: the cross-entropy is linear in its target, so the
    terms of student view ``v`` add up to ``n_v * CE(mean of its targets, s_v)``. Global crop 0
    meets teacher crop 1 only, global crop 1 teacher crop 0, and each local crop the mean of the
    two teacher targets (twice), so the loss is two batched cross-entropies
    (:func:`~dora_hf.losses.dora_loss.soft_cross_entropy`), one per resolution.

    - [0]: Caron et al., ICCV 2021, https://arxiv.org/abs/2104.14294
    - [1]: https://github.com/facebookresearch/dino

    Examples:
        >>> loss_fn = DinoLoss(output_dim=65536)
        >>> # teacher: (N, 2, D) global crops; student: (N, 2, D) global crops, (N, L, D) local crops
        >>> loss = loss_fn(teacher_logits, student_global_logits, student_local_logits, epoch)
    """

    def _check_shapes(self, teacher: Tensor, global_: Tensor, local: Tensor) -> None:
        """Fail early with the offending shapes rather than inside an einsum."""
        if teacher.dim() != 3 or teacher.shape[1] != 2 or global_.shape != teacher.shape:
            raise ValueError(
                "expected teacher_logits and student_global_logits of shape (N, 2, D), got "
                f"{tuple(teacher.shape)} and {tuple(global_.shape)}"
            )
        if local.dim() != 3 or (local.shape[0], local.shape[2]) != (teacher.shape[0], teacher.shape[2]):
            raise ValueError(
                f"student_local_logits has shape {tuple(local.shape)}, which does not match "
                f"teacher_logits {tuple(teacher.shape)} in N or D"
            )
        if teacher.shape[2] != self.output_dim:
            raise ValueError(f"logits have D={teacher.shape[2]}, but the loss was built for {self.output_dim}")

    def forward(
        self,
        teacher_logits: Tensor,
        student_global_logits: Tensor,
        student_local_logits: Tensor,
        epoch: int | float,
        update_center: bool = True,
    ) -> Tensor:
        """Cross-entropy of every student crop against the teacher's other global crop(s).

        Args:
            teacher_logits:
                ``(N, 2, D)`` teacher outputs for the 2 global crops of each of N images.
            student_global_logits:
                ``(N, 2, D)`` student outputs for the same global crops.
            student_local_logits:
                ``(N, L, D)`` student outputs for the L local crops of each image (L may be 0).
            epoch:
                Current (possibly fractional) epoch, for the teacher temperature schedule.
            update_center:
                Update the center from ``teacher_logits`` (all ``2 * N`` rows) after computing
                the loss, as DINO does. The loss itself always uses the center from before.

        Returns:
            The scalar loss, in float32 (or float64 for float64 inputs).
        """
        return self._distil(teacher_logits, student_global_logits, student_local_logits, epoch, update_center)

    def _loss(self, teacher: Tensor, global_: Tensor, local: Tensor, epoch: int | float) -> Tensor:
        """Loss with the current center; float32 at least, whatever the input precision."""
        dtype = torch.promote_types(teacher.dtype, torch.float32)
        images, num_local = teacher.shape[0], local.shape[1]
        targets = self.teacher_targets(teacher, epoch, dtype)  # (N, 2, D)
        # Global crop v against the teacher's other crop: logits (N, 1, 2, D), targets swapped.
        total = soft_cross_entropy(global_.unsqueeze(1), targets.flip(1), self.student_temp, dtype).sum()
        if num_local:
            # Each local crop against both teacher crops: twice the CE against their mean.
            both = targets.mean(dim=1, keepdim=True)  # (N, 1, D)
            total = total + 2.0 * soft_cross_entropy(local.unsqueeze(2), both, self.student_temp, dtype).sum()
        return total / (images * (2 * (2 + num_local) - 2))
