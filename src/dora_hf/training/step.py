"""One DoRA training step, readable top to bottom (DINO's `train_one_epoch` body, batched).

Per step, for a batch of B clips of T frames: one teacher forward over the B*T global views
(with tracker features), one tracking-head call over all clips, frames and objects, one student
call over the k*B*T masked views (the B*T global views embedded once, each object's patch mask
applied to the patch tokens) and the L*B*T local views, the loss as batched tensor maths,
backward, per-parameter clipping, the frozen last layer in early epochs, the optimiser step with
this step's learning rate and weight decay, and the EMA teacher update. No Python loop over
frames, objects or crops, and no host sync inside the step.

Everything after the backward, and the accumulation around it, is `SelfDistillationStep`, which
the DINO baseline's step (`dino_step.py`) shares: the two methods differ only in their views,
their forward and their loss."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..losses.self_distillation import SelfDistillationLoss
from ..modeling import DoraForPreTraining, DoraTrackingOutput
from ..views.dino_views import DinoCrops, DinoViews
from ..views.dora_views import ClipViews, DoraViews
from .ema import ema_update_
from .gradients import cancel_last_layer_gradients_, clip_gradients_per_parameter_
from .optimizer import set_optimizer_hyperparameters_
from .schedules import DoraSchedules


class MultiViewStudent(nn.Module):
    """The student as one module call over both resolutions.

    The backbone runs once per resolution (masked views at the global size, local views at the
    local size with interpolated position embeddings) and the projection head once over both,
    so DDP sees a single forward per step.

    The masked views are never built as images: the tracking masks are constant on every patch,
    so the backbone embeds each global view once and multiplies its patch projections by the
    `k` object masks (`patch_mask`), which gives the tokens of the `k` masked images.
    """

    def __init__(self, model: DoraForPreTraining):
        super().__init__()
        self.model = model

    def forward(
        self, global_views: torch.Tensor, view_patch_masks: torch.Tensor, local_views: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Student logits of the masked views `(B, k, T, D)` and of the local views `(B, L, T, D)`.

        Args:
            global_views: `(B, T, C, H, W)` the frames' global views.
            view_patch_masks: `(B, k, T, gh, gw)` the patches each masked view keeps
                (`DoraTrackingOutput.view_patch_masks`).
            local_views: `(B, L, T, C, h, w)`.
        """
        batch, objects, frames = view_patch_masks.shape[:3]
        # Image-major masks, (B*T, k, P): sequence (b*T + t)*k + j is frame t of clip b under mask j.
        patch_mask = view_patch_masks.flatten(3).transpose(1, 2).flatten(0, 1)
        masked = self.model.dora(pixel_values=global_views.flatten(0, 1), patch_mask=patch_mask).pooler_output
        # Back to the loss's (B, k, T) order on the pooled features, which are small.
        masked = masked.unflatten(0, (batch, frames, objects)).transpose(1, 2).flatten(0, 2)
        masked_logits, local_logits = self.project(masked, local_views.flatten(0, 2))
        return masked_logits.unflatten(0, (batch, objects, frames)), local_logits.unflatten(0, local_views.shape[:3])

    def project(self, global_features: torch.Tensor, local_views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits of the global-size features `(n, d)` and of the local views `(m, C, h, w)`.

        The local views run through the backbone at their own size (interpolated position
        embeddings), then both sets of features through the projection head in one call.
        """
        features = [global_features]
        num_local = local_views.shape[0]
        if num_local:
            features.append(self.model.dora(pixel_values=local_views, interpolate_pos_encoding=True).pooler_output)
        logits = self.model.projection_head(torch.cat(features))
        global_logits, local_logits = logits.split([global_features.shape[0], num_local])
        return global_logits, local_logits


@dataclass
class StepOutput:
    """What a step returns; tensors stay on the device (read them only when logging)."""

    loss: torch.Tensor
    learning_rate: float
    weight_decay: float
    teacher_momentum: float
    tracks: DoraTrackingOutput | None = None


class SelfDistillationStep:
    """What DoRA's and DINO's steps share; `accelerator` is an `accelerate.Accelerator`.

    Everything but the views and the forward: this step's learning rate, weight decay and teacher
    momentum, gradient accumulation, per-parameter clipping, the frozen last layer, the optimiser
    step, the center update and the EMA teacher. A subclass gives `_forward_backward` (views,
    teacher, student, loss and backward of one micro-batch) and its `student_class`.

    `student` is the (possibly DDP-wrapped) `student_class` around `student_model`; `student_model`
    and `teacher` are the bare `DoraForPreTraining` networks, paired by parameter name for the EMA.
    """

    student_class: type[nn.Module] = MultiViewStudent

    def __init__(
        self,
        *,
        accelerator,
        student: nn.Module,
        student_model: DoraForPreTraining,
        teacher: DoraForPreTraining,
        loss_fn: SelfDistillationLoss,
        optimizer: torch.optim.Optimizer,
        schedules: DoraSchedules,
        views: ClipViews | DinoViews,
        steps_per_epoch: int,
        clip_grad: float = 3.0,
        freeze_last_layer: float = 1.0,
        seed: int = 0,
    ):
        self.accelerator = accelerator
        self.student = student
        self.student_model = student_model
        self.teacher = teacher
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.schedules = schedules
        self.views = views
        self.steps_per_epoch = steps_per_epoch
        self.clip_grad = clip_grad
        self.freeze_last_layer = freeze_last_layer
        # CPU generators: view parameters and tracked heads are drawn on the host, so the step
        # never waits on the device for a random number; offset by rank so ranks differ.
        rank = accelerator.process_index
        self.view_generator = torch.Generator().manual_seed(seed * 1000 + 2 * rank)
        self.head_generator = torch.Generator().manual_seed(seed * 1000 + 2 * rank + 1)

    def make_views(self, frames: torch.Tensor) -> DoraViews | DinoCrops:
        """Views built on the frames' device (the accelerator when there is one)."""
        return self.views(frames, self.view_generator)

    def __call__(
        self, frames: torch.Tensor | Sequence[torch.Tensor], step: int, return_tracks: bool = False
    ) -> StepOutput:
        """Run one optimisation step on uint8 clips `(B, T, 3, H, W)`, or on a list of such
        micro-batches accumulated into one step (as many as the accelerator's
        `gradient_accumulation_steps`).

        Accumulated micro-batches make the same step as their concatenation: the loss is a mean
        per micro-batch that `accelerator.backward` divides by their number, all micro-batches
        share one draw of tracked heads (DoRA) and the center before the step, and the center and the EMA
        are updated once, after the optimiser step, from the teacher outputs of all of them.
        """
        micro_batches = [frames] if isinstance(frames, torch.Tensor) else list(frames)
        if len(micro_batches) != self.accelerator.gradient_accumulation_steps:
            raise ValueError(
                f"got {len(micro_batches)} micro-batch(es) for gradient_accumulation_steps="
                f"{self.accelerator.gradient_accumulation_steps}"
            )
        epoch = step / self.steps_per_epoch
        learning_rate = self.schedules.learning_rate(step)
        weight_decay = self.schedules.weight_decay(step)
        momentum = self.schedules.teacher_momentum(step)
        set_optimizer_hyperparameters_(self.optimizer, learning_rate, weight_decay)

        self.optimizer.zero_grad(set_to_none=True)
        head_state = self.head_generator.get_state()
        teacher_logits_seen: list[torch.Tensor] = []
        losses: list[torch.Tensor] = []
        for micro_batch in micro_batches:
            self.head_generator.set_state(head_state)  # one head draw per optimiser step
            with self.accelerator.accumulate(self.student):
                loss, teacher_logits, tracks = self._forward_backward(micro_batch, epoch, return_tracks)
            teacher_logits_seen.append(teacher_logits)
            losses.append(loss)

        if self.clip_grad:
            self.accelerator.unscale_gradients(self.optimizer)
            clip_gradients_per_parameter_(self.student_model.parameters(), self.clip_grad)
        cancel_last_layer_gradients_(self.student_model, epoch, self.freeze_last_layer)
        self.optimizer.step()
        self.loss_fn.update_center(torch.cat(teacher_logits_seen))
        ema_update_(self.teacher, self.student_model, momentum)
        return StepOutput(
            loss=torch.stack(losses).mean(),
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            teacher_momentum=momentum,
            tracks=tracks if return_tracks else None,
        )

    def _forward_backward(
        self, frames: torch.Tensor, epoch: float, return_tracks: bool
    ) -> tuple[torch.Tensor, torch.Tensor, DoraTrackingOutput | None]:
        """Loss (detached), teacher logits and tracks (or None) of one micro-batch, after its backward."""
        raise NotImplementedError


class DoraTrainingStep(SelfDistillationStep):
    """One DoRA step: the teacher tracks objects through each clip and the student sees them."""

    def _forward_backward(
        self, frames: torch.Tensor, epoch: float, return_tracks: bool
    ) -> tuple[torch.Tensor, torch.Tensor, DoraTrackingOutput]:
        """Views, teacher, tracking head, student and loss of one micro-batch, then its backward."""
        views = self.make_views(frames.to(self.accelerator.device, non_blocking=True))
        global_views, local_views = views.global_views, views.local_views
        batch, frames_per_clip = global_views.shape[:2]

        with self.accelerator.autocast():
            # Teacher: every frame's full global view, plus what the tracking head reads.
            with torch.no_grad():
                teacher_out = self.teacher(global_views.flatten(0, 1), output_tracker_features=True)
                # Pixel masks only for a caller who asked for the tracks; the student masks tokens.
                tracks = self.teacher.tracking_head(
                    teacher_out.tracker_features,
                    global_views,
                    generator=self.head_generator,
                    output_pixel_masks=return_tracks,
                )
            teacher_logits = teacher_out.logits.unflatten(0, (batch, frames_per_clip))

            # Student: the k masked views of every frame and its L local views, one call.
            masked_logits, local_logits = self.student(global_views, tracks.view_patch_masks, local_views)
            loss = self.loss_fn(teacher_logits, masked_logits, local_logits, epoch, update_center=False)

        self.accelerator.backward(loss)
        return loss.detach(), teacher_logits, tracks
