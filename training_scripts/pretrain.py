#!/usr/bin/env python
"""DoRA pretraining, launched with `accelerate launch`.

    accelerate launch training_scripts/pretrain.py --config training_scripts/configs/vits16_wt_venice.yaml
    accelerate launch --config_file training_scripts/accelerate_configs/8gpu.yaml training_scripts/pretrain.py \\
        --config training_scripts/configs/vits16_wt_venice.yaml --dataset me/walking-tours-venice
    accelerate launch --multi_gpu --num_processes 2 training_scripts/pretrain.py --config ... --cpu
    sbatch training_scripts/slurm/pretrain.sbatch --config ...      # several nodes: one launch per node

Every recipe key can be overridden (`--batch_size_per_device 8`, `--set model.drop_path_rate=0.2`);
an unknown key is an error listing the valid ones. The training itself is `dora_hf.training`.
"""

from __future__ import annotations

import argparse
import sys

import torch

from dora_hf.errors import DoraUserError
from dora_hf.training.builders import make_accelerator
from dora_hf.pretrain import pretrain
from dora_hf.training.recipe import add_recipe_arguments, recipe_from_args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_recipe_arguments(parser)
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even where CUDA is available")
    args = parser.parse_args(argv)
    try:
        recipe = recipe_from_args(args)
        result = pretrain(recipe, make_accelerator(recipe, cpu=args.cpu or not torch.cuda.is_available()))
    except DoraUserError as err:
        print(f"pretrain: error: {err}", file=sys.stderr)
        return 2
    return 130 if result.interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
