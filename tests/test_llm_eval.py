"""ftlab.llm.evaluate / ftlab.llm.cache: resumable, per-sample cached LLM evaluation.

Everything runs on two tiny random models (ftlab.llm.tiny, different seeds) and the two
local lm-eval tasks in tests/fixtures/lm_eval_tasks (12 generate_until + 8x4 loglikelihood
requests), so the file stays well under a few minutes on a busy CPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("lm_eval")

from ftlab.io import checkpoint_sha256  # noqa: E402
from ftlab.llm import evaluate as ev  # noqa: E402
from ftlab.llm.cache import SampleCache, request_key  # noqa: E402
from ftlab.llm.data import prompt_for  # noqa: E402
from ftlab.llm.tiny import build_tiny_causal_lm  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "lm_eval_tasks"
BENCH = {"ftlab_tiny_arith": "exact_match", "ftlab_tiny_mc": "acc_norm"}
N_REQUESTS = 12 + 8 * 4  # arith generations + 4 choices per mc question


def local_tasks(dest: Path) -> Path:
    """Copy of the fixture task YAMLs with absolute data paths and a private datasets cache.

    lm-eval hands data_files to datasets.load_dataset unchanged, which resolves relative paths
    against the working directory, not the YAML's folder.
    """
    dest.mkdir(parents=True, exist_ok=True)
    for src in FIXTURES.glob("*.yaml"):
        cfg = yaml.safe_load(src.read_text())
        files = cfg["dataset_kwargs"]["data_files"]
        cfg["dataset_kwargs"]["data_files"] = {k: str(FIXTURES / v) for k, v in files.items()}
        cfg["dataset_kwargs"]["cache_dir"] = str(dest / "datasets_cache")
        (dest / src.name).write_text(yaml.safe_dump(cfg, sort_keys=False))
    return dest


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("llm_eval")
    m0 = Path(build_tiny_causal_lm(root / "m0", seed=0))
    m1 = Path(build_tiny_causal_lm(root / "m1", seed=1))
    tasks = local_tasks(root / "tasks")
    return {"root": root, "m0": m0, "m1": m1, "tasks": tasks}


def run(env, model, name, cache, **kw):
    root = env["root"]
    kw = {"batch_size": "auto", "chunk_size": 8, **kw}
    return ev.run_lm_eval(
        model=str(model), benchmarks=BENCH, out_json=str(root / f"{name}.json"),
        samples_path=str(root / f"{name}.samples.jsonl"), cache_path=str(cache),
        include_path=str(env["tasks"]), meta={"step": 7}, **kw,
    )  # fmt: skip


def samples(env, name):
    lines = (env["root"] / f"{name}.samples.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def assert_same_samples(got, want):
    """Equal, up to float noise in log-likelihoods (other batch sizes pad differently)."""
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        if g["task"] == "ftlab_tiny_mc":
            assert [ll for ll, _ in g.pop("response")] == pytest.approx(
                [ll for ll, _ in w.pop("response")], rel=1e-5
            )
        assert g == w


@pytest.fixture(scope="module")
def base(env):
    """m0 on both tasks with a fresh cache; the reference for the other tests."""
    return run(env, env["m0"], "base", env["root"] / "shared.sqlite")


def test_cache_roundtrip_and_keys(tmp_path):
    with SampleCache(tmp_path / "c.sqlite") as c:
        assert c.journal_mode == "wal"
        c.put("h1/t/a", [-1.5, True])
        c.put_many([("h1/t/b", "text"), ("h2/t/a", 3.0)])
        assert c.get("h1/t/a") == [-1.5, True] and c.get("missing", 0) == 0
        assert c.get_many(["h1/t/b", "zz"]) == {"h1/t/b": "text"}
        assert len(c) == 3 and c.count("h1/") == 2 and "h2/t/a" in c
    with SampleCache(tmp_path / "c.sqlite") as c:  # persisted
        assert c.get("h2/t/a") == 3.0
    gen = ("generate_until", ("2+3=", {"until": ["\n"], "max_gen_toks": 4}))
    key = request_key("h1", "arith", gen)
    assert key.startswith("h1/arith/")
    assert key == request_key(
        "h1", "arith", ("generate_until", ("2+3=", {"max_gen_toks": 4, "until": ["\n"]}))
    )
    assert key != request_key("h2", "arith", gen)
    assert key != request_key("h1", "other", gen)
    assert key != request_key("h1", "arith", ("generate_until", ("2+3=", {"until": ["\n"]})))
    assert key != request_key("h1", "arith", ("loglikelihood", gen[1]))


def test_run_lm_eval_matches_simple_evaluate(env, base):
    from lm_eval.evaluator import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    out = json.loads((env["root"] / "base.json").read_text())
    assert out == base
    assert out["model_sha256"] == checkpoint_sha256(env["m0"]) and out["step"] == 7
    assert (out["n_cached"], out["n_computed"]) == (0, N_REQUESTS)
    assert [(b["task"], b["metric"], b["n"]) for b in out["benchmarks"]] == [
        ("ftlab_tiny_arith", "exact_match", 12), ("ftlab_tiny_mc", "acc_norm", 8)]  # fmt: skip
    assert out["lm_eval_version"] and out["batch_sizes_used"]  # auto batch was pinned

    # Independent: lm-eval alone, no cache, batch size 1.
    ref = simple_evaluate(
        model=HFLM(pretrained=str(env["m0"]), batch_size=1, device="cpu"),
        tasks=list(BENCH), num_fewshot=0,
        task_manager=TaskManager(include_path=str(env["tasks"]), include_defaults=False),
    )  # fmt: skip
    for b in out["benchmarks"]:
        r = ref["results"][b["task"]]
        assert b["value"] == pytest.approx(r[f"{b['metric']},none"], abs=1e-9)
        assert b["stderr"] == pytest.approx(r[f"{b['metric']}_stderr,none"], abs=1e-9)

    rows = samples(env, "base")
    assert len(rows) == 12 + 8
    ref_rows = {(t, s["doc_id"]): s for t in BENCH for s in ref["samples"][t]}
    for row in rows:
        s = ref_rows[row["task"], row["doc_id"]]
        assert row["benchmark"] == row["task"] and row["target"] == s["target"]
        assert set(row["metrics"]) == set(s["metrics"])
        if row["task"] == "ftlab_tiny_arith":
            assert row["response"] == s["filtered_resps"][0]
            assert row["prompt"] == s["arguments"][0][0]
        else:
            got = [ll for ll, _ in row["response"]]
            assert got == pytest.approx([ll for ll, _ in s["filtered_resps"]], rel=1e-5)


def test_rerun_is_fully_cached(env, base):
    again = run(env, env["m0"], "again", env["root"] / "shared.sqlite")
    assert (again["n_cached"], again["n_computed"]) == (N_REQUESTS, 0)
    assert again["benchmarks"] == base["benchmarks"]
    assert samples(env, "again") == samples(env, "base")
    # another batch size (padding can change logprobs' last bits) is computed afresh
    other = run(env, env["m0"], "batch2", env["root"] / "shared.sqlite", batch_size=2)
    assert (other["n_cached"], other["n_computed"]) == (0, N_REQUESTS)
    assert other["cache_identity"] != again["cache_identity"]


def test_two_checkpoints_never_share_answers(env, base):
    shared = env["root"] / "shared.sqlite"
    other = run(env, env["m1"], "other", shared)
    assert other["model_sha256"] != base["model_sha256"]
    assert (other["n_cached"], other["n_computed"]) == (0, N_REQUESTS)
    alone = run(env, env["m1"], "alone", env["root"] / "m1_only.sqlite")
    assert other["benchmarks"] == alone["benchmarks"]
    assert samples(env, "other") == samples(env, "alone")
    assert samples(env, "other") != samples(env, "base")  # different weights, different answers
    with SampleCache(shared) as c:
        assert c.count(base["cache_identity"] + "/") == N_REQUESTS
        assert c.count(other["cache_identity"] + "/") == N_REQUESTS
        assert base["cache_identity"].startswith(base["model_sha256"] + "-")


def test_kill_and_resume(env, base, monkeypatch):
    root, cache = env["root"], env["root"] / "killed.sqlite"
    kwargs = dict(
        model=str(env["m0"]), benchmarks=BENCH, out_json=str(root / "killed.json"),
        samples_path=str(root / "killed.samples.jsonl"), cache_path=str(cache),
        include_path=str(env["tasks"]), batch_size=2, chunk_size=4,
    )  # fmt: skip
    code = f"from ftlab.llm.evaluate import run_lm_eval; run_lm_eval(**{kwargs!r})"
    proc = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, ev.CRASH_ENV: "3"},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == ev.CRASH_EXIT_CODE, proc.stderr[-3000:]
    assert not (root / "killed.json").exists()
    import sqlite3

    with sqlite3.connect(cache) as db:
        before = {k for (k,) in db.execute("SELECT key FROM samples")}
    assert len(before) == 3 * 4  # three committed chunks of four

    # Count what reaches the model on resume: nothing answered before the kill.
    from lm_eval.models.huggingface import HFLM

    seen = []
    for method in ("loglikelihood", "generate_until"):
        orig = getattr(HFLM, method)

        def spy(self, requests, *a, _orig=orig, **k):
            seen.extend(requests)
            return _orig(self, requests, *a, **k)

        monkeypatch.setattr(HFLM, method, spy)
    resumed = ev.run_lm_eval(**kwargs)
    assert (resumed["n_cached"], resumed["n_computed"]) == (12, N_REQUESTS - 12)
    keys = [request_key(resumed["cache_identity"], r.task_name, r) for r in seen]
    assert len(keys) == len(set(keys)) == N_REQUESTS - 12
    assert not set(keys) & before
    assert resumed["benchmarks"] == base["benchmarks"]
    assert_same_samples(samples(env, "killed"), samples(env, "base"))


def test_unknown_benchmark_or_metric_named(env):
    common = dict(
        model="/nonexistent/model", out_json="x.json", samples_path="x.jsonl",
        cache_path="x.sqlite", include_path=str(env["tasks"]),
    )  # fmt: skip
    with pytest.raises(ValueError, match="ftlab_tiny_mcq.*close names: ftlab_tiny_mc"):
        ev.run_lm_eval(benchmarks={"ftlab_tiny_mcq": "acc"}, **common)
    with pytest.raises(ValueError, match="accnorm.*ftlab_tiny_mc.*acc_norm"):
        ev.run_lm_eval(benchmarks={"ftlab_tiny_mc": "accnorm"}, **common)


ROWS = [  # normalized gsm8k-style rows
    {"id": f"r{i}", "question": q, "answer": a, "aliases": [], "solution": f"#### {a}"}
    for i, (q, a) in enumerate(
        [("What is 2+3?", "5"), ("What is 10-4?", "6"), ("What is 50*2?", "100"),
         ("What is 3*4?", "12")]
    )
]  # fmt: skip


def write_rows(path: Path) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return path


def test_evaluate_in_domain_stub_generator(tmp_path):
    rows = write_rows(tmp_path / "rows.jsonl")
    canned = dict(zip([prompt_for(r, "reasoning") for r in ROWS], [
        "<reasoning>2+3</reasoning><answer>5</answer>",  # correct, partial, format
        "The answer is 6",  # correct, partial (last number), no format
        "<reasoning>x</reasoning><answer>95</answer>",  # wrong but within 10%, format
        "no idea",  # nothing
    ], strict=True))  # fmt: skip
    calls = []

    def generate(prompts, max_new_tokens):
        calls.append(len(prompts))
        return [canned[p] for p in prompts]

    common = dict(
        model="stub-model", rows_path=str(rows), fmt="gsm8k", cache_path=str(tmp_path / "c.db"),
        batch_size=3, generate_fn=generate, meta={"model": "base", "step": 0},
    )  # fmt: skip
    out = ev.evaluate_in_domain(
        out_json=str(tmp_path / "a.json"), samples_path=str(tmp_path / "a.jsonl"), **common
    )
    assert calls == [3, 1] and (out["n"], out["n_computed"], out["n_cached"]) == (4, 4, 0)
    assert (out["accuracy"], out["partial_accuracy"], out["format_accuracy"]) == (0.5, 0.75, 0.5)
    assert (out["model"], out["step"]) == ("base", 0)
    assert json.loads((tmp_path / "a.json").read_text()) == out
    got = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert [(s["id"], s["correct"], s["format"]) for s in got] == [
        ("r0", 1, 1), ("r1", 1, 0), ("r2", 0, 1), ("r3", 0, 0)]  # fmt: skip
    assert [s["completion"] for s in got] == list(canned.values())

    # A re-run generates nothing; another model name shares no completions.
    again = ev.evaluate_in_domain(
        out_json=str(tmp_path / "b.json"), samples_path=str(tmp_path / "b.jsonl"), **common
    )
    assert calls == [3, 1] and (again["n_cached"], again["n_computed"]) == (4, 0)
    assert again["accuracy"] == out["accuracy"]
    other = ev.evaluate_in_domain(
        out_json=str(tmp_path / "c.json"), samples_path=str(tmp_path / "c.jsonl"),
        **{**common, "model": "other-stub"},
    )  # fmt: skip
    assert calls == [3, 1, 3, 1] and other["n_cached"] == 0


def test_evaluate_in_domain_tiny_model(env, tmp_path):
    rows = write_rows(tmp_path / "rows.jsonl")
    common = dict(model=str(env["m0"]), rows_path=str(rows), fmt="gsm8k", max_new_tokens=5,
                  prompt_style="plain", device="cpu")  # fmt: skip

    def go(name, cache, batch_size):
        return ev.evaluate_in_domain(
            out_json=str(tmp_path / f"{name}.json"), samples_path=str(tmp_path / f"{name}.jsonl"),
            cache_path=str(tmp_path / cache), batch_size=batch_size, **common,
        )  # fmt: skip

    def completions(name):
        lines = (tmp_path / f"{name}.jsonl").read_text().splitlines()
        return [json.loads(x)["completion"] for x in lines]

    out = go("batched", "c.db", 3)  # left-padded batches of different prompt lengths
    assert (out["n"], out["n_computed"]) == (4, 4)
    assert out["model_sha256"] == checkpoint_sha256(env["m0"])
    assert all(isinstance(c, str) for c in completions("batched"))
    one = go("single", "c1.db", 1)  # no padding at all
    assert completions("single") == completions("batched")
    again = go("again", "c.db", 3)
    assert (again["n_cached"], again["n_computed"]) == (4, 0)
    assert completions("again") == completions("batched")
    assert one["accuracy"] == out["accuracy"] == again["accuracy"]
