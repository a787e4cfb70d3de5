"""ftlab.launch without starting processes: job shapes from the config, the sbatch flags the
SLURM plugin makes of them, the launcher commands (checked by accelerate's own argument
parser), and the rendezvous a SLURM task derives from its environment."""

import json
import os
from pathlib import Path

import pytest
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from snakemake_executor_plugin_slurm.submit_string import get_submit_command
from snakemake_executor_plugin_slurm.utils import set_gres_string

from ftlab import launch
from ftlab.config import ConfigError, validate_config

REPO = Path(__file__).resolve().parents[1]


def plan(**res):
    return launch.plan_for("train", res, threads=4)


class _Resources(dict):
    __getattr__ = dict.__getitem__


class _Job:
    """What the plugin's get_submit_command reads of a Snakemake job."""

    def __init__(self, resources, threads=4):
        self.resources = _Resources(resources)
        self.threads = threads


def sbatch(resources) -> str:
    params = {"run_uuid": "r", "slurm_logfile": "l", "comment_str": "c", "account": "",
              "partition": "", "workdir": "."}  # fmt: skip
    job = _Job({"mem_mb": 1000, "runtime": 10, **resources})
    return get_submit_command(job, params) + set_gres_string(job)  # as the plugin submits


def test_single_process_jobs_keep_their_flags():
    p = plan(gpus=1)
    assert not p.launched and p.describe() == "none"
    res = launch.slurm_resources(p)
    assert res == {"gpu": 1, "launcher": "none", "family": "train"}
    cmd = sbatch(res)
    assert "--gpus=1" in cmd and "--cpus-per-task=4" in cmd and "--nodes" not in cmd


def test_one_node_eight_gpus():
    p = plan(gpus=8)
    assert (p.world_size, p.procs_per_node, p.cpus_per_task) == (8, 8, 32)
    res = launch.slurm_resources(p)
    assert res == {"gpu": 8, "launcher": "accelerate:ddp:1x8", "family": "train",
                   "cpus_per_task": 32}  # fmt: skip
    cmd = sbatch(res)  # one task (the jobstep's srun -n1), the launcher starts 8 processes
    assert "--gpus=8" in cmd and "--cpus-per-task=32" in cmd and "ntasks-per-gpu" not in cmd


def test_two_nodes_of_eight_gpus():
    p = plan(gpus=8, nodes=2, strategy="fsdp")
    res = launch.slurm_resources(p)
    assert res["gpu"] == 16 and res["nodes"] == 2 and res["mpi"] == "srun"
    cmd = sbatch(res)
    # one task per node (--ntasks=2 over --nodes=2), all 16 GPUs, never --ntasks-per-gpu
    assert "--nodes=2" in cmd and "--ntasks=2" in cmd and "--gpus=16" in cmd
    assert "ntasks-per-gpu" not in cmd and "--cpus-per-task=32" in cmd


def test_two_tasks_per_node_on_cpu():
    p = plan(processes=2, tasks_per_node=2)
    res = launch.slurm_resources(p)
    assert res == {"gpu": 0, "launcher": "accelerate:ddp:1x2", "family": "train", "mpi": "srun",
                   "tasks_per_node": 2, "cpus_per_task": 4}  # fmt: skip
    cmd = sbatch(res)
    assert "--ntasks-per-node=2" in cmd and "--cpus-per-task=4" in cmd and "--gpus" not in cmd


def test_cpus_per_task_sets_threads():
    p = plan(gpus=4, cpus_per_task=16)
    assert p.cpus_per_task == 16 and p.threads == 4
    with pytest.raises(launch.LaunchError, match=r"'resources.train.cpus_per_task' \(2\)"):
        plan(gpus=4, cpus_per_task=2)


