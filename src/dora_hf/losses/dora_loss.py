"""DoRA's loss between tracked-object views and frames (the shared teacher side is in
:mod:`dora_hf.losses.self_distillation`, DINO's loss in :mod:`dora_hf.losses.dino_loss`)."""

from __future__ import annotations

import torch
from torch import Tensor

from .self_distillation import SelfDistillationLoss, soft_cross_entropy


def reference_object_weights(num_objects: int, num_frames: int) -> Tensor:
    """Weight of each object's frame sum in the reference loss, shape ``(num_objects,)``.

    The released DoRA code divides a per-frame accumulator by ``T`` after each object but never
    resets it, so ``F_0 = X_0 / T``, ``F_j = (F_{j-1} + X_j) / T`` and the loss is
    ``mean_j F_j``, where ``X_j`` is object ``j``'s sum over frames. Unrolled, object ``j``
    weighs ``(1/K) * sum_{m=1}^{K-j} T^{-m}``: earlier objects count more. Computed in float64.
    """
    inv_powers = float(num_frames) ** -torch.arange(1, num_objects + 1, dtype=torch.float64)
    tail_sums = torch.cumsum(inv_powers, dim=0)  # tail_sums[n-1] = sum_{m=1}^{n} T^{-m}
    return tail_sums.flip(0) / num_objects


class DoraLoss(SelfDistillationLoss):
    """Implementation of the loss described in 'Is ImageNet worth 1 video? Learning strong
    image encoders from 1 long unlabelled video' (DoRA). [0]

    DINO self-distillation where the teacher sees the full global view of every frame and the
    student sees, for each frame, one masked view per tracked object plus the frame's local
    crops. The teacher output is centred and sharpened; no gradient reaches it.

    By default the loss is the one the paper describes:
    ``mean_{j,t} ( CE(p_t, s_{j,t}) + mean_c CE(p_t, l_{c,t}) ) / 2``.
    ``reference_compat=True`` instead follows the code published by the authors [1], which
    skips local view 0 and lets earlier objects weigh more (it never resets its per-frame
    accumulator between objects); use it only to reproduce released checkpoints.

    The teacher temperature follows DINO's linear warm-up schedule (constant 0.04 in the DoRA
    recipe); the center is an exponential moving average of the teacher logits over all frames
    and clips of the step, averaged across processes.

    - [0]: DoRA, ICLR 2024, https://arxiv.org/abs/2310.08584
    - [1]: https://github.com/shashankvkt/DoRA_ICLR24

    Attributes:
        reference_compat:
            Reproduce the released code's weighting instead of the intended loss.
        (the others):
            See :class:`SelfDistillationLoss`.

    Examples:
        >>> loss_fn = DoraLoss(output_dim=65536)
        >>> # teacher: (B, T, D); masked views: (B, K, T, D); local views: (B, L, T, D)
        >>> loss = loss_fn(teacher_logits, student_masked_logits, student_local_logits, epoch)
    """

    def __init__(
        self,
        output_dim: int = 65536,
        warmup_teacher_temp: float = 0.04,
        teacher_temp: float = 0.04,
        warmup_teacher_temp_epochs: int = 0,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
        reference_compat: bool = False,
    ) -> None:
        super().__init__(
            output_dim, warmup_teacher_temp, teacher_temp, warmup_teacher_temp_epochs, student_temp, center_momentum
        )
        self.reference_compat = reference_compat

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, reference_compat={self.reference_compat}"

    def _check_shapes(self, teacher: Tensor, masked: Tensor, local: Tensor) -> None:
        """Fail early with the offending shapes rather than inside an einsum."""
        if teacher.dim() != 3 or masked.dim() != 4 or local.dim() != 4:
            raise ValueError(
                "expected teacher_logits (B, T, D), student_masked_logits (B, K, T, D) and "
                f"student_local_logits (B, L, T, D); got {tuple(teacher.shape)}, "
                f"{tuple(masked.shape)} and {tuple(local.shape)}"
            )
        batch, frames, dim = teacher.shape
        for name, logits in (("student_masked_logits", masked), ("student_local_logits", local)):
            if (logits.shape[0], logits.shape[2], logits.shape[3]) != (batch, frames, dim):
                raise ValueError(
                    f"{name} has shape {tuple(logits.shape)}, which does not match "
                    f"teacher_logits {tuple(teacher.shape)} in B, T or D"
                )
        if dim != self.output_dim:
            raise ValueError(f"logits have D={dim}, but the loss was built for {self.output_dim}")
        if frames < 1 or masked.shape[1] < 1:
            raise ValueError("need at least one frame (T >= 1) and one object (K >= 1)")
        min_local = 2 if self.reference_compat else 1
        if local.shape[1] < min_local:
            if self.reference_compat:
                raise ValueError(
                    "reference_compat=True skips local view 0 and averages over the others, "
                    f"so it needs at least 2 local views (L >= 2); got L={local.shape[1]}"
                )
            raise ValueError(f"need at least one local view (L >= 1); got L={local.shape[1]}")

    def forward(
        self,
        teacher_logits: Tensor,
        student_masked_logits: Tensor,
        student_local_logits: Tensor,
        epoch: int | float,
        update_center: bool = True,
    ) -> Tensor:
        """Cross-entropy of the student's masked and local views against the teacher's frames.

        Args:
            teacher_logits:
                ``(B, T, D)`` teacher outputs for the T global views (frames) of each clip.
            student_masked_logits:
                ``(B, K, T, D)`` student outputs for the masked view of object j in frame t.
            student_local_logits:
                ``(B, L, T, D)`` student outputs for the L local views of each frame.
            epoch:
                Current (possibly fractional) epoch, for the teacher temperature schedule.
            update_center:
                Update the center from ``teacher_logits`` after computing the loss, as DINO
                does. The loss itself always uses the center from before this step.

        Returns:
            The scalar loss, in float32 (or float64 for float64 inputs).
        """
        return self._distil(
            teacher_logits, student_masked_logits, student_local_logits, epoch, update_center
        )

    def _loss(self, teacher: Tensor, masked: Tensor, local: Tensor, epoch: int | float) -> Tensor:
        """Loss with the current center; float32 at least, whatever the input precision."""
        dtype = torch.promote_types(teacher.dtype, torch.float32)
        batch, frames = teacher.shape[0], teacher.shape[1]
        targets = self.teacher_targets(teacher, epoch, dtype)  # (B, T, D)

        if self.reference_compat:
            local = local[:, 1:]  # the reference skips local view 0
        # Batch-mean cross-entropies, without a float32 copy of the student logits (which are
        # (B, K + L, T, 65536)); the local term does not depend on the object, so it is
        # computed once per (local view, frame) instead of once per object.
        ce_masked = soft_cross_entropy(masked, targets, self.student_temp, dtype).sum(dim=0) / batch  # (K, T)
        ce_local = soft_cross_entropy(local, targets, self.student_temp, dtype).sum(dim=0) / batch  # (L, T)

        if not self.reference_compat:
            return 0.5 * (ce_masked.mean() + ce_local.mean())

        # X_j = sum_t (mask_{j,t} + local_t) / 2, weighted as the unreset accumulator does.
        per_object = 0.5 * (ce_masked.sum(dim=1) + ce_local.mean(dim=0).sum())  # (K,)
        weights = reference_object_weights(ce_masked.shape[0], frames)
        return torch.einsum("k,k->", weights.to(device=per_object.device, dtype=dtype), per_object)
