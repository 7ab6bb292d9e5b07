"""Model and dataset cards: rendered with huggingface_hub's card classes, metadata intact after a round trip."""

from __future__ import annotations

import dataclasses
import re

from huggingface_hub import DatasetCard, EvalResult, ModelCard

from dora_hf.publish.cards import architecture_name, hub_dataset_id, render_model_card
from dora_hf.modeling import DoraConfig
from dora_hf.training.recipe import PretrainRecipe

RESULTS = [
    EvalResult(
        task_type="image-classification", task_name="k-NN classification", dataset_type="imagenet-1k",
        dataset_name="ImageNet-1k", dataset_split="validation", metric_type="accuracy",
        metric_name="top-1 accuracy (k-NN, k=20)", metric_value=0.337,
    ),
    EvalResult(
        task_type="video-object-segmentation", dataset_type="davis-2017", dataset_name="DAVIS 2017",
        metric_type="j_and_f_mean", metric_name="J&F mean", metric_value=0.573,
    ),
]


def recipe(**overrides) -> dict:
    """A recipe as a run's checkpoint records it, with the precision the run resolved."""
    return dataclasses.asdict(PretrainRecipe(**{"dataset": "me/walking-tours-venice", "mixed_precision": "bf16", **overrides}))


def python_snippets(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_model_card_metadata_survives_a_round_trip_through_the_file(tmp_path):
    card = render_model_card(DoraConfig(), recipe(), 12500, repo_id="me/dora-wt-vits16", model_name="dora-wt-vits16",
                             eval_results=RESULTS)
    card.save(tmp_path / "README.md")
    loaded = ModelCard.load(tmp_path / "README.md")
    assert loaded.data.to_dict() == card.data.to_dict()
    assert loaded.data.eval_results == RESULTS and loaded.data.model_name == "dora-wt-vits16"
    meta = loaded.data
    assert (meta.license, meta.library_name, meta.pipeline_tag) == ("apache-2.0", "transformers", "image-feature-extraction")
    assert {"discover-and-track", "walking-tours", "arxiv:2310.08584", "self-supervised", "vision",
            "image-feature-extraction"} <= set(meta.tags)
    assert "dora" not in meta.tags  # PEFT's DoRA adapters carry that tag on the Hub
    assert meta.datasets == ["me/walking-tours-venice"]
    assert meta.base_recipe == {
        "method": "dora", "architecture": "vit-small-patch16", "image_size": 224, "frames_per_clip": 8,
        "clip_step": 60, "batch_size_per_device": 16, "epochs": 100, "steps": 12500, "loss": "intended",
        "mixed_precision": "bf16",
    }
    assert loaded.text == card.text


def test_model_card_body_loads_with_and_without_the_package_and_lists_recipe_and_results():
    card = str(render_model_card(DoraConfig(), recipe(reference_compat_loss=True), 300, repo_id="me/dora-wt-vits16",
                                 eval_results=RESULTS))
    with_package, without_package = python_snippets(card)
    assert "import dora_hf" in with_package and "trust_remote_code" not in with_package
    for call in ('AutoModel.from_pretrained("me/dora-wt-vits16"', 'AutoImageProcessor.from_pretrained("me/dora-wt-vits16"',
                 'pipeline("image-feature-extraction", model="me/dora-wt-vits16"'):
        assert call in with_package and call in without_package
    assert without_package.count("trust_remote_code=True") == 3 and "dora_hf" not in without_package
    for snippet in (with_package, without_package):
        compile(snippet, "card", "exec")
    assert "| steps | 300 |" in card and "| loss | reference-compatible |" in card
    assert "| k-NN classification | ImageNet-1k (validation) | top-1 accuracy (k-NN, k=20) | 0.337 |" in card
    assert "| video-object-segmentation | DAVIS 2017 | J&F mean | 0.573 |" in card
    assert "## Limitations" in card and "@inproceedings{venkataramanan2024imagenet" in card
    assert "[dora-hf/dora-tracks](https://huggingface.co/spaces/dora-hf/dora-tracks)" in card  # the demo Space
    assert "(`me/dora-wt-vits16`)" in card and "![" not in card  # no picture unless one is given


def test_model_card_without_results_has_no_results_section_or_model_index(tmp_path):
    local_folder = tmp_path / "frames"
    local_folder.mkdir()
    config = DoraConfig(hidden_size=96, num_hidden_layers=4, num_attention_heads=3)
    card = render_model_card(config, recipe(dataset=str(local_folder)), 4)
    assert "## Evaluation" not in card.text and "model-index" not in str(card)
    parsed = ModelCard(str(card)).data
    assert parsed.datasets is None and parsed.eval_results is None
    assert parsed.base_recipe["architecture"] == "vit-w96-d4-h3-patch16"


def test_dataset_ids_and_architecture_names():
    assert hub_dataset_id("me/walking-tours-venice") == "me/walking-tours-venice"
    assert hub_dataset_id("./wt-venice") is None and hub_dataset_id("/data/wt") is None and hub_dataset_id("wt") is None
    assert hub_dataset_id("a/b/c") is None and hub_dataset_id("") is None and hub_dataset_id(None) is None
    assert architecture_name(DoraConfig()) == "vit-small-patch16"
    assert architecture_name(DoraConfig(hidden_size=768, num_attention_heads=12)) == "vit-base-patch16"


def test_dataset_card_of_a_prepared_folder_parses_back_with_its_metadata(tiny_frames_dataset):
    card = DatasetCard.load(tiny_frames_dataset / "README.md")
    meta = card.data.to_dict()
    assert meta["license"] == "cc-by-4.0"
    assert meta["task_categories"] == ["image-feature-extraction"] and "dora" not in meta["tags"]
    assert {"discover-and-track", "walking-tours", "arxiv:2310.08584", "self-supervised"} <= set(meta["tags"])
    assert meta["configs"] == [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}]
    assert meta["dataset_info"]["splits"][0]["num_examples"] == 100
    assert {f["name"] for f in meta["dataset_info"]["features"]} >= {"image", "video_id", "frame_index", "keep_every"}
    assert DatasetCard(str(card)).data.to_dict() == meta
    (loading,) = python_snippets(card.text)
    assert 'load_dataset("path/or/repo-id", split="train", streaming=True)' in loading
    compile(loading, "card", "exec")


def test_results_written_by_dora_hf_eval_fill_the_card():
    from dora_hf.evaluation import results_to_eval_results

    knn = {
        "format": 1, "task": "knn", "task_type": "image-classification", "task_name": "k-NN classification (frozen features)",
        "dataset": {"name": "imagenet-1k", "config": None, "split": "validation", "revision": None},
        "metrics": [{"type": "accuracy", "name": "k-NN top-1 (k=20)", "value": 0.74, "args": {"k": 20}}],
    }
    eval_results = results_to_eval_results(knn, "ImageNet-1k")
    card = render_model_card(DoraConfig(), recipe(), 10, model_name="dora-wt-vits16", eval_results=eval_results)
    assert ModelCard(str(card)).data.eval_results == eval_results
    assert "| k-NN classification (frozen features) | ImageNet-1k (validation) | k-NN top-1 (k=20) | 0.74 |" in card.text