@pytest.mark.parametrize(
    ("res", "message"),
    [
        ({"processes": 3, "tasks_per_node": 2}, "'resources.train.tasks_per_node' (2) must divide"),
        ({"processes": 2, "strategy": "fsdp"}, "'resources.train.gpus' is 0"),
        ({"gpus": 2, "launcher": "torchrun", "strategy": "deepspeed"}, "runs strategy ddp only"),
        ({"gpus": 2, "processes": 4}, "'resources.train.processes' is 4"),
    ],
)
def test_impossible_shapes_name_the_config_key(res, message):
    with pytest.raises(launch.LaunchError) as err:
        plan(**res)
    assert message in str(err.value)
    with pytest.raises(ConfigError) as err:  # and `ftlab validate` reports them
        validate_config({"kind": "worldmodel", "study": "x", "resources": {"train": res}})
    assert message in str(err.value)


def test_validate_refuses_the_shapes_the_workflow_refuses():
    """`ftlab validate` / `ftlab submit` check the config alone: the world trainer's strategy
    and the LLM teacher's one-model job on several nodes, which Snakemake refuses at parse
    time, are refused there too, naming the keys."""
    import yaml

    with pytest.raises(ConfigError, match=r"'resources.train.strategy' is 'fsdp': the "
                       r"world-model trainer runs data parallel only"):  # fmt: skip
        validate_config({"kind": "worldmodel", "study": "x",
                         "resources": {"train": {"gpus": 2, "strategy": "fsdp"}}})  # fmt: skip
    raw = yaml.safe_load((REPO / "config/experiments/forgetting_qwen3_1.7b.yaml").read_text())
    validate_config(raw)  # as shipped: valid
    raw["resources"]["teacher"].update(gpus=2, nodes=2)
    with pytest.raises(ConfigError, match=r"'resources.teacher.nodes' is 2, but with "
                       r"llm.teacher.parallel: model one process holds the model"):  # fmt: skip
        validate_config(raw)
    raw["resources"]["teacher"]["nodes"] = 1
    raw["resources"]["evaluate"].update(gpus=2, nodes=2)
    raw["llm"]["lm_eval"]["parallel"] = "model"
    with pytest.raises(ConfigError, match=r"'resources.evaluate.nodes' is 2"):
        validate_config(raw)


def _accelerate_args(cmd):
    """The launcher argv minus `python -m accelerate.commands.launch`, validated by accelerate."""
    assert cmd[1:3] == ["-m", "accelerate.commands.launch"]
    args = launch_command_parser().parse_args(cmd[3:])
    args, _, _ = _validate_launch_command(args)
    return args


def test_accelerate_commands_per_strategy():
    ddp = _accelerate_args(launch.launcher_command(plan(gpus=8), "bf16", "p.json"))
    assert ddp.multi_gpu and ddp.num_processes == 8 and ddp.num_machines == 1
    assert ddp.mixed_precision == "bf16" and ddp.module and ddp.training_script == "ftlab.launch"
    assert ddp.training_script_args == ["worker", "p.json"]

    fsdp = plan(gpus=8, nodes=2, strategy="fsdp", offload=True)
    args = _accelerate_args(launch.launcher_command(
        fsdp, "bf16", "p.json", machines=2, machine_rank=1, main_ip="n1", port=23456
    ))  # fmt: skip
    assert args.use_fsdp and args.fsdp_version == "2" and args.fsdp_offload_params == "true"
    assert args.fsdp_state_dict_type == "FULL_STATE_DICT"
    assert (args.num_processes, args.num_machines, args.machine_rank) == (16, 2, 1)
    assert (args.main_process_ip, args.main_process_port) == ("n1", 23456)

    zero3 = plan(gpus=8, strategy="deepspeed", zero_stage=3, offload=True)
    args = _accelerate_args(launch.launcher_command(zero3, "bf16", "p.json"))
    assert args.use_deepspeed and args.zero_stage == 3
    assert args.offload_optimizer_device == "cpu" and args.offload_param_device == "cpu"
    zero2 = plan(gpus=8, strategy="deepspeed", zero_stage=2, offload=True)
    args = _accelerate_args(launch.launcher_command(zero2, "no", "p.json"))
    assert args.offload_optimizer_device == "cpu" and args.offload_param_device == "none"


