"""The main job of the README's first command.

Builds a small DoRA model, discovers and tracks objects through a clip, exports the model as a
transformers folder and reloads it with `AutoModel`, printing the feature shape.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from transformers import AutoModel

from .modeling import DoraConfig, DoraForPreTraining, DoraImageProcessor


def run_demo(output_dir: Path) -> None:
    torch.manual_seed(0)
    config = DoraConfig(
        hidden_size=192, num_hidden_layers=4, num_attention_heads=3, intermediate_size=768, head_out_dim=4096
    )
    model = DoraForPreTraining(config).eval()
    clip = torch.randn(1, 4, 3, 224, 224)
    tracks = model.discover_and_track(clip, generator=torch.Generator().manual_seed(0))
    print(f"tracked {config.num_objects} objects through {clip.shape[1]} frames: masks {tuple(tracks.masks.shape)}")
    model.save_pretrained(output_dir)
    DoraImageProcessor().save_pretrained(output_dir)
    reloaded = AutoModel.from_pretrained(output_dir).eval()
    with torch.no_grad():
        features = reloaded(clip[0]).pooler_output
    print(f"exported {output_dir}; AutoModel features: {tuple(features.shape)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("dora-wt-vits16-demo"))
    args = parser.parse_args(argv)
    run_demo(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
