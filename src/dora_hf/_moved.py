"""Module paths of the flat layout, kept importable after the move to one folder per stage.

``from dora_hf.data.prepare import PrepareOptions`` and the like keep working: importing an old
path gives a stand-in module whose names are looked up, on first use, in the modules that hold
them now (a DeprecationWarning names them), and ``python -m`` on an old path runs the new
module. The table is the one record of where each old module went.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
import warnings
from collections.abc import Sequence
from typing import Any

# old module -> the modules that hold its names now (the first one runs under `python -m`).
MOVED: dict[str, tuple[str, ...]] = {
    "dora_hf.data": ("dora_hf.prepare",),
    "dora_hf.data.prepare": (
        "dora_hf.prepare.pipeline", "dora_hf.prepare.command", "dora_hf.prepare.options",
        "dora_hf.prepare.summary", "dora_hf.prepare.frame_spacing", "dora_hf.prepare.shard_writer",
        "dora_hf.prepare.rows", "dora_hf.prepare.card", "dora_hf.prepare.frame_images",
    ),
    "dora_hf.data.parallel_prepare": ("dora_hf.prepare.parallel.pool",),
    "dora_hf.data.segments": ("dora_hf.prepare.parallel.segments",),
    "dora_hf.data.segment_decode": ("dora_hf.prepare.parallel.segment_decode",),
    "dora_hf.data.segment_store": ("dora_hf.prepare.parallel.segment_store",),
    "dora_hf.data.sources": ("dora_hf.prepare.inputs", "dora_hf.prepare.download"),
    "dora_hf.data.video_source": ("dora_hf.prepare.video_decode",),
    "dora_hf.data.frame_images": ("dora_hf.prepare.frame_images",),
    "dora_hf.data.faces": ("dora_hf.prepare.faces",),
    "dora_hf.data.integrity": ("dora_hf.prepare.blank_frozen",),
    "dora_hf.data.video_cut": ("dora_hf.demo.video_cut",),
    "dora_hf.data.sample_video": ("dora_hf.demo.sample_video",),
    "dora_hf.data.clips": (
        "dora_hf.dataset.streaming", "dora_hf.dataset.stream_plan", "dora_hf.dataset.batches", "dora_hf.dataset.clip_index",
    ),
    "dora_hf.data.clip_index": ("dora_hf.dataset.clip_index",),
    "dora_hf.data.random_access": ("dora_hf.dataset.random_access",),
    "dora_hf.data.shard_source": ("dora_hf.dataset.shards",),
    "dora_hf.data.frame_decode": ("dora_hf.dataset.clip_images",),
    "dora_hf.data.manifest": ("dora_hf.dataset.manifest",),
    "dora_hf.data.dataset_info": ("dora_hf.dataset.info", "dora_hf.dataset.clip_index"),
    "dora_hf.data.views": ("dora_hf.views.dora_views",),
    "dora_hf.data.dino_views": ("dora_hf.views.dino_views",),
    "dora_hf.data.color_augment": ("dora_hf.views.color_augment",),
    "dora_hf.data.crop_boxes": ("dora_hf.views.crop_boxes",),
    "dora_hf.data.resample": ("dora_hf.views.resample",),
    "dora_hf.loss": ("dora_hf.losses.dora_loss", "dora_hf.losses.self_distillation"),
    "dora_hf.dino_loss": ("dora_hf.losses.dino_loss", "dora_hf.losses.self_distillation"),
    "dora_hf.export": ("dora_hf.publish.export", "dora_hf.folders.checkpoint_layout"),
    "dora_hf.export_formats": ("dora_hf.publish.export_formats", "dora_hf.publish.weight_names"),
    "dora_hf.convert": ("dora_hf.publish.convert", "dora_hf.publish.weight_names"),
    "dora_hf.cards": ("dora_hf.publish.cards",),
    "dora_hf.hub": ("dora_hf.publish.push",),
    "dora_hf.output_folder": ("dora_hf.folders.output_folder",),
    "dora_hf.staged_folder": ("dora_hf.folders.staged_folder",),
    "dora_hf.demo": ("dora_hf.demo.main_job",),  # the package: its names come from main_job
    "dora_hf.evaluation.backbone": ("dora_hf.evaluation.encoder",),
    "dora_hf.evaluation.knn": ("dora_hf.evaluation.classification.knn",),
    "dora_hf.evaluation.linear_probe": ("dora_hf.evaluation.classification.linear_probe",),
    "dora_hf.evaluation.features": ("dora_hf.evaluation.classification.features",),
    "dora_hf.evaluation.image_dataset": ("dora_hf.evaluation.classification.image_dataset",),
    "dora_hf.evaluation.davis_folder": ("dora_hf.evaluation.davis.folder",),
    "dora_hf.evaluation.label_propagation": ("dora_hf.evaluation.davis.label_propagation",),
    "dora_hf.evaluation.region_boundary": ("dora_hf.evaluation.davis.region_boundary",),
    "dora_hf.evaluation.discovery_model": ("dora_hf.evaluation.discovery.video",),
    "dora_hf.evaluation.mask_figure": ("dora_hf.evaluation.visualize.mask_figure",),
    "dora_hf.evaluation.track_animation": ("dora_hf.evaluation.visualize.track_animation",),
    "dora_hf.evaluation.overlays": ("dora_hf.evaluation.visualize.overlays",),
}
"""`dora_hf.evaluation.davis`, `.discovery` and `.visualize` are packages now; their
``__init__`` serves the old modules' names itself."""

