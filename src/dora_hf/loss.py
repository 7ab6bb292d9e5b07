"""Self-distillation losses: the teacher side that DoRA and DINO share, and DoRA's loss between
tracked-object views and frames (DINO's is in :mod:`dora_hf.dino_loss`)."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn


def teacher_temperature_at(
    epoch: int | float,
    warmup_teacher_temp: float,
    teacher_temp: float,
    warmup_teacher_temp_epochs: int,
) -> float:
    """Teacher temperature at ``epoch``, in closed form so that fractional epochs work.

    At integer epochs this equals the reference schedule
    ``np.concatenate((np.linspace(w, t, n_warm), np.ones(n - n_warm) * t))[epoch]``, and it
    stays at ``teacher_temp`` past the end of that array. ``np.linspace`` includes both
    endpoints, so the warm-up reaches ``teacher_temp`` at epoch ``n_warm - 1``:
    ``tau(e) = w + (t - w) * e / (n_warm - 1)`` for ``0 <= e <= n_warm - 1``. With a single
    warm-up epoch, ``linspace`` holds only ``w``: the temperature is ``w`` for ``e < 1``.
    Negative epochs give the warm-up start.
    """
    if warmup_teacher_temp_epochs <= 0:
        return float(teacher_temp)
    if warmup_teacher_temp_epochs == 1:
        progress = 0.0 if epoch < 1 else 1.0
    else:
        progress = min(max(float(epoch) / (warmup_teacher_temp_epochs - 1), 0.0), 1.0)
    return float(warmup_teacher_temp + (teacher_temp - warmup_teacher_temp) * progress)


CHUNK_ELEMENTS = 1 << 24
"""How many student logits :func:`soft_cross_entropy` takes to float32 at once (64 MiB): its
working set, instead of float32 copies of all (B, K + L, T, 65536) of them."""


class _SoftCrossEntropy(torch.autograd.Function):
    """Per-row ``CE(p, s) = logsumexp(s / T) - p . s / T``, in ``dtype``, chunk by chunk.

    The identity holds because each target row sums to one. Only one chunk of the student
    logits exists in ``dtype`` at a time, in the forward and in the backward; what is kept for
    the backward is the logits as given (usually bfloat16) and the row log-sum-exps, instead of
    the float32 log-softmax of all of them.
    """

    @staticmethod
    def forward(ctx, logits: Tensor, targets: Tensor, temperature: float, dtype: torch.dtype) -> Tensor:
        batch = logits.shape[0]
        lse = torch.empty(logits.shape[:-1], dtype=dtype, device=logits.device)
        ce = torch.empty_like(lse)
        step = _chunk_rows(logits)
        for start in range(0, batch, step):
            rows = slice(start, start + step)
            scaled = logits[rows].to(dtype, copy=True).div_(temperature)  # (b, V, T, D)
            lse[rows] = torch.logsumexp(scaled, dim=-1)
            # p . s / T as a batched matmul; targets (b, T, D) are shared by the V views.
            dot = torch.einsum("bvtd,btd->bvt", scaled, targets[rows])
            ce[rows] = lse[rows] - dot
        ctx.save_for_backward(logits, targets, lse)
        ctx.temperature = temperature
        return ce

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_ce: Tensor) -> tuple[Tensor, None, None, None]:
        logits, targets, lse = ctx.saved_tensors
        temperature = ctx.temperature
        grad = torch.empty_like(logits, memory_format=torch.contiguous_format)
        step = _chunk_rows(logits)
        for start in range(0, logits.shape[0], step):
            rows = slice(start, start + step)
            # d CE / d s = (softmax(s / T) - p) / T, the softmax from the saved log-sum-exp.
            chunk = logits[rows].to(lse.dtype, copy=True).div_(temperature)
            chunk.sub_(lse[rows].unsqueeze(-1)).exp_().sub_(targets[rows].unsqueeze(1))
            grad[rows] = chunk.mul_(grad_ce[rows].unsqueeze(-1) / temperature)
        return grad, None, None, None


def _chunk_rows(logits: Tensor) -> int:
    """Leading-dimension rows per chunk: about ``CHUNK_ELEMENTS`` elements, at least one row."""
    per_row = max(logits[:1].numel(), 1)
    return max(CHUNK_ELEMENTS // per_row, 1)


def soft_cross_entropy(logits: Tensor, targets: Tensor, temperature: float, dtype: torch.dtype) -> Tensor:
    """``CE(p_{b,t}, s_{b,v,t})`` for student logits ``(B, V, T, D)`` and targets ``(B, T, D)``.

    Computed in ``dtype`` (float32 or float64) whatever the logits' precision, without a full
    ``dtype`` copy of the logits; returns ``(B, V, T)`` in ``dtype``. The targets must be
    probabilities (rows summing to one) and get no gradient.
    """
    return _SoftCrossEntropy.apply(logits, targets.detach().to(dtype), temperature, dtype)


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


class SelfDistillationLoss(nn.Module):
    """The teacher side of DINO self-distillation, shared by :class:`DoraLoss` and
    :class:`~dora_hf.dino_loss.DinoLoss`, which differ only in the views they compare.

    Teacher targets are ``softmax((t - center) / tau)`` with tau on DINO's warm-up schedule; the
    center is an exponential moving average of the raw teacher logits of each step, averaged
    across processes. Subclasses give ``_check_shapes`` and ``_loss`` (the cross-entropies of
    their student views against the targets); ``_distil`` runs them in float32 at least and then
    moves the center.

    Attributes:
        output_dim:
            Dimension of the projection head output (65536 in the recipe).
        warmup_teacher_temp:
            Teacher temperature at the start of the warm-up.
        teacher_temp:
            Teacher temperature after the warm-up.
        warmup_teacher_temp_epochs:
            Length of the reference warm-up array; see :func:`teacher_temperature_at`.
        student_temp:
            Student temperature.
        center_momentum:
            Momentum of the center's moving average.
        center:
            Buffer of shape ``(1, output_dim)``, saved in the state dict.
    """

    center: Tensor

    def __init__(
        self,
        output_dim: int = 65536,
        warmup_teacher_temp: float = 0.04,
        teacher_temp: float = 0.04,
        warmup_teacher_temp_epochs: int = 0,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
    ) -> None:
        super().__init__()
        if output_dim < 1:
            raise ValueError(f"output_dim must be positive, got {output_dim}")
        for name, value in (
            ("warmup_teacher_temp", warmup_teacher_temp),
            ("teacher_temp", teacher_temp),
            ("student_temp", student_temp),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if warmup_teacher_temp_epochs < 0:
            raise ValueError(
                f"warmup_teacher_temp_epochs must be >= 0, got {warmup_teacher_temp_epochs}"
            )
        if not 0.0 <= center_momentum <= 1.0:
            raise ValueError(f"center_momentum must be in [0, 1], got {center_momentum}")
        self.output_dim = output_dim
        self.warmup_teacher_temp = warmup_teacher_temp
        self.teacher_temp = teacher_temp
        self.warmup_teacher_temp_epochs = warmup_teacher_temp_epochs
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, output_dim))

    def extra_repr(self) -> str:
        return f"output_dim={self.output_dim}, teacher_temp={self.teacher_temp}, student_temp={self.student_temp}"

    def teacher_temperature(self, epoch: int | float) -> float:
        """Teacher temperature at ``epoch`` (fractional epochs allowed)."""
        return teacher_temperature_at(
            epoch,
            self.warmup_teacher_temp,
            self.teacher_temp,
            self.warmup_teacher_temp_epochs,
        )

    def teacher_targets(self, teacher: Tensor, epoch: int | float, dtype: torch.dtype) -> Tensor:
        """``softmax((t - center) / tau_epoch)`` in ``dtype``, with the center from before this step."""
        tau = self.teacher_temperature(epoch)
        center = self.center.to(dtype)
        return F.softmax((teacher.detach().to(dtype) - center) / tau, dim=-1)

    def _check_shapes(self, teacher: Tensor, first: Tensor, second: Tensor) -> None:
        raise NotImplementedError

    def _loss(self, teacher: Tensor, first: Tensor, second: Tensor, epoch: int | float) -> Tensor:
        raise NotImplementedError

    def _distil(
        self, teacher: Tensor, first: Tensor, second: Tensor, epoch: int | float, update_center: bool
    ) -> Tensor:
        """Checked shapes, the loss with the current center, then (optionally) the center update."""
        self._check_shapes(teacher, first, second)
        # Softmax over 65536 classes and sums of that length need at least float32; disabling
        # autocast keeps the einsums (batched matmuls) from being run in half precision.
        with torch.autocast(device_type=teacher.device.type, enabled=False):
            loss = self._loss(teacher, first, second, epoch)
        if update_center:
            self.update_center(teacher)
        return loss

    @torch.no_grad()
    def update_center(self, teacher_logits: Tensor) -> None:
        """Moving-average update of the center from the raw teacher logits of this step.

        The batch mean is over all teacher rows of the step (every frame of every clip; for DINO
        also both global crops) and, under ``torch.distributed``, over all processes: the row sum
        and the row count are reduced together, so ranks with unequal batch sizes are weighted by
        their rows. Nothing is copied to the host.
        """
        rows = teacher_logits.detach().reshape(-1, teacher_logits.shape[-1]).float()
        count = torch.full((1, 1), rows.shape[0], dtype=rows.dtype, device=rows.device)
        sum_and_count = torch.cat((rows.sum(dim=0, keepdim=True), count), dim=1)  # (1, D + 1)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(sum_and_count)
        batch_center = sum_and_count[:, :-1] / sum_and_count[:, -1:]
        self.center.mul_(self.center_momentum).add_(
            batch_center.to(self.center.dtype), alpha=1.0 - self.center_momentum
        )


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
