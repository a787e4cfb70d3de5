"""TIR evaluation with several processes (issue 14, tir.eval.parallel: data): generation through
ftlab.launch, 2 processes on CPU with gloo (the path of a multi-GPU tir_generate job), against 1
process of the same stage function on the tiny tool-using model (sampled, temperature 1).

Shard k of the problems samples with a seed of its own, so it gives the same trajectories
whichever rank generates it: 2 processes must write the same per-sample results (scored.jsonl,
byte for byte), the same generations (all but the timings) and the same pass@k as 1 process.
A job killed after its first shard keeps its finished shards and the re-run generates only the
others. The shapes that cannot run are refused by the config check, naming the key, and a dry
run under the SLURM profile shows the launcher of the data-parallel generation jobs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from test_multi_eval_dryrun import SEED_002, dry_run, resource

from ftlab import launch
from ftlab.config import ConfigError, validate_config
from ftlab.io import read_jsonl, write_jsonl
from ftlab.tir import steps
from ftlab.tir.tasks import arith_problems

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
TEMPLATE = "Q: {question}\n"
SAMPLING = {"n": 3, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 40, "max_turns": 3,
            "max_context_tokens": None, "max_prompt_tokens": None, "tools": True}  # fmt: skip
N_PROBLEMS, SHARD = 10, 3  # shards of 3, 3, 3, 1 problems: 2 per rank
SANDBOX = {"cpu_seconds": 2, "wall_seconds": 5, "memory_mb": 512, "max_concurrency": 2}
TIMINGS = ("gen_seconds", "tool_seconds", "seconds", "wall_seconds", "cpu_seconds")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("tir_multi_eval")
    model = root / "tiny"
    steps.build_tiny_base({"layers": 2, "hidden": 64, "sft_steps": 150, "sft_problems": 200,
                           "lr": 0.003}, TEMPLATE, seed=1, out_checkpoint=str(model))  # fmt: skip
    rows = root / "rows.jsonl"
    write_jsonl(rows, arith_problems(N_PROBLEMS, seed=7, prefix="arith"))
    return {"root": root, "model": model, "rows": rows}


def generate(env, name: str, processes: int) -> dict[str, Path]:
    """tir_generate's stage with `processes` processes (tir.eval.parallel data), then scored."""
    out = env["root"] / name
    kwargs = {
        "model_path": str(env["model"]), "rows_path": str(env["rows"]), "sampling": SAMPLING,
        "prompt_template": TEMPLATE, "backend": "auto", "batch_size": 4, "seed": 0,
        "sandbox": SANDBOX, "out_generations": str(out / "generations.jsonl"),
        "out_info": str(out / "generation_info.json"), "gpus": 0, "shard_size": SHARD,
        "threads": 1,
    }  # fmt: skip
    plan = launch.plan_for("evaluate", {"processes": processes}, threads=1)
    launch.run_stage(plan, "ftlab.tir.steps:generate", kwargs=kwargs,
                     payload_path=out / "launch.json")  # fmt: skip
    files = {"generations": out / "generations.jsonl", "info": out / "generation_info.json",
             "scores": out / "scores.json", "scored": out / "scored.jsonl"}  # fmt: skip
    steps.score(str(files["generations"]), str(env["rows"]), {}, str(files["scores"]),
                str(files["scored"]))  # fmt: skip
    return files


def untimed(record):
    """A generations record without its wall-clock fields."""
    if isinstance(record, dict):
        return {k: untimed(v) for k, v in record.items() if k not in TIMINGS}
    if isinstance(record, list):
        return [untimed(v) for v in record]
    return record


@pytest.fixture(scope="module")
def runs(env):
    return generate(env, "one", 1), generate(env, "two", 2)


