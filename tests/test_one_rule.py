"""Each rule is written once: the clip layout, the weight-name table, a benchmark's machine record.

Two copies of a rule drift apart (the readers once numbered clips with separate layout checks and
the same error texts); these tests fail as soon as a second copy appears in the source.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {p: p.read_text() for p in sorted((ROOT / "src" / "dora_hf").rglob("*.py"))}


def holders(pattern: str, sources: dict[Path, str] = SOURCES) -> list[str]:
    return [str(p.relative_to(ROOT)) for p, text in sources.items() if re.search(pattern, text)]


def test_clip_layout_rules_and_their_errors_live_in_the_clip_index_only():
    for text in (
        r"rows of one video must be consecutive kept frames",
        r"is not a multiple of keep_every",
        r"has keep_every=\{[a-z_]+\}; it must be at least 1",
        r"it yields no clips",
        r"def count_clips\(",
        r"def reference_clip_starts\(",
    ):
        assert holders(text) == ["src/dora_hf/dataset/clip_index.py"], text


def test_one_weight_name_table():
    # DINO's names of the backbone's tensors appear in the publishing code only in the table.
    publish = {p: t for p, t in SOURCES.items() if "publish" in p.parts}
    for name in ("norm1", "norm2", "attn.proj", "pos_embed"):
        assert holders(re.escape(name), publish) == ["src/dora_hf/publish/weight_names.py"], name


def test_one_machine_record_and_json_writer_for_the_benchmarks():
    benchmarks = {p: p.read_text() for p in sorted((ROOT / "benchmarks").glob("*.py"))}
    assert holders(r"def machine_info\(", benchmarks) == ["benchmarks/common.py"]
    assert holders(r"/proc/cpuinfo", benchmarks) == ["benchmarks/common.py"]
    assert holders(r"write_text\(json\.dumps\((report|result)\b", benchmarks) == ["benchmarks/common.py"]
    assert not holders(r"sys\.path\.(insert|append)\(0?,? ?str\(Path\(__file__\)\.resolve\(\)\.parent\)\)", benchmarks)
