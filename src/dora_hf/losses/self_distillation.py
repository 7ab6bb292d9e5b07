"""The teacher side of self-distillation that DoRA and DINO share: centred, sharpened teacher
targets and a memory-light soft cross-entropy."""

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


class SelfDistillationLoss(nn.Module):
    """The teacher side of DINO self-distillation, shared by :class:`DoraLoss` and
    :class:`~dora_hf.losses.dino_loss.DinoLoss`, which differ only in the views they compare.

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
