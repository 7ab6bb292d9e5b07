"""An independent, minimal DINO ViT forward over a state dict in the DINO/DoRA reference layout.

Written from the DINO `vision_transformer.py` structure (pre-norm blocks, fused qkv, exact GELU,
[CLS] + learned position embeddings) with plain tensor maths, so tests can check the project's
model and checkpoint conversion against something that shares none of its code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def reference_vit_forward(
    state: dict[str, torch.Tensor], pixels: torch.Tensor, num_heads: int, eps: float = 1e-6
) -> dict[str, torch.Tensor]:
    """Return final-norm tokens and the last block's q, k and attention probabilities."""
    weight = state["patch_embed.proj.weight"]
    patch = weight.shape[-1]
    x = F.conv2d(pixels, weight, state["patch_embed.proj.bias"], stride=patch)
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([state["cls_token"].expand(x.shape[0], -1, -1), x], dim=1)
    x = x + state["pos_embed"]
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
