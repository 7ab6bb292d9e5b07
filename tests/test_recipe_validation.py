"""Recipe values are typed and checked at start: typos in model.*/views.*, number spellings, ranges."""

from __future__ import annotations

import argparse
import runpy
from collections.abc import Callable
from pathlib import Path

import pytest

from dora_hf.errors import DoraUserError
from dora_hf.training.builders import build_schedules
from dora_hf.training.recipe import PretrainRecipe, add_recipe_arguments, load_recipe, parse_yaml, recipe_from_args

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_RECIPE = REPO_ROOT / "training_scripts" / "configs" / "demo_cpu.yaml"


@pytest.fixture(scope="module")
def pretrain_main() -> Callable[[list[str]], int]:
    """`training_scripts/pretrain.py`'s main(argv), run in this process."""
    return runpy.run_path(str(REPO_ROOT / "training_scripts" / "pretrain.py"))["main"]


def from_command_line(*argv: str) -> PretrainRecipe:
    """The recipe `pretrain.py ARGV` would train (the demo recipe with `argv` on top)."""
    parser = argparse.ArgumentParser()
    add_recipe_arguments(parser)
    return recipe_from_args(parser.parse_args(["--config", str(DEMO_RECIPE), "--dataset", "d", *argv]))


def recipe_file(tmp_path: Path, text: str) -> Path:
    """The demo recipe with the top-level keys of `text` replaced by `text`'s (a key given twice is an error)."""
    replaced = {line.split(":", 1)[0] for line in text.splitlines() if line and not line[0].isspace() and ":" in line}
    kept = [line for line in DEMO_RECIPE.read_text().splitlines(keepends=True) if line.split(":", 1)[0] not in replaced]
    path = tmp_path / "recipe.yaml"
    path.write_text("".join(kept) + text)
    return path


def test_a_key_given_twice_is_refused_naming_it_and_its_lines(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("dataset: d\nbatch_size_per_device: 8\nmax_steps: 3\nbatch_size_per_device: 16\n")
    with pytest.raises(DoraUserError, match=r"key 'batch_size_per_device' is given twice \(lines 2 and 4\); keep one"):
        load_recipe(path)
    nested = tmp_path / "nested.yaml"
    nested.write_text("dataset: d\nmodel:\n  hidden_size: 96\n  hidden_size: 192\n")
    with pytest.raises(DoraUserError, match=r"key 'hidden_size' is given twice \(lines 3 and 4\)"):
        load_recipe(nested)


def refused(pretrain_main, capsys, tmp_path: Path, *argv: str) -> str:
    """Run pretrain.py expecting exit 2 at start; its one error line. Nothing may have been created."""
    out = tmp_path / "run"
    argv = ("--config", str(DEMO_RECIPE), "--cpu", "--dataset", "unused", "--output_dir", str(out), *argv)
    assert pretrain_main(list(argv)) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pretrain: error: ") and "recipe key" in lines[0], err
    assert "Traceback" not in err
    assert not out.exists()
    return lines[0]


# --- case 3: nested keys are checked against DoraConfig / ClipViewsConfig ---------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.hidden_sise=96", "unknown recipe key 'model.hidden_sise' in the command line (did you mean 'model.hidden_size'?)"),
        ("views.global_sise=96", "unknown recipe key 'views.global_sise' in the command line (did you mean 'views.global_size'?)"),
    ],
)
def test_a_typo_under_model_or_views_is_an_error_with_a_suggestion(override, message, pretrain_main, capsys, tmp_path):
    assert message in refused(pretrain_main, capsys, tmp_path, "--set", override)


