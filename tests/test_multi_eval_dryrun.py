"""Dry runs of the seed-002 (SimpleTIR) and seed-003 (forgetting) configs under the SLURM
profile show the GPUs, nodes and launcher of every training, teacher and evaluation job
(issue 14): as configured, and with multi-GPU / multi-node shapes merged in from a second
config file. No cluster needed: `snakemake -n --profile slurm` builds the jobs' resources.

What a job's `launcher` says: `none` (one process), `accelerate:<strategy>:<nodes>x<procs>`
(ftlab.launch, the work split by rank), or `<how>:<gpus>` (one process holding one model on
the GPUs of one node: `device_map`, `vllm_tp`, or `vllm_tp-or-device_map` for backend auto).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SEED_002 = REPO / "config/experiments/simpletir_qwen2.5_7b.yaml"
SEED_003 = REPO / "config/experiments/forgetting_qwen3_1.7b.yaml"
FAMILY = {"train_llm": "train", "train_tir": "train", "evaluate_llm": "evaluate",
          "tir_generate": "evaluate", "teacher_trajectories": "teacher"}  # fmt: skip

# (config, overrides merged in as a second --configfile, {rule: (gpus, nodes, launcher)})
CASES = {
    "seed-002": (SEED_002, "", {
        "train_tir": (1, 1, "none"), "tir_generate": (1, 1, "none")}),
    "seed-002 fsdp 2x8, eval on 2 GPUs": (SEED_002, """
resources:
  train: {gpus: 8, nodes: 2, strategy: fsdp, mem_mb: 400000, runtime: 2880}
  evaluate: {gpus: 2, mem_mb: 64000, runtime: 720}
""", {"train_tir": (16, 2, "accelerate:fsdp:2x8"),
      "tir_generate": (2, 1, "vllm_tp-or-device_map:2")}),
    "seed-003": (SEED_003, "", {
        "train_llm": (1, 1, "none"), "evaluate_llm": (1, 1, "none"),
        "teacher_trajectories": (2, 1, "vllm_tp-or-device_map:2")}),
    "seed-003 data-parallel evaluation": (SEED_003, """
resources:
  train: {gpus: 4, mem_mb: 64000, runtime: 960}
  evaluate: {gpus: 4, mem_mb: 64000, runtime: 240}
""", {"train_llm": (4, 1, "accelerate:ddp:1x4"), "evaluate_llm": (4, 1, "accelerate:ddp:1x4"),
      "teacher_trajectories": (2, 1, "vllm_tp-or-device_map:2")}),
    "seed-003 model-parallel evaluation, data-parallel HF teacher": (SEED_003, """
llm:
  lm_eval: {parallel: model}
  teacher: {parallel: data, backend: hf}
resources:
  evaluate: {gpus: 2, mem_mb: 64000, runtime: 240}
  teacher: {gpus: 4, mem_mb: 96000, runtime: 960}
""", {"train_llm": (1, 1, "none"), "evaluate_llm": (2, 1, "device_map:2"),
      "teacher_trajectories": (4, 1, "accelerate:ddp:1x4")}),
}  # fmt: skip


def dry_run(config: Path, overrides: str, tmp_path: Path) -> dict[str, set[str]]:
    """{rule: the distinct resource lines of its jobs} of `snakemake -n --profile slurm`."""
    files = [str(config)]
    if overrides:
        extra = tmp_path / "overrides.yaml"
        extra.write_text(overrides)
        files.append(str(extra))
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    out = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--profile", "slurm", "--configfile", *files,
         "-d", str(tmp_path / "w")],
        cwd=REPO, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    jobs = re.findall(r"^(?:rule|checkpoint) (\w+):\n(.*?)^ *resources: ([^\n]*)$", out.stdout,
                      re.M | re.S)  # fmt: skip
    shapes: dict[str, set[str]] = {}
    for rule, _, res in jobs:
        shapes.setdefault(rule, set()).add(res)
    return shapes


def resource(res: str, key: str) -> str | None:
    m = re.search(rf"(?:^|, ){key}=([^,]*)", res)
    return m.group(1) if m else None


@pytest.mark.parametrize("case", list(CASES))
def test_dry_run_shows_gpus_nodes_and_launcher_of_every_gpu_job(case, tmp_path):
    config, overrides, want = CASES[case]
    shapes = dry_run(config, overrides, tmp_path)
    assert set(want) <= set(shapes), sorted(shapes)  # every expected rule has jobs
    for rule, lines in shapes.items():
        if rule not in FAMILY:
            continue
        assert rule in want, f"{case}: {rule} not covered by the test"
        gpus, nodes, launcher = want[rule]
        for res in lines:
            assert resource(res, "gpu") == str(gpus), (rule, res)
            assert resource(res, "nodes") == (str(nodes) if nodes > 1 else None), (rule, res)
            assert resource(res, "launcher") == launcher, (rule, res)
            assert resource(res, "family") == FAMILY[rule], (rule, res)
            if launcher.startswith("accelerate"):  # several processes: a CPU for each
                assert int(resource(res, "cpus_per_task")) >= gpus // nodes, (rule, res)
            if nodes > 1:  # srun reaches every node from the batch step
                assert resource(res, "mpi") == "srun" and resource(res, "tasks") == str(nodes)


REFUSED = {
    "model-parallel evaluation on 2 nodes": (
        "llm: {lm_eval: {parallel: model}}\nresources: {evaluate: {gpus: 4, nodes: 2}}\n",
        ["'resources.evaluate.nodes' is 2", "llm.lm_eval.parallel: model"],
    ),
    "data-parallel vLLM teacher": (
        "llm: {teacher: {parallel: data, backend: vllm}}\nresources: {teacher: {gpus: 4}}\n",
        ["'llm.teacher.parallel' is data", "'llm.teacher.backend: vllm'"],
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_shapes_that_cannot_run_are_refused_naming_the_key(case, tmp_path):
    overrides, messages = REFUSED[case]
    extra = tmp_path / "o.yaml"
    extra.write_text(overrides)
    out = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--configfile", str(SEED_003), str(extra),
         "-d", str(tmp_path / "w")],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    log = out.stdout + out.stderr
    assert out.returncode != 0
    for message in messages:
        assert message in log, log[-2000:]


def test_data_parallel_vllm_teacher_is_a_config_error():
    """Refused by the config check, so `ftlab validate` says it before any job is planned."""
    import yaml

    from ftlab.config import ConfigError, validate_config

    cfg = yaml.safe_load(SEED_003.read_text())
    cfg["llm"]["cf_teacher"] = {"parallel": "data", "backend": "vllm"}
    with pytest.raises(ConfigError, match=r"'llm\.cf_teacher\.parallel' is data"):
        validate_config(cfg)


def test_static_generation_cache_with_vllm_is_a_config_error():
    """llm.lm_eval.generation_cache static sets HF generate's cache: refused with vllm by the
    config check (`ftlab validate`), not first inside the evaluation job."""
    import yaml

    from ftlab.config import ConfigError, validate_config

    cfg = yaml.safe_load(SEED_003.read_text())
    cfg["llm"]["lm_eval"] = {**cfg["llm"]["lm_eval"], "generation_cache": "static"}
    validate_config(cfg)  # hf: accepted
    cfg["llm"]["lm_eval"]["backend"] = "vllm"
    with pytest.raises(ConfigError, match=r"'llm\.lm_eval\.generation_cache: static' needs "
                       r"'llm\.lm_eval\.backend: hf', not 'vllm'"):  # fmt: skip
        validate_config(cfg)
