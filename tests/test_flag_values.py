"""Impossible numbers are refused while the command line is parsed, before anything is loaded.

`eval knn --batch-size 0` used to loop forever; `--clip-frames 0` printed a dataclass, and flags
were checked only after the model was loaded. The model named here does not exist: the answer
must be about the flag, which shows that nothing was loaded first.
"""

from __future__ import annotations

import argparse

import pytest

from dora_hf._arguments import at_least, non_negative_float, positive_float
from dora_hf.cli import main

NO_MODEL = "/nonexistent/model"

CASES = [
    (["eval", "knn", "--dataset", "d", "--batch-size", "0"], "--batch-size: must be at least 1, got 0"),
    (["eval", "knn", "--dataset", "d", "--k", "20", "0"], "--k: must be at least 1, got 0"),
    (["eval", "knn", "--dataset", "d", "--temperature", "-0.1"], "--temperature: must be a positive number, got -0.1"),
    (["eval", "knn", "--dataset", "d", "--max-eval-samples", "0"], "--max-eval-samples: must be at least 1, got 0"),
    (["eval", "linear", "--dataset", "d", "--batch-size", "0"], "--batch-size: must be at least 1, got 0"),
    (["eval", "discovery", "v.mp4", "--clip-frames", "0"], "--clip-frames: must be at least 2, got 0"),
    (["eval", "discovery", "v.mp4", "--threshold", "nan"], "--threshold: must be 0 or more, got nan"),
    (["eval", "discovery", "v.mp4", "--window", "two"], "--window: must be a whole number, got 'two'"),
    (["visualize", "v.mp4", "--out", "x.gif", "--num-frames", "0"], "--num-frames: must be at least 1, got 0"),
    (["visualize", "v.mp4", "--out", "x.gif", "--fps", "0"], "--fps: must be a positive number, got 0"),
]


@pytest.mark.parametrize(("argv", "message"), CASES, ids=[" ".join(a[:2] + a[-2:]) for a, _ in CASES])
def test_a_bad_number_is_refused_before_anything_loads(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        main([*argv, "--model", NO_MODEL])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {message}" in err and NO_MODEL not in err


def test_the_types_themselves():
    assert at_least(1)("3") == 3 and at_least(0)("0") == 0
    assert positive_float("0.5") == 0.5 and non_negative_float("0") == 0.0
    for parse, text in ((at_least(1), "0"), (at_least(1), "1.5"), (positive_float, "inf"), (non_negative_float, "-1")):
        with pytest.raises(argparse.ArgumentTypeError):
            parse(text)
