"""`python -m dora_hf.demo.controlled_tour`: write a controlled tour."""

import sys

from .output import main

sys.exit(main())
