"""Where the project's own model, dataset and demo Space live on the Hub: one place for the ids.

The cards link one another through these (the model card to the Space and the dataset, the
dataset card to the model), and the Space loads the model by its id unless told otherwise.
"""

from __future__ import annotations

HUB_ORG = "dora-hf"
FLAGSHIP_MODEL_ID = f"{HUB_ORG}/dora-wt-vits16"
"""ViT-S/16 trained with DoRA on WT-Venice, converted from the authors' checkpoint."""
WALKING_TOURS_DATASET_ID = f"{HUB_ORG}/walking-tours"
"""Walking Tours frames prepared with `dora-hf prepare-data` from the authors' list."""
AUTHORS_DATASET_ID = "shawshankvkt/Walking_Tours"
"""The authors' own dataset repo, holding their list of videos (`WTour.txt`)."""
SPACE_ID = f"{HUB_ORG}/dora-tracks"
"""The demo Space (`spaces/dora-tracks`)."""
HUB_URL = "https://huggingface.co"


def hub_url(repo_id: str, repo_type: str = "model") -> str:
    """The page of a repo on the Hub."""
    prefix = {"model": "", "dataset": "datasets/", "space": "spaces/"}[repo_type]
    return f"{HUB_URL}/{prefix}{repo_id}"
