"""`python -m dora_hf.demo`: the main job."""

import sys

from .main_job import main

sys.exit(main())
