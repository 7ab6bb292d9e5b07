"""The cards at the top of the repository (`model_cards/`) are what the package's templates render now."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import DatasetCard, ModelCard

from dora_hf.publish.flagship_cards import main, rendered_cards
from dora_hf.publish.hub_names import FLAGSHIP_MODEL_ID, SPACE_ID, WALKING_TOURS_DATASET_ID, hub_url

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL_CARDS = REPO_ROOT / "model_cards"
FINDABLE = {"discover-and-track", "walking-tours", "arxiv:2310.08584", "self-supervised"}


def test_the_committed_cards_are_what_the_templates_render_now():
    rendered = rendered_cards()
    on_disk = {path.relative_to(MODEL_CARDS).as_posix() for path in MODEL_CARDS.rglob("*") if path.is_file()}
    assert on_disk == set(rendered)
    for name, text in rendered.items():
        assert (MODEL_CARDS / name).read_text(encoding="utf-8") == text, (
            f"model_cards/{name} is stale: run `python -m dora_hf.publish.flagship_cards`"
        )


def test_the_command_writes_the_same_files(tmp_path):
    assert main(["--out", str(tmp_path)]) == 0
    for name, text in rendered_cards().items():
        assert (tmp_path / name).read_text(encoding="utf-8") == text


def test_the_model_card_is_findable_links_the_space_and_shows_the_demo_picture():
    card = ModelCard((MODEL_CARDS / "dora-wt-vits16" / "README.md").read_text())
    meta = card.data
    assert FINDABLE <= set(meta.tags) and "dora" not in meta.tags
    assert meta.datasets == [WALKING_TOURS_DATASET_ID] and meta.model_name == "dora-wt-vits16"
    assert meta.base_recipe["architecture"] == "vit-small-patch16" and meta.base_recipe["epochs"] == 100
    assert meta.eval_results is None  # nothing measured on these weights: no numbers are made up
    assert f"[{SPACE_ID}]({hub_url(SPACE_ID, 'space')})" in card.text
    assert f"]({hub_url(SPACE_ID, 'space')}/resolve/main/tracks.jpg)" in card.text
    assert (REPO_ROOT / "spaces" / "dora-tracks" / "tracks.jpg").is_file()  # the picture the pushed Space serves
    assert f'AutoModel.from_pretrained("{FLAGSHIP_MODEL_ID}")' in card.text and "convert-reference" in card.text


def test_the_dataset_card_is_findable_and_links_the_model():
    card = DatasetCard((MODEL_CARDS / "walking-tours" / "README.md").read_text())
    meta = card.data.to_dict()
    assert FINDABLE <= set(meta["tags"]) and "dora" not in meta["tags"]
    assert meta["license"] == "cc-by-4.0" and meta["source_datasets"] == ["shawshankvkt/Walking_Tours"]
    assert f"[{FLAGSHIP_MODEL_ID}]({hub_url(FLAGSHIP_MODEL_ID)})" in card.text
    assert f'load_dataset("{WALKING_TOURS_DATASET_ID}", split="train", streaming=True)' in card.text
    assert "Venice" in card.text and "| `frame_index` |" in card.text


def test_the_space_header_names_the_flagship_model_and_dataset_and_the_same_tags():
    from huggingface_hub import SpaceCard

    meta = SpaceCard.load(REPO_ROOT / "spaces" / "dora-tracks" / "README.md").data.to_dict()
    assert (meta["sdk"], meta["app_file"], meta["license"]) == ("gradio", "app.py", "apache-2.0")
    assert meta["models"] == [FLAGSHIP_MODEL_ID] and meta["datasets"] == [WALKING_TOURS_DATASET_ID]
    assert FINDABLE <= set(meta["tags"])
