"""Jobs with several processes (GPUs, nodes) through the standard launchers.

A rule family's `resources` in the study config say how a job is shaped (config/schema.yaml):
`gpus` per node, `nodes`, `tasks_per_node`, `processes` (CPU processes per node when gpus is 0),
`cpus_per_task`, and for training `strategy` (ddp | fsdp | deepspeed), `zero_stage`, `offload`
and `launcher` (accelerate | torchrun). `plan_for` turns that into a `Plan`; the rule
passes the plan to its script, which calls `run_rule_stage` (`run_stage` for a rule):

- one process: the stage function runs in the script's own process, exactly as before;
- several processes on one node: `accelerate launch` (or `torchrun`) starts them on this node;
- several SLURM tasks (nodes > 1 or tasks_per_node > 1): `srun` starts one task per node (or
  per tasks_per_node slot); each task execs `python -m ftlab.launch node`, which reads its
  rank from the SLURM environment and execs `accelerate launch` (or `torchrun`) with the
  rendezvous on the first node of the step. torchrun's static rendezvous then gives every
  process RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR as usual.

Every launched process runs `python -m ftlab.launch worker <payload.json>`, which imports the
stage function by name and calls it with the payload's arguments, so the code that trains is
the same function the single-process path calls. `slurm_resources` gives the rule the
resources the SLURM executor plugin turns into sbatch flags (`nodes`, `mpi` + `tasks` /
`tasks_per_node`, `cpus_per_task`, `gpu` = all GPUs of the job).

No torch import here: the Snakefile builds plans while building the DAG.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import traceback
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger("ftlab.launch")

STRATEGIES = ("ddp", "fsdp", "deepspeed")
LAUNCHERS = ("accelerate", "torchrun")
MIXED_PRECISIONS = ("no", "bf16", "fp16")
PORT_BASE, PORT_SPAN = 20000, 20000  # rendezvous port from the SLURM job id (same on all nodes)


class LaunchError(ValueError):
    """A job shape that cannot run; the message names the config key to change."""


@dataclass(frozen=True)
class Plan:
    """How many processes a job runs, where, and how they share the model."""

    family: str  # rule family (train / evaluate / represent): names the config keys in errors
    nodes: int = 1
    tasks_per_node: int = 1  # SLURM tasks per node; each runs one launcher
    procs_per_node: int = 1  # = gpus per node, or `processes` on CPU
    gpus_per_node: int = 0
    threads: int = 1  # CPU threads per process
    strategy: str = "ddp"
    zero_stage: int = 2
    offload: bool = False
    launcher: str = "accelerate"
    task_cpus: int | None = None  # resources.<family>.cpus_per_task; None: threads x procs

    @property
    def world_size(self) -> int:
        return self.nodes * self.procs_per_node

    @property
    def procs_per_task(self) -> int:
        return self.procs_per_node // self.tasks_per_node

    @property
    def launched(self) -> bool:
        """Whether the job needs a launcher (more than one process)."""
        return self.world_size > 1

    @property
    def uses_srun(self) -> bool:
        """Whether the processes are spread over several SLURM tasks."""
        return self.nodes > 1 or self.tasks_per_node > 1

    @property
    def cpus_per_task(self) -> int:
        return self.task_cpus or self.threads * self.procs_per_task

    def describe(self) -> str:
        """Short label for dry runs and logs, e.g. 'accelerate:fsdp:2x8'."""
        if not self.launched:
            return "none"
        return f"{self.launcher}:{self.strategy}:{self.nodes}x{self.procs_per_node}"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Plan:
        return cls(**d)


def plan_for(family: str, resources: dict, threads: int) -> Plan:
    """The plan of a rule family from its validated `resources.<family>` section."""
    key = f"resources.{family}"
    gpus = int(resources.get("gpus", 0))
    nodes = int(resources.get("nodes", 1))
    tasks = int(resources.get("tasks_per_node", 1))
    procs = gpus if gpus > 0 else int(resources.get("processes", 1))
    strategy = resources.get("strategy", "ddp")
    launcher = resources.get("launcher", "accelerate")
    if gpus > 0 and resources.get("processes", 1) not in (1, gpus):
        raise LaunchError(
            f"config key '{key}.processes' is {resources['processes']}, but with "
            f"'{key}.gpus: {gpus}' a node runs one process per GPU: leave processes out"
        )
    if procs % tasks:
        raise LaunchError(
            f"config key '{key}.tasks_per_node' ({tasks}) must divide the processes per node "
            f"({procs}: '{key}.{'gpus' if gpus else 'processes'}')"
        )
    if strategy not in STRATEGIES:
        raise LaunchError(f"config key '{key}.strategy': {strategy!r} is not one of {STRATEGIES}")
    if launcher not in LAUNCHERS:
        raise LaunchError(f"config key '{key}.launcher': {launcher!r} is not one of {LAUNCHERS}")
    if launcher == "torchrun" and strategy != "ddp":
        raise LaunchError(
            f"config key '{key}.launcher: torchrun' runs strategy ddp only; "
            f"{strategy} is configured through accelerate (launcher: accelerate)"
        )
    if strategy != "ddp" and gpus == 0:
        raise LaunchError(
            f"config key '{key}.strategy: {strategy}' shards the model over GPUs; "
            f"'{key}.gpus' is 0 (use strategy ddp on CPU)"
        )
    cpus = resources.get("cpus_per_task")
    if cpus is not None and cpus < procs // tasks:
        raise LaunchError(
            f"config key '{key}.cpus_per_task' ({cpus}) is below the processes per task "
            f"({procs // tasks}): each process needs a CPU"
        )
    if cpus is not None:
        threads = cpus // (procs // tasks)
    return Plan(
        family=family,
        nodes=nodes,
        tasks_per_node=tasks,
        procs_per_node=procs,
        gpus_per_node=gpus,
        threads=max(1, int(threads)),
        strategy=strategy,
        zero_stage=int(resources.get("zero_stage", 2)),
        offload=bool(resources.get("offload", False)),
        launcher=launcher,
        task_cpus=cpus,
    )


def slurm_resources(plan: Plan) -> dict:
    """Snakemake resources for the SLURM executor plugin (2.8) beyond mem_mb/runtime.

    gpu: all GPUs of the job (the plugin's --gpus counts per job). Jobs with several SLURM tasks
    set `mpi`: the plugin then submits --nodes/--ntasks(-per-node) and runs the rule's script in
    the batch step instead of wrapping it in `srun -n1 --nodes=1`, so the script's own `srun`
    reaches every node. (The plugin refuses tasks_per_node == 1 for mpi jobs, hence `tasks`
    = nodes there; tasks_per_gpu 0 keeps it from turning `tasks` into --ntasks-per-gpu.)
    """
    res: dict = {
        "gpu": plan.gpus_per_node * plan.nodes,
        "launcher": plan.describe(),
        "family": plan.family,  # the config section, for the preflight's messages
    }
    if plan.nodes > 1:
        res["nodes"] = plan.nodes
    if plan.uses_srun:
        res["mpi"] = "srun"
        if plan.tasks_per_node > 1:
            res["tasks_per_node"] = plan.tasks_per_node
        else:
            res["tasks"] = plan.nodes
            res["tasks_per_gpu"] = 0
    if plan.launched or plan.task_cpus:
        res["cpus_per_task"] = plan.cpus_per_task
    return res


# -- commands ---------------------------------------------------------------------------------
def rendezvous_port(job_id: str | None) -> int:
    """A port every task of a SLURM job derives alike; 29500 (torch's default) outside SLURM."""
    if not job_id:
        return 29500
    return PORT_BASE + zlib.crc32(str(job_id).encode()) % PORT_SPAN


def free_port() -> int:
    """A port free on this host now. Single-node launches that share a machine (two local jobs,
    gpu_share, two jobs on one SLURM node) would otherwise all rendezvous on torch's 29500."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accelerate_args(plan: Plan, mixed_precision: str) -> list[str]:
    """`accelerate launch` options of the plan's strategy (without the machine/rank ones)."""
    if mixed_precision not in MIXED_PRECISIONS:
        raise LaunchError(f"mixed precision {mixed_precision!r} is not one of {MIXED_PRECISIONS}")
    args = ["--mixed_precision", mixed_precision, "--dynamo_backend", "no",
            "--num_cpu_threads_per_process", str(plan.threads)]  # fmt: skip
    if plan.strategy == "ddp":
        args.append("--multi_gpu")
    elif plan.strategy == "fsdp":
        # FSDP2, full sharding, one unit per decoder layer; full state dicts on rank 0 so the
        # checkpoints keep the Hugging Face layout.
        args += ["--use_fsdp", "--fsdp_version", "2", "--fsdp_reshard_after_forward", "true",
                 "--fsdp_auto_wrap_policy", "TRANSFORMER_BASED_WRAP",
                 "--fsdp_state_dict_type", "FULL_STATE_DICT",
                 "--fsdp_cpu_ram_efficient_loading", "true",
                 "--fsdp_offload_params", str(plan.offload).lower()]  # fmt: skip
    else:
        offload = "cpu" if plan.offload else "none"
        args += ["--use_deepspeed", "--zero_stage", str(plan.zero_stage),
                 "--offload_optimizer_device", offload,
                 "--offload_param_device", offload if plan.zero_stage == 3 else "none",
                 "--zero3_save_16bit_model", "true" if plan.zero_stage == 3 else "false",
                 # srun already runs one launcher per node: no pdsh/ssh
                 "--deepspeed_multinode_launcher", "standard"]  # fmt: skip
    return args


def launcher_command(
    plan: Plan, mixed_precision: str, payload: str, *, machines: int = 1, machine_rank: int = 0,
    main_ip: str = "127.0.0.1", port: int = 29500,
) -> list[str]:  # fmt: skip
    """The launcher of one SLURM task (or of the whole job on one node).

    machines: launchers in the job (nodes x tasks_per_node, or 1); machine_rank: this one's.
    """
    nproc = plan.procs_per_task if machines > 1 else plan.procs_per_node
    target = ["-m", "ftlab.launch", "worker", payload]
    if plan.launcher == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(machines),
                "--nproc-per-node", str(nproc), "--node-rank", str(machine_rank),
                "--master-addr", main_ip, "--master-port", str(port), *target]  # fmt: skip
    return [sys.executable, "-m", "accelerate.commands.launch",
            "--num_processes", str(nproc * machines), "--num_machines", str(machines),
            "--machine_rank", str(machine_rank), "--main_process_ip", main_ip,
            "--main_process_port", str(port), "--rdzv_backend", "static", "--same_network",
            *accelerate_args(plan, mixed_precision), *target]  # fmt: skip


def srun_command(plan: Plan, mixed_precision: str, payload: str) -> list[str]:
    """srun inside the job's allocation: one task per node (or tasks_per_node per node), each
    running `ftlab.launch node`. --kill-on-bad-exit: one failed rank ends the step."""
    cmd = ["srun", f"--nodes={plan.nodes}", f"--ntasks-per-node={plan.tasks_per_node}",
           f"--cpus-per-task={plan.cpus_per_task}", "--kill-on-bad-exit=1"]  # fmt: skip
    if plan.gpus_per_node:
        cmd.append(f"--gres=gpu:{plan.gpus_per_node}")  # every task of a node sees its GPUs
    return [*cmd, sys.executable, "-m", "ftlab.launch", "node", mixed_precision, payload]


def _first_host(nodelist: str) -> str:
    out = subprocess.run(["scontrol", "show", "hostnames", nodelist],
                         capture_output=True, text=True, check=True)  # fmt: skip
    return out.stdout.split()[0]


def node_main(mixed_precision: str, payload: str) -> int:
    """One SLURM task of an srun step: exec the launcher with this task's machine rank."""
    env = os.environ
    plan = Plan.from_dict(json.loads(Path(payload).read_text())["plan"])
    rank, ntasks = int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"])
    if ntasks != plan.nodes * plan.tasks_per_node:
        raise LaunchError(
            f"srun started {ntasks} tasks, the plan needs {plan.nodes * plan.tasks_per_node} "
            f"(config keys 'resources.{plan.family}.nodes' and '.tasks_per_node')"
        )
    nodelist = env.get("SLURM_STEP_NODELIST") or env["SLURM_JOB_NODELIST"]
    if plan.gpus_per_node and plan.tasks_per_node > 1:
        # All GPUs of the node are visible to each task: keep this task's slice, so that
        # LOCAL_RANK (0..procs_per_task-1) indexes its own GPUs.
        visible = env.get("CUDA_VISIBLE_DEVICES", ",".join(map(str, range(plan.gpus_per_node))))
        ids = visible.split(",")
        if len(ids) < plan.gpus_per_node:
            raise LaunchError(
                f"{env.get('SLURMD_NODENAME', 'this node')} shows {len(ids)} GPUs, the plan "
                f"needs {plan.gpus_per_node} (config key 'resources.{plan.family}.gpus')"
            )
        lo = int(env["SLURM_LOCALID"]) * plan.procs_per_task
        env["CUDA_VISIBLE_DEVICES"] = ",".join(ids[lo : lo + plan.procs_per_task])
    cmd = launcher_command(
        plan, mixed_precision, payload, machines=ntasks, machine_rank=rank,
        main_ip=_first_host(nodelist), port=rendezvous_port(env.get("SLURM_JOB_ID")),
    )  # fmt: skip
    os.execvpe(cmd[0], cmd, env)
    return 0  # not reached


def as_plan(plan: Plan | dict | None) -> Plan:
    """A rule's `launch` param (a Plan, or its dict when multi-process) as a Plan."""
    if plan is None:
        return Plan(family="?")
    return Plan.from_dict(plan) if isinstance(plan, dict) else plan


# -- running a stage --------------------------------------------------------------------------
def run_stage(
    plan: Plan | dict | None, target: str, *, kwargs: dict, payload_path: str | Path,
    mixed_precision: str = "no", log_path: str | None = None,
) -> None:  # fmt: skip
    """Run the stage function `target` ("module:function") with `kwargs` under `plan`.

    One process: called right here. Otherwise kwargs go to payload_path (JSON, on a file
    system every node sees) and the launcher starts the processes, each of which calls
    target(**kwargs); a failed launch raises with the command and the log to read.
    """
    plan = as_plan(plan)
    if not plan.launched:
        _resolve(target)(**kwargs)
        return
    payload_path = Path(payload_path)
    payload_path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"plan": plan.to_dict(), "target": target, "kwargs": kwargs, "log": log_path}
    payload_path.write_text(json.dumps(payload, indent=1) + "\n")
    in_slurm = bool(os.environ.get("SLURM_JOB_ID"))
    if plan.nodes > 1 and not in_slurm:
        raise LaunchError(
            f"config key 'resources.{plan.family}.nodes' is {plan.nodes}: several nodes need "
            f"a SLURM allocation (snakemake --profile slurm); outside SLURM set nodes: 1"
        )
    if plan.uses_srun and in_slurm:
        if shutil.which("srun") is None:
            raise LaunchError("inside a SLURM job, but srun is not on PATH")
        cmd = srun_command(plan, mixed_precision, str(payload_path))
    else:  # one node: the launcher starts every process of the node here
        cmd = launcher_command(plan, mixed_precision, str(payload_path), port=free_port())
    log.info("launching %d processes (%s): %s", plan.world_size, plan.describe(), shlex.join(cmd))
    env = dict(os.environ)
    # the workers import ftlab from wherever this process did
    src = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    sys.stdout.flush()
    sys.stderr.flush()
    # If this process is killed, the launcher gets SIGTERM and stops its workers.
    proc = subprocess.run(cmd, env=env, preexec_fn=lambda: die_with_parent(signal.SIGTERM))
    if proc.returncode != 0:
        raise RuntimeError(
            f"{plan.world_size}-process {plan.family} job failed (exit {proc.returncode}); "
            f"each rank's error is above in {log_path or 'the job log'}. Command: {shlex.join(cmd)}"
        )