# Names that left a module which is still there: (module, name) -> the module that holds it now.
_LOOP, _CHECKPOINTS = "dora_hf.training.loop", "dora_hf.training.checkpoints"
MOVED_NAMES: dict[tuple[str, str], str] = {
    **{(_LOOP, n): "dora_hf.training.builders" for n in (
        "METHOD_NAMES", "TRACKER_PACKAGES", "TRAINING_STEPS", "build_loss", "build_model_config", "build_schedules",
        "build_student_and_teacher", "build_views", "check_supported", "compile_backbones_", "make_accelerator")},
    **{(_LOOP, n): "dora_hf.training.data_loading" for n in ("ClipPlan", "build_clip_loader")},
    (_LOOP, "check_same_method"): "dora_hf.training.resume_recipe",
    (_LOOP, "prepare_output_dir"): "dora_hf.training.run_folder",
    **{(_LOOP, n): "dora_hf.dataset.batches" for n in ("ClipReader", "endless_batches", "collate_clips")},
    (_LOOP, "tracker_config"): "dora_hf.training.trackers",
    **{("dora_hf.evaluation.commands", n): "dora_hf.evaluation.classification.command" for n in (
        "run_knn", "run_linear", "neighbour_counts")},
    ("dora_hf.evaluation.commands", "run_davis"): "dora_hf.evaluation.davis.command",
    ("dora_hf.evaluation.commands", "run_discovery"): "dora_hf.evaluation.discovery.command",
    **{(_CHECKPOINTS, n): "dora_hf.folders.checkpoint_layout" for n in (
        "COMPLETE_MARKER", "MANIFEST_FILE", "MANIFEST_FORMAT", "MODEL_FILE", "OPTIMIZER_FILE", "CheckpointProblems",
        "checkpoint_name", "checkpoint_root", "verify_checkpoint")},
}

# Names that moved above the module that had them: importing them from there is an error naming
# the new place (the module must not import upwards, even lazily).
RAISED: dict[tuple[str, str], str] = {
    (_LOOP, "pretrain"): "pretrain moved out of dora_hf.training.loop: from dora_hf.pretrain import pretrain",
    ("dora_hf.data.integrity", "FROZEN_DIFFERENCE"): (
        "FROZEN_DIFFERENCE (a mean change) is gone: frozen now means no pixel changes anywhere, "
        "from dora_hf.prepare.blank_frozen import FROZEN_MAX_CHANGE"
    ),
}