def test_two_processes_write_the_samples_and_pass_at_k_of_one(runs):
    one, two = runs
    assert two["scored"].read_bytes() == one["scored"].read_bytes()
    ga, gb = read_jsonl(one["generations"]), read_jsonl(two["generations"])
    assert len(ga) == len(gb) == N_PROBLEMS * SAMPLING["n"]
    assert [untimed(g) for g in gb] == [untimed(g) for g in ga]
    sa, sb = (json.loads(r["scores"].read_text()) for r in (one, two))
    assert sb["pass_at_k"] == sa["pass_at_k"] and set(sa["pass_at_k"]) == {"1", "2", "3"}
    for k in ("accuracy", "mean_turns", "tool_usage_rate", "void_turn_rate", "stop_reasons"):
        assert sb[k] == sa[k], k
    # what is compared is a real multi-turn sampled run: tools ran, samples of a problem differ
    assert sa["tool_usage_rate"] > 0.5 and sa["mean_turns"] > 1
    assert 0 < sa["pass_at_k"]["1"] < sa["pass_at_k"]["3"] <= 1
    by_problem = {}
    for g in ga:
        by_problem.setdefault(g["problem_id"], set()).add(g["transcript"])
    assert any(len(t) > 1 for t in by_problem.values())
    ia, ib = (json.loads(r["info"].read_text()) for r in (one, two))
    assert (ia["processes"], ib["processes"]) == (1, 2)
    assert ia["shards"] == ib["shards"] == 4 and ib["shards_resumed"] == 0
    assert ia["shards_generated_by_rank"] == [4] and ib["shards_generated_by_rank"] == [2, 2]
    assert ia["backend"] == ib["backend"] == "hf"
    for r in (one, two):  # merged and removed
        assert not steps.shards_dir_of(str(r["generations"])).exists()


def test_a_killed_job_resumes_after_its_finished_shards(env, runs, monkeypatch):
    """Each rank exits like a SIGKILL once it has written its first shard (test hook): the
    shards written stay; the re-run reads them (a marker put into one shows it is not
    generated again) and generates only the rest, ending with the uninterrupted records."""
    one, _ = runs
    monkeypatch.setenv(steps.STOP_ENV, "1")
    with pytest.raises(RuntimeError, match="2-process evaluate job failed"):
        generate(env, "killed", 2)
    out = env["root"] / "killed"
    folder = steps.shards_dir_of(str(out / "generations.jsonl"))
    names = sorted(p.name for p in folder.iterdir())
    left = [n for n in names if not n.startswith(".")]
    assert left and set(left) <= {"shard-00000.jsonl", "shard-00001.jsonl"}, names
    # a rank stopped by the launcher mid-write leaves only its atomic write's temp file
    assert all(n.endswith(".tmp") for n in names if n.startswith(".")), names
    assert not (out / "generations.jsonl").exists()
    marked = folder / left[0]
    lines = read_jsonl(marked)
    lines[1]["seconds"] = -1.0  # a kept shard is read, not generated again
    write_jsonl(marked, lines)
    (folder / ".shard-00003.jsonl.tmp").write_text('{"key": "partial')  # as a killed write
    monkeypatch.delenv(steps.STOP_ENV)
    again = generate(env, "killed", 2)
    info = json.loads(again["info"].read_text())
    assert info["shards_resumed"] == len(left) and info["shards"] == 4
    assert sum(info["shards_generated_by_rank"]) == 4 - len(left)
    got = read_jsonl(again["generations"])
    assert sum(g["seconds"] == -1.0 for g in got) == 1
    assert [untimed(g) for g in got] == [untimed(g) for g in read_jsonl(one["generations"])]
    assert again["scored"].read_bytes() == one["scored"].read_bytes()
    assert not folder.exists()


def test_a_stale_shard_is_generated_again(env, tmp_path):
    """A shard file from other settings (its key differs) is not reused."""
    kwargs = {"model_path": str(env["model"]), "rows_path": str(env["rows"]),
              "sampling": {**SAMPLING, "n": 1, "max_turns": 1}, "prompt_template": TEMPLATE,
              "backend": "hf", "batch_size": 4, "seed": 0, "sandbox": SANDBOX, "gpus": 0,
              "shard_size": 5, "threads": 1}  # fmt: skip
    out = tmp_path / "generations.jsonl"
    folder = steps.shards_dir_of(str(out))
    folder.mkdir()
    write_jsonl(folder / steps.SHARD_NAME.format(1), [{"key": "other"}] + [{"x": 1}] * 5)
    steps.generate(**kwargs, out_generations=str(out), out_info=str(tmp_path / "info.json"))
    info = json.loads((tmp_path / "info.json").read_text())
    assert info["shards"] == 2 and info["shards_resumed"] == 0
    assert all("x" not in g for g in read_jsonl(out))


