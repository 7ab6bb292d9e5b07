"""OpenMP's wait policy, chosen before torch loads from whether other processes are running.

torch's CPU kernels run on OpenMP (GNU libgomp in the Linux wheels). A thread that reaches a
barrier first spins, by default for 300,000 rounds, waiting for the others. When every thread
has a core that is the fastest way to wait; when other processes keep the cores busy (a login
node, a laptop, CI, a second dora-hf job) the thread being waited for is descheduled and the
spinning threads burn the very cores it needs: the demo recipe then trained at 0.09x its idle
speed beside one torch job and one busy loop on 2 cores, where its fair share is 0.4x
(benchmarks/RESULTS.md, "Under load"). ``OMP_WAIT_POLICY=PASSIVE`` (sleep at once) gave 0.54x
there but cost a third of the idle speed, and a shorter spin (``GOMP_SPINCOUNT=10000``) helped
little (0.18x). So dora-hf looks once, as it is imported: if other processes are running, it
asks for the passive policy; on an idle machine it leaves libgomp's default, and the idle
speed is unchanged. The policy changes only how threads wait, never a result.

libgomp reads the policy once, when torch loads it, so this must run before ``import torch``:
`dora_hf/__init__.py` calls it, and every dora-hf entry point imports the package first. A policy
the user set (``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``) is left alone, and once torch is loaded
it is too late and nothing is set.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, MutableMapping
from pathlib import Path

LOADAVG = Path("/proc/loadavg")
"""Its fourth field is ``RUNNING/TOTAL``: scheduling entities runnable right now, system-wide."""


def others_running(loadavg: Path = LOADAVG) -> int:
    """Threads of other processes runnable at this moment (this process, starting up, is one)."""
    try:
        running = int(loadavg.read_text().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return 0
    return max(0, running - 1)


def choose_wait_policy(
    environ: MutableMapping[str, str] = os.environ,
    modules: Mapping[str, object] = sys.modules,
    loadavg: Path = LOADAVG,
) -> str | None:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` when others are running; returns what was set (None: nothing)."""
    if "torch" in modules or "OMP_WAIT_POLICY" in environ or "GOMP_SPINCOUNT" in environ:
        return None
    if others_running(loadavg) < 1:
        return None
    environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return "PASSIVE"