def test_a_typo_under_model_in_a_file_names_the_file(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("dataset: d\nmodel:\n  hidden_sise: 96\n")
    with pytest.raises(DoraUserError, match=rf"unknown recipe key 'model.hidden_sise' in {path} \(did you mean 'model.hidden_size'\?\)"):
        load_recipe(path)
    with pytest.raises(DoraUserError, match=r"'views.clip_sise'.*did you mean 'views.clip_size'"):
        PretrainRecipe(dataset="d", views={"clip_sise": 3})


def test_nested_values_are_typed_and_reach_the_model(tmp_path):
    recipe = from_command_line("--set", "model.hidden_size=48", "--set", "model.drop_path_rate=5e-2",
                               "--set", "views.clip_scale=[0.3, 1]")
    assert recipe.model["hidden_size"] == 48 and recipe.model["drop_path_rate"] == 0.05
    assert recipe.views["clip_scale"] == (0.3, 1.0)
    config = recipe.model_config()
    assert (config.hidden_size, config.drop_path_rate) == (48, 0.05) and "hidden_sise" not in config.to_dict()
    with pytest.raises(DoraUserError, match=r"recipe key 'model.num_hidden_layers' must be a whole number, got 'four'"):
        from_command_line("--set", "model.num_hidden_layers=four")
    with pytest.raises(DoraUserError, match=r"recipe key 'views.clip_scale' must be a list of 2 numbers"):
        from_command_line("--set", "views.clip_scale=0.3")


# --- case 4: numbers in any spelling, bad types on one line, ranges -------------------------------


@pytest.mark.parametrize("spelling", ["5e-4", "5.0e-4", "5E-4", "5.e-4", "0.0005", ".5e-3", "+5e-4", "5.0e-04"])
def test_scientific_notation_is_a_number_in_yaml_and_on_the_command_line(spelling, tmp_path):
    from_yaml = load_recipe(recipe_file(tmp_path, f"base_learning_rate: {spelling}\n"), {"dataset": "d"})
    from_flag = from_command_line("--base_learning_rate", spelling)
    from_set = from_command_line("--set", f"base_learning_rate={spelling}")
    for recipe in (from_yaml, from_flag, from_set):
        assert recipe.base_learning_rate == pytest.approx(5e-4) and isinstance(recipe.base_learning_rate, float)
        # what crashed before: the schedules multiply the learning rate by the batch size
        schedules = build_schedules(recipe, global_batch_size=256, epochs=1, steps_per_epoch=10)
        assert schedules.learning_rate.base == pytest.approx(5e-4)  # x 256 / 256


def test_yaml_reads_recipe_scalars_as_yaml_1_2_does():
    assert parse_yaml("a: 1e-4\nb: 16\nc: no\nd: true\ne: off\nf: 1e3\ng: .inf") == {
        "a": 1e-4, "b": 16, "c": "no", "d": True, "e": "off", "f": 1000.0, "g": float("inf")
    }
    recipe = load_recipe(None, {"dataset": "d", "mixed_precision": parse_yaml("no"), "max_steps": parse_yaml("1e3"),
                                "compile": "yes", "epochs": "1e2"})
    assert (recipe.mixed_precision, recipe.max_steps, recipe.compile, recipe.epochs) == ("no", 1000, True, 100.0)
    assert isinstance(recipe.max_steps, int)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--batch_size_per_device", "abc"], "recipe key 'batch_size_per_device' must be a whole number, got 'abc'"),
        (["--max_steps", "2.5"], "recipe key 'max_steps' must be a whole number, got 2.5"),
        (["--base_learning_rate", "fast"], "recipe key 'base_learning_rate' must be a number, got 'fast'"),
        (["--base_learning_rate", ".nan"], "recipe key 'base_learning_rate' must be a number, got nan"),
        (["--compile", "maybe"], "recipe key 'compile' must be true or false, got 'maybe'"),
        (["--set", "model=3"], "recipe key 'model' must be a mapping, got 3"),
        (["--base_learning_rate=-1e-4"], "recipe key 'base_learning_rate' must be > 0, got -0.0001"),
        (["--min_learning_rate=-1e-6"], "recipe key 'min_learning_rate' must be >= 0, got -1e-06"),
        (["--momentum_teacher", "1.5"], "recipe key 'momentum_teacher' must be in [0, 1], got 1.5"),
        (["--teacher_temp", "0"], "recipe key 'teacher_temp' must be > 0, got 0"),
        (["--num_workers=-1"], "recipe key 'num_workers' must be >= 0, got -1"),
        (["--mixed_precision", "fp8"], "recipe key 'mixed_precision' must be bf16, fp16 or no, got 'fp8'"),
        (["--set", "views.flip_p=1.5"], "recipe key 'views': ClipViewsConfig.flip_p must be a probability, got 1.5"),
        (["--set", "model.drop_path_rate=1"], "recipe key 'model': DoraConfig.drop_path_rate must be in [0, 1)"),
    ],
)
def test_a_bad_value_stops_the_run_at_start_on_one_line_naming_the_key(argv, message, pretrain_main, capsys, tmp_path):
    assert message in refused(pretrain_main, capsys, tmp_path, *argv)


def test_a_bad_type_in_a_yaml_file_is_one_line_naming_the_key(pretrain_main, capsys, tmp_path):
    path = recipe_file(tmp_path, "batch_size_per_device: abc\n")
    line = refused(pretrain_main, capsys, tmp_path, "--config", str(path))
    assert line == "pretrain: error: recipe key 'batch_size_per_device' must be a whole number, got 'abc'"


def test_shipped_recipes_keep_their_values_and_types():
    for name in ("vits16_wt_venice", "vits16_wt_all", "demo_cpu"):
        recipe = load_recipe(REPO_ROOT / "training_scripts" / "configs" / f"{name}.yaml")
        recipe.validate()
        assert isinstance(recipe.base_learning_rate, float) and isinstance(recipe.batch_size_per_device, int)
    demo = load_recipe(DEMO_RECIPE)
    assert (demo.base_learning_rate, demo.mixed_precision, demo.overwrite) == (3.2e-2, "no", True)
    assert demo.model["hidden_size"] == 96 and demo.views["num_local_views"] == 2
