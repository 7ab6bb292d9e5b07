"""An independent, minimal DINO ViT forward over a state dict in the DINO/DoRA reference layout.

Written from the DINO `vision_transformer.py` structure (pre-norm blocks, fused qkv, exact GELU,
[CLS] + learned position embeddings, DINO's position-embedding interpolation for other input
sizes) with plain tensor maths, so tests can check the project's model and checkpoint conversion
against something that shares none of its code.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def dino_interpolate_pos_encoding(
    pos_embed: torch.Tensor, npatch: int, w: int, h: int, patch_size: int
) -> torch.Tensor:
    """DINO's `VisionTransformer.interpolate_pos_encoding`, line by line.

    As in DINO, `w` and `h` are the input's dims 2 and 3 (DINO unpacks `B, nc, w, h = x.shape`),
    so `w` is the image height here; `npatch` is the number of patch tokens of the input.
    """
    N = pos_embed.shape[1] - 1
    if npatch == N and w == h:
        return pos_embed
    class_pos_embed = pos_embed[:, 0]
    patch_pos_embed = pos_embed[:, 1:]
    dim = pos_embed.shape[-1]
    w0 = w // patch_size
    h0 = h // patch_size
    # DINO: "we add a small number to avoid floating point error in the interpolation"
    w0, h0 = w0 + 0.1, h0 + 0.1
    patch_pos_embed = F.interpolate(
        patch_pos_embed.reshape(1, int(math.sqrt(N)), int(math.sqrt(N)), dim).permute(0, 3, 1, 2),
        scale_factor=(w0 / math.sqrt(N), h0 / math.sqrt(N)),
        mode="bicubic",
    )
    assert int(w0) == patch_pos_embed.shape[-2] and int(h0) == patch_pos_embed.shape[-1]
    patch_pos_embed = patch_pos_embed.permute(0, 2, 3, 1).view(1, -1, dim)
    return torch.cat((class_pos_embed.unsqueeze(0), patch_pos_embed), dim=1)


def reference_vit_forward(
    state: dict[str, torch.Tensor], pixels: torch.Tensor, num_heads: int, eps: float = 1e-6
) -> dict[str, torch.Tensor]:
    """Return final-norm tokens and the last block's q, k and attention probabilities.

    Inputs of another size than the learned grid get DINO's interpolated position embeddings.
    """
    weight = state["patch_embed.proj.weight"]
    patch = weight.shape[-1]
    x = F.conv2d(pixels, weight, state["patch_embed.proj.bias"], stride=patch)
    x = x.flatten(2).transpose(1, 2)
    npatch = x.shape[1]
    x = torch.cat([state["cls_token"].expand(x.shape[0], -1, -1), x], dim=1)
    x = x + dino_interpolate_pos_encoding(state["pos_embed"], npatch, pixels.shape[2], pixels.shape[3], patch)
    dim = x.shape[-1]
    head_dim = dim // num_heads
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    last = {}
    for i in range(depth):
        p = f"blocks.{i}."
        h = F.layer_norm(x, (dim,), state[p + "norm1.weight"], state[p + "norm1.bias"], eps)
        qkv = h @ state[p + "attn.qkv.weight"].T + state[p + "attn.qkv.bias"]
        b, n, _ = qkv.shape
        qkv = qkv.reshape(b, n, 3, num_heads, head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1) * head_dim**-0.5).softmax(dim=-1)
        y = (attn @ v).transpose(1, 2).reshape(b, n, dim)
        x = x + y @ state[p + "attn.proj.weight"].T + state[p + "attn.proj.bias"]
        h = F.layer_norm(x, (dim,), state[p + "norm2.weight"], state[p + "norm2.bias"], eps)
        h = F.gelu(h @ state[p + "mlp.fc1.weight"].T + state[p + "mlp.fc1.bias"])
        x = x + h @ state[p + "mlp.fc2.weight"].T + state[p + "mlp.fc2.bias"]
        last = {"q": q, "k": k, "attn": attn}
    tokens = F.layer_norm(x, (dim,), state["norm.weight"], state["norm.bias"], eps)
    return {"tokens": tokens, **last}


def reference_head_forward(state: dict[str, torch.Tensor], features: torch.Tensor) -> torch.Tensor:
    """DINO head: Linear-GELU-Linear-GELU-Linear, L2 normalise, weight-normed last layer (g, v)."""
    x = F.gelu(features @ state["mlp.0.weight"].T + state["mlp.0.bias"])
    x = F.gelu(x @ state["mlp.2.weight"].T + state["mlp.2.bias"])
    x = x @ state["mlp.4.weight"].T + state["mlp.4.bias"]
    x = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    g, v = state["last_layer.weight_g"], state["last_layer.weight_v"]
    return x @ (g * v / v.norm(dim=1, keepdim=True)).T
