"""How long `dora-hf --help` takes against `python -c "import torch"`, each in fresh processes.

Every measurement is a new interpreter (what a user's shell starts), timed wall clock from
spawn to exit. The commands are interleaved round by round so that a change in the machine's
load affects all of them alike; medians and minima are reported, with the ratio of each
command's median to that of `import torch`. The load average before and after is printed.

    .venv/bin/python benchmarks/bench_cli.py              # 15 rounds, about a minute on 2 cores
    .venv/bin/python benchmarks/bench_cli.py --rounds 30 --json benchmarks/results/bench_cli.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from dora_hf.cli import SUBCOMMANDS  # noqa: E402  (light: the list of subcommands)


def dora_hf_script() -> list[str]:
    """The installed console script, run by this interpreter; else the same entry via `-c`."""
    script = Path(sys.executable).with_name("dora-hf")
    if script.is_file():
        return [sys.executable, str(script)]
    return [sys.executable, "-c", "import sys; from dora_hf.cli import main; sys.exit(main())"]


def commands() -> dict[str, list[str]]:
    cli = dora_hf_script()
    cases = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "dora-hf --help": [*cli, "--help"],
        **{f"dora-hf {name} --help": [*cli, name, "--help"] for name in SUBCOMMANDS},
        'python -c "import torch"': [sys.executable, "-c", "import torch"],
        # What every `dora-hf` invocation imported before: the package registering its models.
        'python -c "import dora_hf.modeling"': [sys.executable, "-c", "import dora_hf.modeling"],
    }
    return cases


def time_once(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="fresh processes per command (default: 15)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first (page cache, .pyc files)")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "bench_cli.json")
    args = parser.parse_args()

    cases = commands()
    load_before = os.getloadavg()
    for _ in range(args.warmup):
        for argv in cases.values():
            time_once(argv)
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, argv in cases.items():
            times[name].append(time_once(argv))
    load_after = os.getloadavg()

    torch_median = statistics.median(times['python -c "import torch"'])
    rows = []
    print(f"{'command':<40} {'median ms':>10} {'min ms':>8} {'max ms':>8} {'vs import torch':>16}")
    for name, values in times.items():
        median = statistics.median(values)
        rows.append({
            "command": name, "median_s": median, "min_s": min(values), "max_s": max(values),
            "ratio_to_import_torch": median / torch_median, "times_s": values,
        })
        print(f"{name:<40} {1e3 * median:>10.1f} {1e3 * min(values):>8.1f} {1e3 * max(values):>8.1f} "
              f"{median / torch_median:>15.3f}x")
    help_median = statistics.median(times["dora-hf --help"])
    print(f"\n`dora-hf --help` is {torch_median / help_median:.1f}x faster than `import torch` (medians); "
          f"load average {load_before[0]:.2f} -> {load_after[0]:.2f} on {os.cpu_count()} CPUs")

    from common import run_header, write_json  # here: its torch import is not what is timed

    write_json(args.json, {
        **run_header("bench_cli"), "rounds": args.rounds, "warmup": args.warmup, "load_before": load_before,
        "load_after": load_after, "help_speedup_over_import_torch": torch_median / help_median, "results": rows,
    })
    return 0 if help_median < torch_median else 1


if __name__ == "__main__":
    sys.exit(main())