# (old module, old name) -> the name it has now.
RENAMED: dict[tuple[str, str], str] = {
    (_LOOP, "ClipPlan"): "EpochPlan",
    ("dora_hf.data", "decode_frames"): "decode_video_frames",
    ("dora_hf.data.video_source", "decode_frames"): "decode_video_frames",
    ("dora_hf.data.frame_decode", "decode_frames"): "decode_clip_images",
    ("dora_hf.evaluation.backbone", "Backbone"): "FrozenEncoder",
    ("dora_hf.evaluation.backbone", "load_backbone"): "load_encoder",
}


def moved_attribute(module: str, name: str) -> Any:
    """A name that left `module` (a module's ``__getattr__`` calls this for names it no longer has)."""
    if (module, name) in RAISED:
        raise ImportError(RAISED[module, name])
    target = MOVED_NAMES.get((module, name))
    if target is None:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    new_name = RENAMED.get((module, name), name)
    warnings.warn(f"{module}.{name} moved: import {new_name} from {target}", DeprecationWarning, stacklevel=3)
    return getattr(importlib.import_module(target), new_name)


class MovedModule(types.ModuleType):
    """An old module path: names are taken from the modules that hold them now."""

    def __init__(self, name: str, targets: Sequence[str]) -> None:
        super().__init__(name, f"Moved: this path's names now live in {', '.join(targets)}.")
        self.__targets = tuple(targets)
        if any(old.startswith(name + ".") for old in MOVED):
            self.__path__: list[str] = []  # an old package: its old submodules resolve through the table

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        if (self.__name__, attr) in RAISED:
            raise ImportError(RAISED[self.__name__, attr])
        attr = RENAMED.get((self.__name__, attr), attr)
        modules = [importlib.import_module(target) for target in self.__targets]
        holders = [m for m in modules if hasattr(m, attr)]
        # Prefer the module that defines the name over one that only imports it.
        holders.sort(key=lambda m: getattr(getattr(m, attr), "__module__", None) != m.__name__)
        if holders:
            warnings.warn(
                f"{self.__name__} moved: import {attr} from {holders[0].__name__}", DeprecationWarning, stacklevel=2
            )
            return getattr(holders[0], attr)
        raise AttributeError(f"module {self.__name__!r} (moved to {', '.join(self.__targets)}) has no attribute {attr!r}")

    def __dir__(self) -> list[str]:
        names: set[str] = set()
        for target in self.__targets:
            names.update(n for n in dir(importlib.import_module(target)) if not n.startswith("_"))
        return sorted(names)


class _MovedLoader(importlib.abc.Loader):
    def __init__(self, targets: Sequence[str]) -> None:
        self.targets = tuple(targets)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return MovedModule(spec.name, self.targets)

    def exec_module(self, module: types.ModuleType) -> None:
        pass

    def get_code(self, fullname: str) -> types.CodeType | None:
        """For ``python -m OLD.PATH``: the code of the module it moved to."""
        spec = importlib.util.find_spec(self.targets[0])
        if spec is None or spec.loader is None:
            return None
        loader: Any = spec.loader
        if spec.submodule_search_locations is not None:  # a package runs its __main__
            spec = importlib.util.find_spec(self.targets[0] + ".__main__")
            loader = spec.loader if spec else None
        return loader.get_code(spec.name) if loader is not None and spec is not None else None


class MovedFinder(importlib.abc.MetaPathFinder):
    """Finds the old paths in `MOVED`; placed after the normal finders, so a real module wins."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        targets = MOVED.get(fullname)
        if targets is None:
            return None
        is_package = any(old.startswith(fullname + ".") for old in MOVED)
        return importlib.machinery.ModuleSpec(fullname, _MovedLoader(targets), is_package=is_package)


def install() -> None:
    """Put the finder on `sys.meta_path` once."""
    if not any(isinstance(f, MovedFinder) for f in sys.meta_path):
        sys.meta_path.append(MovedFinder())