def run_rule_stage(smk, target: str, *, kwargs: dict, mixed_precision: str = "no") -> None:
    """`run_stage` from a rule's script: the plan is the rule's `launch` param, the payload
    goes beside the rule's log (`<log>.launch.json`) and launch failures name that log."""
    log_path = smk.log[0]
    run_stage(
        as_plan(smk.params.launch), target, kwargs=kwargs,
        payload_path=log_path + ".launch.json", mixed_precision=mixed_precision,
        log_path=log_path,
    )  # fmt: skip


def _resolve(target: str):
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def die_with_parent(sig: int) -> None:
    """Linux: get `sig` when the parent process dies. torchrun starts each worker in a
    session of its own, so a launcher killed with SIGKILL (a local kill -9, an OOM kill)
    would otherwise leave its workers training and writing checkpoints beside the re-run."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(sig), 0, 0, 0)


def worker_main(payload_path: str) -> int:
    """One process of a launched job: logging with its rank, then the stage function."""
    parent = os.getppid()
    die_with_parent(signal.SIGKILL)
    if parent == 1 or os.getppid() != parent:  # the launcher died before that took effect
        return 1
    payload = json.loads(Path(payload_path).read_text())
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        # rank 0 tells the story; the others only warnings and errors (and their tracebacks)
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"%(asctime)s [rank {rank}] %(name)s %(levelname)s %(message)s",
        handlers=[logging.StreamHandler(sys.stderr)],
        force=True,
    )
    logging.captureWarnings(True)
    try:
        _resolve(payload["target"])(**payload["kwargs"])
    except BaseException:
        traceback.print_exc()
        _exit_now(1)
    _exit_now(0, sync=True)
    return 0  # not reached


def _exit_now(code: int, *, sync: bool = False) -> None:
    """End a worker without Python's teardown. A process group left to the interpreter's exit
    (lm-eval and TRL never destroy theirs) aborted 5 exits in 40 under gloo with torch 2.13
    ("terminate called without an active exception"), and a rank that never got out of its
    teardown kept a 2-task SLURM job running until the agents' 300 s exit barrier gave up.
    sync: wait for every rank first (a barrier), so none exits while a peer still needs it."""
    import torch.distributed as dist

    if sync and dist.is_available() and dist.is_initialized():
        dist.barrier()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["worker"] and len(argv) == 2:
        return worker_main(argv[1])
    if argv[:1] == ["node"] and len(argv) == 3:
        return node_main(argv[1], argv[2])
    print("usage: python -m ftlab.launch worker PAYLOAD | node MIXED_PRECISION PAYLOAD",
          file=sys.stderr)  # fmt: skip
    return 2


if __name__ == "__main__":
    sys.exit(main())
