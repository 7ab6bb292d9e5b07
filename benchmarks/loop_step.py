"""The DoRA step with the structure of the authors' reference training loop (frame by frame,
object by object), written for `bench_step.py` to compare the batched step with; see its docstring.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from dora_hf.views.dora_views import DoraViews
from dora_hf.losses.self_distillation import teacher_temperature_at
from dora_hf.training.gradients import cancel_last_layer_gradients_
from dora_hf.training.optimizer import parameter_groups

from step_pieces import STEPS_PER_EPOCH, Pieces


class LoopStep:
    """The step with the reference training loop's structure (see the module docstring)."""

    def __init__(self, pieces: Pieces, device: torch.device, precision: str, attention: str, granularity: str):
        self.config = pieces.config
        self.granularity = granularity
        self.recipe = pieces.recipe
        self.schedules = pieces.schedules
        self.device = device
        self.student, self.teacher = pieces.fresh_pair()
        if attention == "eager":
            for model in (self.student, self.teacher):
                model.config._attn_implementation = "eager"
        self.student.to(device)
        self.teacher.to(device)
        self.optimizer = torch.optim.AdamW(parameter_groups(self.student))  # torch's default implementation
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[precision]
        self.scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
        self.center = torch.zeros(1, self.config.head_out_dim, device=device)
        # The batched step's head stream on rank 0 (seed * 1000 + 1), so both track the same heads.
        self.head_generator = torch.Generator().manual_seed(self.recipe.seed * 1000 + 1)
        self.view_generator = torch.Generator().manual_seed(self.recipe.seed * 1000)
        self.views = pieces.views
        self.last_param_norms: list[float] = []

    def student_logits(self, images: torch.Tensor, interpolate: bool) -> torch.Tensor:
        return self.student(pixel_values=images, interpolate_pos_encoding=interpolate).logits

    def student_masked(self, masked: torch.Tensor) -> list[torch.Tensor]:
        """Logits ``(B, T, D)`` of each object's masked views: one call per object (``B*T`` images),
        or, with ``granularity="frame"``, one per object and frame (``B`` images), as the
        reference's multi-crop wrapper loops over a clip's frames inside each call."""
        objects, batch, frames = masked.shape[:3]
        if self.granularity == "object":
            return [
                self.student_logits(masked[j].flatten(0, 1), False).unflatten(0, (batch, frames))
                for j in range(objects)
            ]
        return [
            torch.stack([self.student_logits(masked[j][:, t], False) for t in range(frames)], dim=1)
            for j in range(objects)
        ]

    def student_local(self, local_views: torch.Tensor) -> list[torch.Tensor]:
        """Logits ``(B, T, D)`` of each local crop: one call per crop (``B*T`` images), or, with
        ``granularity="frame"``, one call per frame over all crops of that frame (``L*B`` images)."""
        batch, crops, frames = local_views.shape[:3]
        if self.granularity == "object":
            return [
                self.student_logits(local_views[:, c].flatten(0, 1), True).unflatten(0, (batch, frames))
                for c in range(crops)
            ]
        per_frame = [
            self.student_logits(local_views[:, :, t].transpose(0, 1).flatten(0, 1), True) for t in range(frames)
        ]
        return [torch.stack([logits[c * batch : (c + 1) * batch] for logits in per_frame], dim=1) for c in range(crops)]

    @torch.no_grad()
    def sinkhorn(self, scores: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        q = scores.float() / cfg.sinkhorn_epsilon
        q = q - q.max(-1).values.max(-1).values[:, None, None]
        q = torch.exp(q).transpose(-2, -1)  # (B, k, P)
        infinite = torch.nonzero(torch.isinf(q))  # the reference's inf scan: a host sync
        if len(infinite):
            q = torch.nan_to_num(q, posinf=0.0)
        q = q / q.sum(-1).sum(-1)[:, None, None]
        objects, patches = q.shape[1], q.shape[2]
        for _ in range(cfg.sinkhorn_iterations):
            q = q / q.sum(dim=2, keepdim=True)
            q = q / objects
            q = q / q.sum(dim=1, keepdim=True)
            q = q / patches
        q = q * patches
        return q.transpose(-2, -1)  # (B, P, k)

    @torch.no_grad()
    def track(self, global_views, queries, keys, cls_attention, patch_features) -> torch.Tensor:
        """Masked views ``(k, B, T, C, H, W)``: discovery on frame 0, then frames x objects loops."""
        cfg = self.config
        batch, frames, channels, height, width = global_views.shape
        grid_h, grid_w = height // cfg.patch_size, width // cfg.patch_size
        heads = torch.randperm(cfg.num_attention_heads, generator=self.head_generator)[: cfg.num_objects]
        first_query = queries[0].transpose(1, 2).flatten(2).float()  # (B, P, d)
        attention = cls_attention[0][:, heads.to(self.device)].float()  # (B, k, P)
        prototypes = torch.einsum("bkn,bnd->bkd", attention, first_query)
        normalized = patch_features[0].float()
        normalized = normalized / normalized.norm(dim=-1, keepdim=True)
        plan = self.sinkhorn(normalized @ prototypes.transpose(-2, -1))
        refined = plan.transpose(-2, -1) @ normalized  # (B, k, d)
        masked = torch.zeros(cfg.num_objects, batch, frames, channels, height, width, device=self.device)
        scale = refined.shape[2] ** -0.5
        for t in range(frames):
            key_frame = keys[t].transpose(1, 2).flatten(2).float()  # (B, P, d)
            tube = [(refined[:, j].unsqueeze(1) @ key_frame.transpose(-2, -1)) * scale for j in range(cfg.num_objects)]
            tube = [logits.softmax(dim=-1) for logits in tube]
            for j in range(cfg.num_objects):
                attn = tube[j].squeeze(1)
                attn = attn / attn.norm(dim=-1, keepdim=True)
                if cfg.mask_threshold_scope == "batch":
                    threshold = torch.mean(attn)
                else:
                    threshold = attn.mean(dim=-1, keepdim=True)
                mask = (attn > threshold).float().reshape(batch, grid_h, grid_w)
                mask = F.interpolate(mask.unsqueeze(1), scale_factor=cfg.patch_size, mode="nearest")
                if cfg.mask_mode == "remove":
                    mask = 1.0 - mask
                masked[j, :, t] = global_views[:, t] * torch.cat((mask, mask, mask), dim=1)
        return masked

    def loss(self, teacher_logits, masked_logits, local_logits, epoch: float) -> torch.Tensor:
        """Nested Python loops over objects, frames and local crops, as the reference's loss."""
        r = self.recipe
        tau = teacher_temperature_at(epoch, r.warmup_teacher_temp, r.teacher_temp, r.warmup_teacher_temp_epochs)
        student_temp = r.student_temp
        compat = r.reference_compat_loss
        objects, frames = len(masked_logits), teacher_logits.shape[0]
        total = 0.0
        frame_loss = 0.0
        for j in range(objects):
            per_object = 0.0
            for t in range(frames):
                target = F.softmax((teacher_logits[t].float() - self.center) / tau, dim=-1)
                student = masked_logits[j][:, t].float() / student_temp
                mask_term = torch.sum(-target * F.log_softmax(student, dim=-1), dim=-1).mean()
                local_term, terms = 0.0, 0
                for c in range(len(local_logits)):
                    if compat and c == 0:
                        continue  # the reference skips local crop 0
                    student = local_logits[c][:, t].float() / student_temp
                    local_term = local_term + torch.sum(-target * F.log_softmax(student, dim=-1), dim=-1).mean()
                    terms += 1
                term = (mask_term + local_term / terms) * 0.5
                if compat:
                    frame_loss = frame_loss + term
                else:
                    per_object = per_object + term
            if compat:
                frame_loss = frame_loss / frames  # never reset between objects, as in the reference
                total = total + frame_loss
            else:
                total = total + per_object / frames
        loss = total / objects
        with torch.no_grad():
            batch_center = teacher_logits.float().flatten(0, 1).mean(dim=0, keepdim=True)
            self.center = self.center * r.center_momentum + batch_center * (1 - r.center_momentum)
        return loss

    def make_views(self, frames: torch.Tensor) -> DoraViews:
        return self.views(frames, self.view_generator)

    def __call__(self, views: DoraViews, step: int) -> torch.Tensor:
        cfg, r = self.config, self.recipe
        epoch = step / STEPS_PER_EPOCH
        momentum = self.schedules.teacher_momentum(step)
        for i, group in enumerate(self.optimizer.param_groups):
            group["lr"] = self.schedules.learning_rate(step)
            if i == 0:
                group["weight_decay"] = self.schedules.weight_decay(step)
        global_views, local_views = views.global_views, views.local_views
        batch, frames = global_views.shape[:2]
        heads, head_dim, d = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads, cfg.hidden_size
        patches = (global_views.shape[-1] // cfg.patch_size) ** 2
        autocast = torch.autocast(
            self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None
        )
        with autocast:
            with torch.no_grad():
                teacher_logits = torch.zeros(frames, batch, cfg.head_out_dim, device=self.device)
                queries = torch.zeros(frames, batch, heads, patches, head_dim, device=self.device)
                keys = torch.zeros_like(queries)
                cls_attention = torch.zeros(frames, batch, heads, patches, device=self.device)
                patch_features = torch.zeros(frames, batch, patches, d, device=self.device)
                for t in range(frames):
                    out = self.teacher(pixel_values=global_views[:, t], output_tracker_features=True)
                    teacher_logits[t] = out.logits
                    queries[t] = out.tracker_features.queries
                    keys[t] = out.tracker_features.keys
                    cls_attention[t] = out.tracker_features.cls_attention
                    patch_features[t] = out.tracker_features.patch_features
                masked = self.track(global_views, queries, keys, cls_attention, patch_features)
            masked_logits = self.student_masked(masked)
            local_logits = self.student_local(local_views)
            loss = self.loss(teacher_logits, masked_logits, local_logits, epoch)
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"loop formulation: loss is {loss.item()}")
        self.optimizer.zero_grad()
        if self.scaler is None:
            loss.backward()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        if r.clip_grad:
            norms = []
            for _, param in self.student.named_parameters():
                if param.grad is not None:
                    norm = param.grad.data.norm(2)
                    norms.append(norm.item())
                    coef = r.clip_grad / (norm + 1e-6)
                    if coef < 1:
                        param.grad.data.mul_(coef)
            self.last_param_norms = norms
        cancel_last_layer_gradients_(self.student, epoch, r.freeze_last_layer)
        if self.scaler is None:
            self.optimizer.step()
        else:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        with torch.no_grad():
            for param_q, param_k in zip(self.student.parameters(), self.teacher.parameters()):
                param_k.data.mul_(momentum).add_((1 - momentum) * param_q.detach().data)
        return loss.detach()
