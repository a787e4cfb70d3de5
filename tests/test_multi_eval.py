"""LLM evaluation with several processes (issue 14): lm-eval's data-parallel mode through
ftlab.launch (the path of a multi-GPU evaluation job), 2 processes on CPU with gloo.

The reference is a 1-process run of the same stage function (independently: lm-eval alone is
compared with the 1-process path in test_llm_eval). 2 processes must give the same per-task
metrics, the same per-sample rows, the same in-domain completions and the same per-sample
cache (keys equal, answers equal; log-likelihoods within 1e-5 relative, as other batch
compositions pad differently), with no rank file left; a re-run answers everything from the
merged cache (no model call).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("lm_eval")

from test_llm_eval import local_tasks  # noqa: E402

from ftlab import launch  # noqa: E402
from ftlab.io import read_jsonl, write_jsonl  # noqa: E402
from ftlab.llm import data, tiny  # noqa: E402
from ftlab.llm.cache import SampleCache, merge_rank_files, rank_files, rank_path  # noqa: E402
from ftlab.llm.lm_eval_runner import placement_args  # noqa: E402

BENCH = {"ftlab_tiny_arith": "exact_match", "ftlab_tiny_mc": "acc_norm"}
N_REQUESTS = 12 + 8 * 4
N_IN_DOMAIN = 6
REL = 1e-5


def evaluate(root: Path, name: str, env: dict, processes: int) -> dict[str, Path]:
    """evaluate_point of the tiny model through ftlab.launch with `processes` processes."""
    out = root / name
    outputs = {k: str(out / f"{k}.json") for k in ("lm_eval", "in_domain")}
    outputs |= {f"{k}_samples": str(out / f"{k}.samples.jsonl") for k in ("lm_eval", "in_domain")}
    kwargs = {
        "model_name": "base",
        "step": 0,
        "model_path": str(env["model"]),
        "test_rows": {"g": str(env["rows"])},
        "formats": {"g": "gsm8k"},
        "benchmarks": BENCH,
        "lm_eval": {"batch_size": 4, "include_path": str(env["tasks"]), "parallel": "data"},
        "in_domain": {
            "limit": N_IN_DOMAIN,
            "max_new_tokens": 6,
            "batch_size": 2,
            "prompt_style": "plain",
            "sample": "stratified",
            "seed": 0,
        },  # fmt: skip
        "outputs": outputs,
        "cache_path": str(root / "cache" / f"{name}.sqlite"),
        "study": "t",
    }
    plan = launch.plan_for("evaluate", {"processes": processes}, threads=1)
    launch.run_stage(plan, "ftlab.llm.steps:evaluate_point", kwargs=kwargs,
                     payload_path=out / "launch.json")  # fmt: skip
    return {**{k: Path(v) for k, v in outputs.items()}, "cache": Path(kwargs["cache_path"])}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("multi_eval")
    fixtures = data.write_fixtures(root / "fixtures", n_train=4, n_test=8)
    rows = root / "test_rows.jsonl"
    write_jsonl(rows, data.load_rows(fixtures["gsm8k"], "gsm8k", split="test"))
    model = tiny.build_tiny_causal_lm(root / "tiny", seed=0)
    return {"root": root, "model": model, "rows": rows, "tasks": local_tasks(root / "tasks")}


@pytest.fixture(scope="module")
def runs(env):
    one = evaluate(env["root"], "one", env, processes=1)
    two = evaluate(env["root"], "two", env, processes=2)
    return one, two


def _close(a, b) -> bool:
    """Cached answers equal; log-likelihood floats within REL (other batches pad otherwise)."""
    if isinstance(a, float) and isinstance(b, float):
        return a == pytest.approx(b, rel=REL, abs=1e-7)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def test_two_processes_give_the_metrics_samples_and_cache_of_one(runs):
    one, two = runs
    a, b = (json.loads(r["lm_eval"].read_text()) for r in (one, two))
    assert [(r["task"], r["metric"], r["n"]) for r in b["benchmarks"]] == [
        (r["task"], r["metric"], r["n"]) for r in a["benchmarks"]]  # fmt: skip
    for ra, rb in zip(a["benchmarks"], b["benchmarks"], strict=True):
        assert rb["value"] == pytest.approx(ra["value"], abs=1e-12)
        assert rb["stderr"] == pytest.approx(ra["stderr"], abs=1e-12)
    assert (a["processes"], b["processes"]) == (1, 2)
    assert (a["n_cached"], a["n_computed"]) == (0, N_REQUESTS)
    # every request answered once over the two ranks (lm-eval pads the shorter rank with a
    # copy of its last request, which the cache answers)
    assert b["n_computed"] == N_REQUESTS and b["cache_identity"] == a["cache_identity"]

    sa, sb = read_jsonl(one["lm_eval_samples"]), read_jsonl(two["lm_eval_samples"])
    assert len(sa) == len(sb) == 12 + 8
    for x, y in zip(sa, sb, strict=True):
        assert _close(x, y), (x, y)

    ia, ib = (json.loads(r["in_domain"].read_text()) for r in (one, two))
    ga, gb = ia["datasets"]["g"], ib["datasets"]["g"]
    for k in ("accuracy", "partial_accuracy", "format_accuracy", "n", "n_computed"):
        assert ga[k] == gb[k], k
    assert ga["n"] == N_IN_DOMAIN and gb["n_computed"] == N_IN_DOMAIN
    assert read_jsonl(one["in_domain_samples"]) == read_jsonl(two["in_domain_samples"])

    # the merged cache is the 1-process cache: the same keys, the same answers
    with SampleCache(one["cache"]) as ca, SampleCache(two["cache"]) as cb:
        ka, kb = ca.items(), cb.items()
    assert len(ka) == N_REQUESTS + N_IN_DOMAIN
    assert ka.keys() == kb.keys()
    assert all(_close(ka[k], kb[k]) for k in ka)
    assert rank_files(two["cache"]) == []  # merged and removed


def test_rerun_with_two_processes_answers_everything_from_the_merged_cache(env, runs):
    _, two = runs
    before = json.loads(two["lm_eval"].read_text())
    again = evaluate(env["root"], "two", env, processes=2)
    out = json.loads(again["lm_eval"].read_text())
    assert (out["n_cached"], out["n_computed"]) >= (N_REQUESTS, 0)
    assert out["n_computed"] == 0
    assert out["benchmarks"] == before["benchmarks"]
    g = json.loads(again["in_domain"].read_text())["datasets"]["g"]
    assert (g["n_computed"], g["n_cached"]) == (0, N_IN_DOMAIN)
    assert rank_files(again["cache"]) == []


def test_rank_files_of_a_killed_run_are_merged_first(tmp_path):
    path = tmp_path / "checkpoint-5.sqlite"
    with SampleCache(path) as c:
        c.put("h/t/a", 1.0)
    for rank, items in ((0, [("h/t/b", "x")]), (3, [("h/t/c", [-0.5, True]), ("h/t/a", 1.0)])):
        with SampleCache(rank_path(path, rank)) as c:
            c.put_many(items)
    (tmp_path / "checkpoint-50.rank1.sqlite").write_bytes(b"")  # another checkpoint's: kept
    assert [p.name for p in rank_files(path)] == ["checkpoint-5.rank0.sqlite",
                                                  "checkpoint-5.rank3.sqlite"]  # fmt: skip
    assert merge_rank_files(path) == 3
    with SampleCache(path) as c:
        assert c.items() == {"h/t/a": 1.0, "h/t/b": "x", "h/t/c": [-0.5, True]}
    assert rank_files(path) == [] and (tmp_path / "checkpoint-50.rank1.sqlite").exists()
    with SampleCache(path, readonly=True) as c:  # what the ranks read while they run
        assert c.get("h/t/b") == "x"


def test_placement_args():
    assert placement_args("hf", "data", 8, {}) == {}
    assert placement_args("hf", "model", 8, {}) == {"parallelize": True}
    assert placement_args("hf", "model", 1, {}) == {}
    assert placement_args("vllm", "data", 4, {}) == {"tensor_parallel_size": 4}
    assert placement_args("vllm", "model", 4, {"tensor_parallel_size": 2}) == {}
    with pytest.raises(ValueError, match="config key 'lm_eval.parallel'"):
        placement_args("hf", "pipeline", 2, {})


# -- teacher generation ------------------------------------------------------------------------
def teacher(root: Path, name: str, env: dict, processes: int) -> Path:
    """The teacher step (llm.teacher.parallel: data) with `processes` processes, greedy HF."""
    out = root / name
    settings = {"backend": "hf", "max_new_tokens": 8, "batch_size": 2, "samples_per_question": 1,
                "temperature": 0.0, "top_p": None, "keep": "all", "shard_size": 2,
                "tensor_parallel_size": None, "parallel": "data"}  # fmt: skip
    kwargs = {"teacher": str(env["model"]), "settings": settings, "fmt": "gsm8k",
              "rows_path": str(env["rows"]), "out": str(out / "records.jsonl"),
              "report": str(out / "report.json"), "shards_dir": str(out / "shards")}  # fmt: skip
    plan = launch.plan_for("teacher", {"processes": processes}, threads=1)
    launch.run_stage(plan, "ftlab.llm.steps:teacher_trajectories", kwargs=kwargs,
                     payload_path=out / "launch.json")  # fmt: skip
    return out


def test_teacher_with_two_processes_equals_one_and_resumes_its_shards(env):
    root = env["root"]
    one, two = teacher(root, "t1", env, 1), teacher(root, "t2", env, 2)
    n_rows = len(read_jsonl(env["rows"]))
    shards = sorted(p.name for p in (one / "shards").iterdir())
    assert len(shards) == -(-n_rows // 2) >= 2  # both ranks had shards to generate
    assert sorted(p.name for p in (two / "shards").iterdir()) == shards
    for name in shards:  # greedy: the same generations, shard by shard
        assert read_jsonl(two / "shards" / name) == read_jsonl(one / "shards" / name)
    assert read_jsonl(two / "records.jsonl") == read_jsonl(one / "records.jsonl")
    r1, r2 = (json.loads((d / "report.json").read_text()) for d in (one, two))
    assert (r1["processes"], r2["processes"]) == (1, 2)
    for k in ("n_questions", "n_generated", "n_kept", "pass_rate", "shards"):
        assert r1[k] == r2[k], k
    assert r2["n_questions"] == n_rows and r2["shards_resumed"] == 0

    # a killed job: shard 1 (rank 1's) never written; the re-run generates only that one
    kept = {n: (two / "shards" / n).stat().st_mtime_ns for n in shards}
    (two / "shards" / shards[1]).unlink()
    again = json.loads((teacher(root, "t2", env, 2) / "report.json").read_text())
    assert again["shards_resumed"] == len(shards) - 1
    assert read_jsonl(two / "shards" / shards[1]) == read_jsonl(one / "shards" / shards[1])
    assert all((two / "shards" / n).stat().st_mtime_ns == t for n, t in kept.items()
               if n != shards[1])  # fmt: skip
    assert read_jsonl(two / "records.jsonl") == read_jsonl(one / "records.jsonl")


def test_a_killed_two_process_evaluation_resumes_from_its_rank_files(env, runs, monkeypatch):
    """Both ranks exit like a SIGKILL after their first committed chunk (the cache's test
    hook): their rank files stay; the re-run - with 1 process, the count may change - merges
    them first, computes only the rest, and ends with the 1-process cache."""
    from ftlab.llm.cache import CRASH_ENV

    one, _ = runs
    root = env["root"]
    monkeypatch.setenv(CRASH_ENV, "1")
    with pytest.raises(RuntimeError, match="2-process evaluate job failed"):
        evaluate(root, "killed", env, processes=2)
    cache = root / "cache" / "killed.sqlite"
    left = rank_files(cache)
    assert left and not (root / "killed" / "lm_eval.json").exists()
    kept = 0
    for f in left:
        with SampleCache(f) as c:
            kept += len(c)
    assert kept >= 1  # the rank that exited first had committed its chunk
    monkeypatch.delenv(CRASH_ENV)
    again = evaluate(root, "killed", env, processes=1)
    out = json.loads(again["lm_eval"].read_text())
    assert out["n_cached"] == kept and out["n_computed"] == N_REQUESTS - kept
    assert rank_files(cache) == []
    with SampleCache(one["cache"]) as ca, SampleCache(cache) as cb:
        ka, kb = ca.items(), cb.items()
    assert ka.keys() == kb.keys() and all(_close(ka[k], kb[k]) for k in ka)
    want = json.loads(one["lm_eval"].read_text())["benchmarks"]
    for a, b in zip(want, out["benchmarks"], strict=True):
        assert b["value"] == pytest.approx(a["value"], abs=1e-12)


def test_a_rank_without_documents_is_refused_before_the_model_load(tmp_path):
    """lm-eval fails inside a rank that gets no document of a task: refused up front, naming
    the task (the fixture tasks have 8 and 12 documents) or the limit key."""
    from ftlab.llm.lm_eval_runner import _load_benchmarks, _task_manager, check_documents_per_rank

    names = {"ftlab_tiny_mc": "acc", "ftlab_tiny_arith": "exact_match"}
    tm = _task_manager(list(names), str(local_tasks(tmp_path / "tasks")))
    docs: dict[str, int] = {}
    _load_benchmarks(tm, names, docs)
    lines = {
        f.stem: sum(1 for _ in f.open())
        for f in (Path(__file__).parent / "fixtures").rglob("*.jsonl")
    }
    assert docs == {t: lines[t] for t in names}  # counted independently: lines of the data
    for world in (1, 2, 8):
        check_documents_per_rank(docs, world, None)
    with pytest.raises(
        ValueError, match=r"\{'ftlab_tiny_mc': 8\} have fewer documents than the evaluation's 9"
    ):
        check_documents_per_rank(docs, 9, None)
    with pytest.raises(ValueError, match=r"config key 'lm_eval.limit' \(3\) is below"):
        check_documents_per_rank(docs, 4, 3)
