"""Several nodes: the SLURM scripts' rendezvous, node-local checkpoint folders, and two "machines"
on 127.0.0.1 (one `accelerate launch` each) training as one machine with two processes does."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils.launch import prepare_simple_launcher_cmd_env

from dora_hf.errors import DoraUserError
from dora_hf.folders.checkpoint_layout import MANIFEST_FILE, ranks_held, verify_checkpoint
from dora_hf.training import builders, checkpoints
from dora_hf.training.checkpoints import NodePlacement, node_placement, write_manifest
from dora_hf.training.recipe import load_recipe
from test_pretrain import TINY_MODEL, TINY_VIEWS

REPO_ROOT = Path(__file__).resolve().parents[1]
SLURM = REPO_ROOT / "training_scripts" / "slurm"
FIXTURE_CHECKPOINT = REPO_ROOT / "tests" / "fixtures" / "pre_layout" / "run" / "checkpoints" / "step_0000002"


# --- the SLURM scripts ------------------------------------------------------------------------


def fake_commands(folder: Path, **scripts: str) -> Path:
    """Executables named after the keywords, standing in for SLURM's and the project's commands."""
    folder.mkdir(exist_ok=True)
    for name, body in scripts.items():
        path = folder / name.replace("_", "-")
        path.write_text("#!/bin/bash\n" + textwrap.dedent(body))
        path.chmod(0o755)
    return folder


FAKE_SCONTROL = """
    [[ "$1 $2" == "show hostnames" && "$3" == "gpu-[07-08]" ]] || { echo "scontrol: unexpected $*" >&2; exit 1; }
    printf 'gpu-07\\ngpu-08\\n'