def test_shard_seeds_depend_on_the_seed_and_shard_only():
    assert steps.shard_seed(0, 1) == steps.shard_seed(0, 1)
    seeds = {steps.shard_seed(s, k) for s in range(3) for k in range(50)}
    assert len(seeds) == 150 and all(0 <= s < 2**32 for s in seeds)


# -- shapes: the config check and the dry run --------------------------------------------------
def tiny_config(**eval_keys) -> dict:
    cfg = yaml.safe_load((REPO / "tests/config_tir_tiny.yaml").read_text())
    cfg["tir"]["eval"].update(eval_keys)
    return cfg


@pytest.mark.parametrize(
    ("eval_keys", "evaluate", "messages"),
    [
        ({"parallel": "data", "backend": "vllm"}, {"gpus": 4},
         ["'tir.eval.parallel' is data", "'tir.eval.backend: vllm'"]),
        ({"parallel": "model"}, {"gpus": 4, "nodes": 2},
         ["'resources.evaluate.nodes' is 2", "'tir.eval.parallel: model'"]),
        ({}, {"processes": 2},
         ["'resources.evaluate.processes' is 2", "'tir.eval.parallel: model'"]),
    ],
)  # fmt: skip
def test_shapes_that_cannot_run_are_refused_naming_the_key(eval_keys, evaluate, messages):
    cfg = tiny_config(**eval_keys)
    cfg["resources"] = {"evaluate": evaluate}
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    for message in messages:
        assert message in str(err.value)


def test_shapes_that_can_run_pass_the_config_check():
    for eval_keys, evaluate in (({"parallel": "data"}, {"gpus": 4, "nodes": 2}),
                                ({"parallel": "data", "backend": "hf"}, {"processes": 2}),
                                ({}, {"gpus": 4})):  # fmt: skip
        cfg = tiny_config(**eval_keys)
        cfg["resources"] = {"evaluate": evaluate}
        validate_config(cfg)


@pytest.mark.parametrize(
    ("overrides", "want"),
    [
        ("tir: {eval: {parallel: data}}\nresources: {evaluate: {gpus: 4, mem_mb: 64000}}\n",
         (4, 1, "accelerate:ddp:1x4")),
        ("tir: {eval: {parallel: data}}\n"
         "resources: {evaluate: {gpus: 4, nodes: 2, mem_mb: 64000}}\n",
         (8, 2, "accelerate:ddp:2x4")),
        ("tir: {eval: {parallel: model}}\nresources: {evaluate: {gpus: 2, mem_mb: 64000}}\n",
         (2, 1, "vllm_tp-or-device_map:2")),
    ],
)  # fmt: skip
def test_dry_run_shows_the_launcher_of_every_generation_job(overrides, want, tmp_path):
    """seed 002 under the SLURM profile: every tir_generate job (one per checkpoint x
    dataset x sampling) asks for the GPUs and nodes and shows how its processes start."""
    shapes = dry_run(SEED_002, overrides, tmp_path)
    gpus, nodes, launcher = want
    assert shapes["tir_generate"]
    for res in shapes["tir_generate"]:
        assert resource(res, "gpu") == str(gpus), res
        assert resource(res, "launcher") == launcher, res
        assert resource(res, "family") == "evaluate", res
        assert resource(res, "nodes") == (str(nodes) if nodes > 1 else None), res
        if launcher.startswith("accelerate"):
            assert int(resource(res, "cpus_per_task")) >= gpus // nodes, res
        if nodes > 1:  # srun reaches every node from the batch step
            assert resource(res, "mpi") == "srun" and resource(res, "tasks") == str(nodes)
    for res in shapes["tir_score"]:  # scoring reads files: one process, no GPU
        assert resource(res, "launcher") is None and resource(res, "gpu") in (None, "0"), res


