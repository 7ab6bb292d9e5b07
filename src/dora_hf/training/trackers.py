"""What experiment trackers (`--report_to`) are told about a run."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..modeling import DoraConfig
from ..views.dino_views import DinoViews
from ..views.dora_views import ClipViews
from .recipe import PretrainRecipe


def tracker_config(recipe: PretrainRecipe, config: DoraConfig, views: ClipViews | DinoViews) -> dict[str, Any]:
    """The whole run as flat scalars for experiment trackers: the recipe, then the resolved model
    (`model.*`) and views (`views.*`) configurations, lists and tuples as text."""

    def scalar(value: Any) -> Any:
        return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)

    flat = {k: scalar(v) for k, v in dataclasses.asdict(recipe).items() if k not in ("model", "views")}
    model = {k: v for k, v in config.to_dict().items() if not k.startswith("_") and k != "transformers_version"}
    flat.update({f"model.{k}": scalar(v) for k, v in sorted(model.items()) if not isinstance(v, dict)})
    view_values = dataclasses.asdict(views.config)
    view_values.update(view_values.pop("views", {}))  # DINO's config holds the recipe's `views:` whole
    flat.update({f"views.{k}": scalar(v) for k, v in sorted(view_values.items())})
    return flat