"""


def run_bash(script: str, env: dict[str, str], cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, cwd=cwd, timeout=60)


def slurm_env(fake_bin: Path, **variables: str) -> dict[str, str]:
    return {"PATH": f"{fake_bin}:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"), **variables}


def test_shell_scripts_parse():
    scripts = sorted(SLURM.iterdir())
    assert {p.name for p in scripts} >= {"pretrain.sbatch", "prepare.sbatch", "rendezvous.sh", "array_part.sh"}
    for script in scripts:
        result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, f"{script.name}: {result.stderr}"


RENDEZVOUS = (
    f"source {SLURM / 'rendezvous.sh'} && dora_rendezvous && "
    'echo "$NUM_MACHINES $MACHINE_RANK $MAIN_PROCESS_IP $MAIN_PROCESS_PORT $NUM_PROCESSES"'
)


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({"SLURM_NODEID": "0", "SLURM_GPUS_ON_NODE": "8"}, "2 0 gpu-07 23456 16"),
        ({"SLURM_NODEID": "1", "SLURM_PROCID": "7", "SLURM_GPUS_ON_NODE": "8"}, "2 1 gpu-07 23456 16"),
        ({"SLURM_PROCID": "1"}, "2 1 gpu-07 23456 16"),  # no GPU count: 8 per node
        ({"SLURM_NODEID": "1", "GPUS_PER_NODE": "4", "MAIN_PROCESS_PORT": "29500"}, "2 1 gpu-07 29500 8"),
    ],
    ids=["node-0", "node-1", "procid", "overrides"],
)
def test_rendezvous_from_slurm_variables(tmp_path, variables, expected):
    fake_bin = fake_commands(tmp_path / "bin", scontrol=FAKE_SCONTROL)
    env = slurm_env(fake_bin, SLURM_NNODES="2", SLURM_JOB_NODELIST="gpu-[07-08]", SLURM_JOB_ID="123456", **variables)
    result = run_bash(RENDEZVOUS, env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[0] == expected  # port 20000 + 123456 % 20000


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"SLURM_JOB_NODELIST": "gpu-[07-08]", "SLURM_JOB_ID": "1", "SLURM_NODEID": "0"}, "SLURM_NNODES is not set"),
        ({"SLURM_NNODES": "2", "SLURM_JOB_NODELIST": "gpu-[07-08]", "SLURM_JOB_ID": "1"}, "neither SLURM_NODEID nor SLURM_PROCID"),
        ({"SLURM_NNODES": "2", "SLURM_JOB_NODELIST": "gpu-[07-08]", "SLURM_JOB_ID": "1", "SLURM_PROCID": "3"},
         "node 3 of 2: start one task per node"),
    ],
    ids=["outside-slurm", "outside-srun", "task-per-gpu"],
)
def test_rendezvous_refuses_what_slurm_did_not_set(tmp_path, variables, message):
    fake_bin = fake_commands(tmp_path / "bin", scontrol=FAKE_SCONTROL)
    result = run_bash(RENDEZVOUS, slurm_env(fake_bin, **variables))
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and message in result.stderr


PART = f"source {SLURM / 'array_part.sh'} && dora_array_part"


def test_array_part_from_slurm_array_variables(tmp_path):
    def part(task: int | str, low: int, high: int, count: int, **extra: str) -> subprocess.CompletedProcess:
        env = slurm_env(tmp_path, SLURM_ARRAY_TASK_ID=str(task), SLURM_ARRAY_TASK_MIN=str(low),
                        SLURM_ARRAY_TASK_MAX=str(high), SLURM_ARRAY_TASK_COUNT=str(count), **extra)
        return run_bash(PART, env)

    assert [part(task, 0, 3, 4).stdout.strip() for task in range(4)] == ["1/4", "2/4", "3/4", "4/4"]
    assert part(5, 2, 5, 2, PARTS="8").stdout.strip() == "6/8"  # rerunning parts 3 and 6 of 8 alone
    for refused in (part(2, 1, 4, 4), part(4, 0, 6, 4), part(8, 8, 8, 1, PARTS="8")):  # 1-4, 0-6:2, past the end
        assert refused.returncode == 1 and refused.stdout == "" and refused.stderr.count("\n") == 1
    assert "--array=0-3" in part(2, 1, 4, 4).stderr
    assert part("", 0, 3, 4).stderr.startswith("dora_array_part: SLURM_ARRAY_TASK_ID is not set")


def test_pretrain_sbatch_starts_one_accelerate_launch_per_node(tmp_path):
    launches = tmp_path / "launches.txt"
    fake_bin = fake_commands(
        tmp_path / "bin",
        scontrol=FAKE_SCONTROL,
        # srun starts the command once on every node of the job, each with its node's variables
        srun="""
            while [[ "$1" == -* ]]; do shift; done
            for ((node = 0; node < SLURM_NNODES; node++)); do
                SLURM_NODEID=$node SLURM_PROCID=$node "$@" || exit
            done
        """,
        accelerate=f'echo "$*" >> {launches}\n',
    )
    env = slurm_env(fake_bin, SLURM_SUBMIT_DIR=str(REPO_ROOT), SLURM_NNODES="2", SLURM_JOB_NODELIST="gpu-[07-08]",
                    SLURM_JOB_ID="123456", SLURM_NODEID="0", SLURM_GPUS_ON_NODE="8")
    script = SLURM / "pretrain.sbatch"
    result = subprocess.run(["bash", str(script), "--config", "my recipe.yaml", "--output_dir", "/runs/a"],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    config = "training_scripts/accelerate_configs/2nodes_8gpu.yaml"
    assert launches.read_text().splitlines() == [
        f"launch --config_file {config} --num_machines 2 --machine_rank {node} --main_process_ip gpu-07 "
        f"--main_process_port 23456 --num_processes 16 training_scripts/pretrain.py --config my recipe.yaml "
        "--output_dir /runs/a"
        for node in (0, 1)
    ]
    assert "node 1 of 2" in result.stdout
    # the accelerate config it names is the documented two-node one
    cluster = load_config_from_file(str(REPO_ROOT / config))
    assert (cluster.num_machines, cluster.num_processes, cluster.distributed_type.value) == (2, 16, "MULTI_GPU")


def test_prepare_sbatch_prepares_the_tasks_part(tmp_path):
    calls = tmp_path / "calls.txt"
    fake_bin = fake_commands(tmp_path / "bin", dora_hf=f'echo "$*" >> {calls}\n')
    env = slurm_env(fake_bin, SLURM_SUBMIT_DIR=str(REPO_ROOT), SLURM_ARRAY_TASK_ID="2", SLURM_ARRAY_TASK_MIN="0",
                    SLURM_ARRAY_TASK_MAX="3", SLURM_ARRAY_TASK_COUNT="4", SLURM_CPUS_PER_TASK="16")
    script = str(SLURM / "prepare.sbatch")
    result = subprocess.run(["bash", script, "WTour.txt", "/data/parts", "--clip-step", "30"],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    env.update(SLURM_ARRAY_TASK_MAX="15", SLURM_ARRAY_TASK_COUNT="16")  # names that sort as the parts do
    result = subprocess.run(["bash", script, "WTour.txt", "/data/parts"], capture_output=True, text=True, env=env,
                            cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    assert calls.read_text().splitlines() == [
        "prepare-data --source-list WTour.txt --part 3/4 --out /data/parts/part-3-of-4 --num-workers 16 "
        "--no-progress --clip-step 30",
        "prepare-data --source-list WTour.txt --part 3/16 --out /data/parts/part-03-of-16 --num-workers 16 --no-progress",
    ]
    usage = subprocess.run(["bash", script], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert usage.returncode == 2 and usage.stderr.startswith("usage: ")


@pytest.mark.parametrize("layout", [["--num_machines", "2", "--machine_rank", "1"], ["--num_processes", "2"]],
                         ids=["two-machines", "two-processes"])
def test_a_process_the_cpu_launcher_started_alone_is_refused(tmp_path, monkeypatch, layout):
    """`accelerate launch --cpu` runs the script once per machine as a run of its own: refused."""
    parser = launch_command_parser()
    args = parser.parse_args(["--cpu", *layout, "--main_process_ip", "127.0.0.1", "--main_process_port", "29500",
                              "--mixed_precision", "no", "--dynamo_backend", "no", "script.py"])
    _, env = prepare_simple_launcher_cmd_env(_validate_launch_command(args)[0])  # what the script would get
    recipe = load_recipe(None, {"output_dir": str(tmp_path / "run"), "report_to": "none"})
    for name in set(env) - set(os.environ) | {"ACCELERATE_USE_CPU", "MASTER_ADDR"}:
        monkeypatch.setenv(name, env[name])
    with pytest.raises(DoraUserError, match=r"^`accelerate launch --cpu` starts each machine's process alone.*--multi_gpu"):
        builders.make_accelerator(recipe, cpu=True)
    monkeypatch.setenv("WORLD_SIZE", "2")  # as under torchrun: not this launcher's doing
    assert builders.check_not_launched_alone() is None


# --- node-local checkpoint folders -------------------------------------------------------------


def test_node_placement_follows_local_ranks(monkeypatch):
    def placement(rank: int, local_ranks: list[int]) -> NodePlacement:
        monkeypatch.setattr(checkpoints, "gather_object", lambda _: local_ranks)
        accelerator = SimpleNamespace(num_processes=len(local_ranks), process_index=rank, local_process_index=local_ranks[rank])
        return node_placement(accelerator)

    assert placement(2, [0, 1, 0, 1]) == NodePlacement(1, ((0, 1), (2, 3)))
    assert placement(0, [0, 0]).ranks == (0,)
    with pytest.raises(DoraUserError, match=r"cannot tell which processes share a node: local ranks by rank are \[0, 1, 1, 0\]"):
        placement(0, [0, 1, 1, 0])


def test_a_node_folder_holds_and_verifies_its_own_processes_files(tmp_path):
    """A node's folder: the shared files and its processes' own; its manifest says which those are."""
    folder = tmp_path / "step_0000002"
    shutil.copytree(FIXTURE_CHECKPOINT, folder)
    (folder / MANIFEST_FILE).unlink()
    (folder / "rank_0.pt").rename(folder / "rank_1.pt")  # as node 1 of a run of two one-process nodes
    (folder / "random_states_0.pkl").rename(folder / "random_states_1.pkl")
    write_manifest(folder, 2, 2, NodePlacement(1, ((0,), (1,))))
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    assert (manifest["processes"], manifest["node"], manifest["ranks_by_node"]) == (2, 1, [[0], [1]])
    assert verify_checkpoint(folder).refusal(exact=True) is None
    assert ranks_held(folder) == {1}

    # the same files are not node 0's folder, nor a folder of the whole run (both lack rank 0's)
    for placement in (NodePlacement(0, ((0,), (1,))), None):
        write_manifest(folder, 2, 2, placement)
        problems = verify_checkpoint(folder)
        assert problems.damaged == ["rank_0.pt is not in its MANIFEST.json"]
        assert problems.inexact == ["random_states_0.pkl is not in its MANIFEST.json"]
    manifest["ranks_by_node"] = [[1], [1]]
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    assert "ranks_by_node does not name each of the 2 processes once" in verify_checkpoint(folder).refusal(exact=True)


# --- two machines on 127.0.0.1 -----------------------------------------------------------------

WORKER = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import torch
    from accelerate import Accelerator, PartialState
    from safetensors.torch import load_file
    from dora_hf.errors import DoraUserError
    from dora_hf.pretrain import pretrain
    from dora_hf.training.recipe import load_recipe

    # The runs below share one process group (it is destroyed at the end): each `pretrain` still
    # builds everything afresh, so a resumed run has only its checkpoint to go on.
    Accelerator.end_training = lambda self: None
    jobs, results = json.loads(sys.argv[1]), Path(sys.argv[2])
    for job in jobs:
        accelerator = Accelerator(cpu=True)
        for path in job.get("remove", []):  # a run stopped before it published this checkpoint
            import shutil; shutil.rmtree(path)
        for path in job.get("damage", []):
            data = bytearray(Path(path).read_bytes()); data[-100] ^= 0xFF; Path(path).write_bytes(bytes(data))
        accelerator.wait_for_everyone()
        record = {"rank": accelerator.process_index, "world": accelerator.num_processes}
        try:
            result = pretrain(load_recipe(None, job["recipe"]), accelerator)
        except DoraUserError as err:
            record["error"] = str(err)
        else:
            checkpoint = result.last_checkpoint
            state = torch.load(checkpoint / "custom_checkpoint_0.pkl", weights_only=True)
            weights = {**{f"student.{k}": v for k, v in load_file(checkpoint / "model.safetensors").items()},
                       **{f"teacher.{k}": v for k, v in state["teacher"].items()}, "center": state["loss"]["center"]}
            torch.save(weights, results / f"{job['name']}-rank{accelerator.process_index}.pt")
            record["steps"] = result.steps
        (results / f"{job['name']}-rank{accelerator.process_index}.json").write_text(json.dumps(record))
    PartialState().destroy_process_group()
    """
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(worker: Path, machines: int, jobs_of_machine: list[list[dict]], results: Path) -> list[subprocess.Popen]:
    """One `accelerate launch` per machine, `2 // machines` processes each, as SLURM's script starts them.

    The launcher's multi-GPU path (torchrun) with the worker's `Accelerator(cpu=True)`, as 2cpu.yaml:
    its `--cpu` path would start every machine's process as a run of its own (refused, see above).
    """
    port = str(free_port())
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    started = []
    for rank, jobs in enumerate(jobs_of_machine):
        command = [
            sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", str(machines),
            "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1", "--main_process_port", port,
            "--num_processes", "2", "--mixed_precision", "no", "--dynamo_backend", "no",
            str(worker), json.dumps(jobs), str(results),
        ]
        started.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env))
    return started