def test_the_workflow_runs_a_data_parallel_generation_job_like_one_process(tmp_path):
    """tir_generate through Snakemake with resources.evaluate.processes 2 (tir.eval.parallel
    data): the rule's script launches 2 processes, and its per-sample results are those of the
    stage run in one process with the rule's settings on the model the workflow built."""
    import os
    import subprocess
    import sys

    cfg = yaml.safe_load((REPO / "tests/config_tir_tiny.yaml").read_text())
    cfg["tir"]["tiny_base"]["sft_steps"] = 100
    cfg["tir"]["eval"].update({"parallel": "data", "shard_size": 2})  # 6 problems: 3 shards
    cfg["resources"] = {"evaluate": {"processes": 2}}
    configfile = tmp_path / "tir_dp.yaml"
    configfile.write_text(yaml.safe_dump(cfg))
    ev = "results/tir_tiny/evals/base/checkpoint-0/arith__tools"
    out = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path),
         f"{ev}/scores.json", "--cores", "2", "--configfile", str(configfile)],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-6000:]
    logs = list((tmp_path / "results/tir_tiny").rglob("tir_generate/**/*.log"))
    assert len(logs) == 1 and "launching 2 processes (accelerate:ddp:1x2)" in logs[0].read_text()
    info = json.loads((tmp_path / ev / "generation_info.json").read_text())
    assert info["processes"] == 2 and info["shards"] == 3

    ev_cfg = validate_config(cfg)["tir"]
    sampling = ev_cfg["eval"]["samplings"]["tools"]
    model = tmp_path / "results/tir_tiny/models/base/checkpoint-0"
    rows = tmp_path / "results/tir_tiny/data/arith/rows.jsonl"
    one = tmp_path / "one"
    steps.generate(
        str(model), str(rows), sampling, prompt_template=ev_cfg["prompt_template"],
        backend=ev_cfg["eval"]["backend"], batch_size=ev_cfg["eval"]["batch_size"],
        seed=ev_cfg["eval"]["seed"], sandbox=ev_cfg["sandbox"],
        out_generations=str(one / "generations.jsonl"), out_info=str(one / "info.json"),
        gpus=0, shard_size=2, threads=1,
    )  # fmt: skip
    steps.score(str(one / "generations.jsonl"), str(rows), ev_cfg["scoring"],
                str(one / "scores.json"), str(one / "scored.jsonl"))  # fmt: skip
    assert (tmp_path / ev / "scored.jsonl").read_bytes() == (one / "scored.jsonl").read_bytes()
    two = json.loads((tmp_path / ev / "scores.json").read_text())
    assert two["pass_at_k"] == json.loads((one / "scores.json").read_text())["pass_at_k"]


def test_vllm_requests_get_their_own_seeds(monkeypatch):
    """vLLM seeds each request by its SamplingParams: one seed shared by the n copies of a
    problem's context would give them one text. Each request gets its own seed, from the
    shard's seed, the call and its place; reseed starts the sequence again (a stand-in vllm
    module records what the generator asks for)."""
    import sys
    import types

    calls = []

    class SamplingParams:
        def __init__(self, **kw):
            self.kw = kw

    class LLM:
        def __init__(self, **kw):
            pass

        def get_tokenizer(self):
            return None

        def generate(self, contexts, params, use_tqdm=False):
            calls.append([p.kw["seed"] for p in params])
            out = types.SimpleNamespace(text="x", token_ids=[1])
            return [types.SimpleNamespace(outputs=[out]) for _ in contexts]

    monkeypatch.setitem(
        sys.modules, "vllm", types.SimpleNamespace(LLM=LLM, SamplingParams=SamplingParams)
    )
    from ftlab.tir.generation import VLLMTurnGenerator

    gen = VLLMTurnGenerator("m", max_new_tokens=4, temperature=1.0, seed=0)
    gen.reseed(steps.shard_seed(0, 3))
    gen(["same context"] * 4)
    gen(["same context"] * 4)  # the next turn
    gen.reseed(steps.shard_seed(0, 3))
    gen(["same context"] * 4)
    first, second, again = calls
    assert len(set(first)) == 4 and not set(first) & set(second)
    assert again == first and all(0 <= s < 2**31 for s in first + second)