def test_torchrun_command():
    cmd = launch.launcher_command(plan(gpus=4, launcher="torchrun"), "no", "p.json")
    assert cmd[1:3] == ["-m", "torch.distributed.run"]
    assert cmd[cmd.index("--nproc-per-node") + 1] == "4"
    assert cmd[-4:] == ["-m", "ftlab.launch", "worker", "p.json"]


def test_srun_command():
    cmd = launch.srun_command(plan(gpus=8, nodes=2), "bf16", "p.json")
    assert cmd[:5] == ["srun", "--nodes=2", "--ntasks-per-node=1", "--cpus-per-task=32",
                       "--kill-on-bad-exit=1"]  # fmt: skip
    assert "--gres=gpu:8" in cmd and cmd[-4:] == ["ftlab.launch", "node", "bf16", "p.json"]


def test_node_rendezvous_from_slurm_env(tmp_path, monkeypatch):
    """Task 3 of 2 nodes x 2 tasks (4 GPUs per node): machine rank 3, rendezvous on the step's
    first node, a port derived from the job id, and the task's own 2 GPUs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "scontrol"  # `scontrol show hostnames gpu[07-08]`
    fake.write_text("#!/bin/sh\necho gpu07; echo gpu08\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    payload = tmp_path / "p.json"
    p = plan(gpus=4, nodes=2, tasks_per_node=2)
    payload.write_text(json.dumps({"plan": p.to_dict()}))
    env = {"SLURM_PROCID": "3", "SLURM_NTASKS": "4", "SLURM_LOCALID": "1",
           "SLURM_STEP_NODELIST": "gpu[07-08]", "SLURM_JOB_ID": "4242",
           "CUDA_VISIBLE_DEVICES": "0,1,2,3"}  # fmt: skip
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    seen = {}
    monkeypatch.setattr(os, "execvpe", lambda f, cmd, e: seen.update(cmd=cmd, env=e))
    launch.node_main("bf16", str(payload))
    args = _accelerate_args(seen["cmd"])
    assert (args.num_processes, args.num_machines, args.machine_rank) == (8, 4, 3)
    assert args.main_process_ip == "gpu07"
    assert args.main_process_port == launch.rendezvous_port("4242")
    assert seen["env"]["CUDA_VISIBLE_DEVICES"] == "2,3"

    monkeypatch.setenv("SLURM_NTASKS", "2")  # the allocation is not what the plan needs
    with pytest.raises(launch.LaunchError, match="srun started 2 tasks, the plan needs 4"):
        launch.node_main("bf16", str(payload))


def test_several_nodes_outside_slurm_is_an_error(tmp_path, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    with pytest.raises(launch.LaunchError, match="'resources.train.nodes' is 2"):
        launch.run_stage(plan(gpus=1, nodes=2), "os:getcwd", kwargs={},
                         payload_path=tmp_path / "p.json")  # fmt: skip


def test_one_process_runs_in_this_process(tmp_path):
    out = tmp_path / "x.txt"
    kw = {"path": str(out), "text": "hi"}
    launch.run_stage(launch.Plan(family="train"), "ftlab.io:atomic_write_text", kwargs=kw,
                     payload_path=tmp_path / "p.json")  # fmt: skip
    assert out.read_text() == "hi" and not (tmp_path / "p.json").exists()


@pytest.mark.parametrize("launcher", ["accelerate", "torchrun"])
def test_one_node_launch_takes_a_free_port(tmp_path, monkeypatch, launcher):
    """Two multi-process jobs on one machine must not both rendezvous on torch's 29500: with
    29500 held by another job, the launcher is given a port that is free."""
    import socket
    import subprocess

    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    seen = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: seen.append(cmd) or _Done())
    flag = "--main_process_port" if launcher == "accelerate" else "--master-port"
    with socket.socket() as held:
        try:
            held.bind(("127.0.0.1", 29500))
        except OSError:
            pass  # already held by someone else: the point stands
        p = launch.plan_for("train", {"processes": 2, "launcher": launcher}, threads=1)
        for _ in range(2):
            launch.run_stage(p, "os:getcwd", kwargs={}, payload_path=tmp_path / "p.json")
        ports = [int(cmd[cmd.index(flag) + 1]) for cmd in seen]
        for port in ports:
            assert port != 29500
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", port))  # free (the launcher was not started)


class _Done:
    returncode = 0


class _Failed:
    returncode = 3


def test_rule_stage_puts_the_payload_beside_the_rule_log(tmp_path, monkeypatch):
    """A rule's script hands `snakemake` over: the plan is params.launch (a dict when several
    processes), the payload is <log>.launch.json, and a failed launch names the log."""
    import subprocess
    from types import SimpleNamespace

    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: _Failed())
    log = tmp_path / "logs/train/m.log"
    p = launch.plan_for("train", {"processes": 2}, threads=1)
    smk = SimpleNamespace(log=[str(log)], params=SimpleNamespace(launch=p.to_dict()))
    with pytest.raises(RuntimeError, match=f"2-process train job failed.*{log}"):
        launch.run_rule_stage(smk, "os:getcwd", kwargs={"x": 1}, mixed_precision="bf16")
    payload = json.loads((tmp_path / "logs/train/m.log.launch.json").read_text())
    assert payload["target"] == "os:getcwd" and payload["kwargs"] == {"x": 1}
    assert payload["log"] == str(log) and payload["plan"] == p.to_dict()


def test_workers_that_leave_their_gloo_group_to_the_exit_end_cleanly(tmp_path, monkeypatch):
    # Left to Python's teardown, such a worker aborted 5 exits in 40 (torch 2.13, "terminate
    # called without an active exception"): the launched worker now skips that teardown. Eight
    # launches catch the old behaviour with probability ~2/3.
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))
    p = plan(processes=2)
    for i in range(8):
        out = tmp_path / f"sum{i}.txt"
        launch.run_stage(p, "gloo_stage:all_reduce_and_leave", kwargs={"out": str(out)},
                         payload_path=tmp_path / f"p{i}.json")  # fmt: skip
        assert out.read_text() == f"{2**20}\n"  # 20 all-reduces of ones over 2 ranks


@pytest.mark.parametrize(("kind", "family"), [("worldmodel", "evaluate"),
                                              ("worldmodel", "represent")])  # fmt: skip
@pytest.mark.parametrize("key", ["nodes", "processes", "tasks_per_node", "cpus_per_task"])
def test_launch_keys_of_one_process_jobs_are_refused(kind, family, key):
    """evaluate/represent pass only gpus, mem_mb and runtime to their jobs: a launch key there
    did nothing, so it is a config error naming it."""
    value = {"processes": 2, "tasks_per_node": 2, "nodes": 2, "cpus_per_task": 8}[key]
    res = {family: {key: value, **({"processes": 2} if key == "tasks_per_node" else {})}}
    expected = rf"'resources.{family}.{key}' is {value}, but the world-model study's {family} jobs"
    with pytest.raises(ConfigError, match=expected + " run one process on one node"):
        validate_config({"kind": kind, "study": "x", "resources": res})


def test_launch_keys_of_multi_task_evaluation_are_refused():
    import yaml

    raw = yaml.safe_load((REPO / "tests/config_mtl_tiny.yaml").read_text())
    raw.setdefault("resources", {})["evaluate"] = {"cpus_per_task": 4}
    with pytest.raises(ConfigError, match=r"'resources.evaluate.cpus_per_task' is 4, but the "
                       r"multi-task study's evaluate jobs run one process"):  # fmt: skip
        validate_config(raw)