def finish(started: list[subprocess.Popen]) -> str:
    outputs = [process.communicate(timeout=600)[0] for process in started]
    for process, output in zip(started, outputs):
        assert process.returncode == 0, output[-4000:]
    return "\n".join(outputs)


@pytest.mark.slow
def test_two_machines_train_and_resume_as_one_machine_with_shared_and_node_local_folders(tiny_frames_dataset, tmp_path):
    recipe = {
        "dataset": str(tiny_frames_dataset), "frames_per_clip": 2, "clip_step": 6, "batch_size_per_device": 2,
        "num_workers": 0, "shuffle_buffer": 8, "mixed_precision": "no", "max_steps": 4, "steps_per_epoch": 3,
        "warmup_epochs": 1, "base_learning_rate": 0.05, "logging_steps": 1, "checkpointing_steps": 1,
        "checkpoints_total_limit": 3, "freeze_last_layer": 1, "model": TINY_MODEL, "views": TINY_VIEWS,
    }
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    results = tmp_path / "results"
    results.mkdir()
    shared, local = tmp_path / "shared", [tmp_path / "node0", tmp_path / "node1"]
    step = "checkpoints/step_{:07d}".format

    def jobs(machine: int) -> list[dict]:
        own = local[machine]
        return [
            {"name": "shared", "recipe": {**recipe, "output_dir": str(shared)}},
            {"name": "local", "recipe": {**recipe, "output_dir": str(own)}},
            # both runs stopped before publishing step 4; node 1's copy of step 3 is damaged too
            {"name": "shared-resumed", "remove": [str(shared / step(4))] if machine == 0 else [],
             "recipe": {**recipe, "output_dir": str(shared), "resume_from_checkpoint": "latest"}},
            {"name": "local-resumed", "remove": [str(own / step(4))],
             "damage": [str(own / step(3) / "rank_1.pt")] if machine == 1 else [],
             "recipe": {**recipe, "output_dir": str(own), "resume_from_checkpoint": "latest"}},
            # refused on every process: node 1's folder holds nothing to resume ...
            {"name": "node-without-run", "recipe": {
                **recipe, "output_dir": str(own if machine == 0 else tmp_path / "empty"), "resume_from_checkpoint": "latest"}},
            # ... and node 0's folder, now seen by both nodes, holds rank 0's files alone
            {"name": "one-node-folder-shared", "recipe": {
                **recipe, "output_dir": str(local[0]), "resume_from_checkpoint": "latest"}},
        ]

    two_machines = launch(worker, 2, [jobs(0), jobs(1)], results)
    one_machine = launch(worker, 1, [[{"name": "reference", "recipe": {**recipe, "output_dir": str(tmp_path / "one")}}]],
                         results)
    output = finish(two_machines + one_machine)

    def records(name: str) -> list[dict]:
        return [json.loads((results / f"{name}-rank{rank}.json").read_text()) for rank in (0, 1)]

    def weights(name: str, rank: int) -> dict[str, torch.Tensor]:
        return torch.load(results / f"{name}-rank{rank}.pt", weights_only=True)

    reference = weights("reference", 0)
    assert not torch.equal(reference["center"], torch.zeros_like(reference["center"]))
    for name in ("reference", "shared", "local", "shared-resumed", "local-resumed"):
        assert [(r["rank"], r["world"], r.get("steps")) for r in records(name)] == [(0, 2, 4), (1, 2, 4)], name
        for rank in (0, 1):  # every node's copy, where each node has its own folder
            ours = weights(name, rank)
            assert ours.keys() == reference.keys()
            for key in reference:  # fp32, gloo: bit for bit
                assert torch.equal(ours[key], reference[key]), (name, rank, key)

    assert "output folder" in output and f"{local[1]}: one per node (not shared)" in output
    assert "the nodes' newest usable checkpoints differ (step_0000002, step_0000003); every node resumes from step_0000002" in output
    for node, folder in enumerate(local):
        assert [p.name for p in sorted((folder / "checkpoints").iterdir())] == [f"step_000000{s}" for s in (2, 3, 4)]
        final = folder / step(4)
        manifest = json.loads((final / MANIFEST_FILE).read_text())
        assert (manifest["node"], manifest["ranks_by_node"]) == (node, [[0], [1]])
        assert sorted(p.name for p in final.glob("rank_*")) == [f"rank_{node}.pt"]
        assert verify_checkpoint(final).refusal(exact=True) is None
    assert (local[0] / step(4) / "model.safetensors").read_bytes() == (local[1] / step(4) / "model.safetensors").read_bytes()
    assert sorted(p.name for p in (shared / step(4)).glob("rank_*")) == ["rank_0.pt", "rank_1.pt"]
    assert "ranks_by_node" not in json.loads((shared / step(4) / MANIFEST_FILE).read_text())
    assert not list(shared.glob(".dora-hf-nodes-*")) and not list(local[0].glob(".dora-hf-nodes-*"))

    refusals = [r.get("error", "") for r in records("node-without-run")]
    assert refusals[0] == refusals[1] and refusals[0].startswith(
        "node 1 (its own output folder): --resume_from_checkpoint latest: no complete checkpoint under "
    )
    refusals = [r.get("error", "") for r in records("one-node-folder-shared")]
    assert refusals[0] == refusals[1] == (
        f"checkpoint {local[0] / step(4)} holds no state for process(es) 1: it was saved by fewer processes, "
        "or with other processes on each node, than this run has"
    )
