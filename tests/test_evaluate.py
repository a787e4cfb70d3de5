"""Greedy evaluation: metrics/sample files, per-task multitask results, batching invariance."""

import json
import math
import random

import pytest
import torch

import ftlab.evaluate as ev
from ftlab.io import checkpoint_sha256
from ftlab.modeling import build_model
from ftlab.tokenizer import build_char_tokenizer

MODEL = {"layers": 2, "hidden": 32, "heads": 2, "ffn": 64, "max_length": 64, "init_std": 0.3}


def _rows(n, seed):
    """Rows of three tasks with answers of varying length (values need not be geometric)."""
    rng = random.Random(seed)
    cid = lambda: f"c_{rng.randrange(10000):04d}"  # noqa: E731
    out = []
    for i in range(n):
        kind = i % 3
        if kind == 0:
            out.append(f"dist({cid()},{cid()})={rng.randrange(10 ** rng.randrange(1, 5))}")
        elif kind == 1:
            out.append(f"compass({cid()},{cid()})={rng.choice(['N', 'NE', 'SW', 'E'])}")
        else:
            ids = ",".join(cid() for _ in range(rng.randrange(3, 6)))
            out.append(f"inside({cid()};{ids})={rng.choice(['TRUE', 'FALSE'])}")
    return out


def _write(path, rows):
    path.write_text("".join(json.dumps({"text": r}) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint-7"
    tok = build_char_tokenizer()
    torch.manual_seed(3)
    build_model(MODEL, tok).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _paths(root):
    folder = root / "evals/m/checkpoint-7"
    return str(folder / "world_eval.json"), str(folder / "world_eval.samples.jsonl")


def test_evaluate_checkpoint_files(checkpoint, tmp_path):
    dist_rows = [r for r in _rows(60, 1) if r.startswith("dist")]
    sets = {
        "distance__atlantis_required": _write(tmp_path / "d.jsonl", dist_rows),
        "multitask__no_atlantis": _write(tmp_path / "m.jsonl", _rows(30, 2)),
    }
    metrics_p, samples_p = _paths(tmp_path)
    ev.evaluate_checkpoint(
        checkpoint=str(checkpoint),
        eval_sets=sets,
        out_metrics=metrics_p,
        out_samples=samples_p,
        rows_per_set=12,
        batch_size=5,
        meta={"model": "m", "step": 7},
    )
    out_dir = tmp_path / "evals/m/checkpoint-7"
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "world_eval.json",
        "world_eval.samples.jsonl",
    ]  # one metrics and one samples file for every set; nothing temporary left behind

    metrics = json.loads(open(metrics_p).read())
    samples = [json.loads(line) for line in open(samples_p)]
    assert list(metrics) == [
        "model", "step", "checkpoint", "checkpoint_sha256", "eval_sets", "results", "sets",
    ]  # fmt: skip
    assert (metrics["model"], metrics["step"]) == ("m", 7)
    assert metrics["eval_sets"] == list(sets)
    assert metrics["checkpoint"] == str(checkpoint)
    assert metrics["checkpoint_sha256"] == checkpoint_sha256(checkpoint)
    assert [s["eval_set"] for s in metrics["sets"]] == list(sets)
    for s in samples:
        assert set(s) == {"eval_set", "prompt", "target", "output", "task", "score", "parsed"}
        assert s["prompt"].endswith("=") and "<eos>" not in s["output"]
    for name in sets:
        [timing] = [s for s in metrics["sets"] if s["eval_set"] == name]
        mine_set = [s for s in samples if s["eval_set"] == name]
        assert timing["n_rows"] == len(mine_set) == 12
        assert timing["elapsed_s"] > 0 and timing["rows_per_s"] > 0
        for r in (r for r in metrics["results"] if r["eval_set"] == name):
            mine = [s for s in mine_set if s["task"] == r["task"]]
            assert r["variant"] == name.split("__")[1]
            assert r["n"] == len(mine)
            assert r["n_unparsable"] == sum(not s["parsed"] for s in mine)
            assert r["value"] == pytest.approx(sum(s["score"] for s in mine) / len(mine))

    results = metrics["results"]
    single = [r for r in results if r["eval_set"] == "distance__atlantis_required"]
    assert [(r["task"], r["metric"]) for r in single] == [("distance", "mae")]
    multi = [r for r in results if r["eval_set"] == "multitask__no_atlantis"]
    assert [(r["task"], r["metric"], r["n"]) for r in multi] == [
        ("distance", "mae", 4), ("compass", "accuracy", 4), ("inside", "accuracy", 4),
    ]  # fmt: skip


def test_scores_of_known_outputs(checkpoint, tmp_path, monkeypatch):
    rows = _rows(9, 5)
    calls = []

    def fake(model, tokenizer, prompts, batch_size, max_new_tokens, *args, **kwargs):
        calls.append(max_new_tokens)  # right answers for even rows, junk for odd ones
        return [r.split("=")[1] if i % 2 == 0 else "x?" for i, r in enumerate(rows)]

    monkeypatch.setattr(ev, "greedy_decode", fake)
    sets = {"multitask__no_atlantis": _write(tmp_path / "m.jsonl", rows)}
    metrics_p, samples_p = _paths(tmp_path)
    ev.evaluate_checkpoint(
        checkpoint=str(checkpoint), eval_sets=sets, out_metrics=metrics_p,
        out_samples=samples_p, rows_per_set=None, batch_size=4, meta={"model": "m", "step": 7},
    )  # fmt: skip
    longest = max(len(r.split("=")[0]) + 2 for r in rows)  # <bos>, prompt and its '='
    assert calls == [min(20, MODEL["max_length"] - longest)]  # the paper's budget, capped
    res = {r["task"]: r for r in json.loads(open(metrics_p).read())["results"]}
    # rows 0,3,6 distance (right, junk, right); 1,4,7 compass (junk, right, junk); 2,5,8 inside
    assert res["distance"]["value"] == pytest.approx(math.hypot(3600, 1800) / 3)
    assert res["distance"]["n_unparsable"] == 1
    assert res["compass"]["value"] == pytest.approx(1 / 3) and res["compass"]["n_unparsable"] == 2
    assert res["inside"]["value"] == pytest.approx(2 / 3) and res["inside"]["n_unparsable"] == 1


def test_batching_does_not_change_greedy_outputs(checkpoint):
    model, tok = ev.load_checkpoint(checkpoint)
    assert tok.padding_side == "left" and not model.training
    prompts = [r.split("=")[0] + "=" for r in _rows(40, 9)]
    one = ev.greedy_decode(model, tok, prompts, batch_size=1, max_new_tokens=6)
    assert len(set(one)) > 3  # a random model, but not a constant one
    # At most 6 tokens each, cut before <eos>; special tokens are dropped, as the paper's
    # batch_decode(skip_special_tokens=True).
    assert all(len(tok(o, add_special_tokens=False)["input_ids"]) <= 6 for o in one)
    assert all("<" + "eos>" not in o and "<pad>" not in o and "<bos>" not in o for o in one)
    assert ev.greedy_decode(model, tok, prompts, batch_size=16, max_new_tokens=6) == one
    assert ev.greedy_decode(model, tok, prompts, batch_size=7, max_new_tokens=6) == one
    via_generate = ev.greedy_decode(model, tok, prompts, 16, 6, method="generate")
    assert via_generate == one
    assert ev.greedy_decode(model, tok, [], 16, 6) == []


def test_answer_budget_option(checkpoint, tmp_path, monkeypatch):
    rows = _rows(6, 5)
    calls = []

    def fake(model, tokenizer, prompts, batch_size, max_new_tokens, *args, **kwargs):
        calls.append((max_new_tokens, kwargs.get("budgets")))
        return ["x"] * len(prompts)

    monkeypatch.setattr(ev, "greedy_decode", fake)
    model, tok = ev.load_checkpoint(checkpoint)
    ev.evaluate_set(model, tok, "m", rows, 4, max_new_tokens="answer", answer_parsing="strict")
    assert calls == [(max(len(r.split("=")[1]) for r in rows) + 2, None)]
    with pytest.raises(ValueError, match="eval.max_new_tokens"):
        ev.evaluate_set(model, tok, "m", rows, 4, max_new_tokens="nope")


def test_paper_budget_per_task(checkpoint):
    """Each row keeps at most its task's paper budget (20; trianglearea 30) of one decode with
    the set's largest budget, and that is what decoding with its own budget gives."""
    model, tok = ev.load_checkpoint(checkpoint)
    rows = [r for r in _rows(12, 4) if r.startswith("dist")] + [
        f"triarea(c_{i:04d},c_{i + 7:04d},c_{i + 9:04d})={i}" for i in range(4)
    ]
    samples, _ = ev.evaluate_set(model, tok, "m", rows, 3)
    for budget, prefix in ((20, "dist"), (30, "triarea")):
        mine = [s for s in samples if s["prompt"].startswith(prefix)]
        alone = ev.greedy_decode(model, tok, [s["prompt"] for s in mine], 3, budget)
        assert [s["output"] for s in mine] == alone
        assert max(len(o) for o in alone) > 12  # a random model: the budget is what cuts


def test_eval_precision():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    # The paper (src/eval/evaluate_checkpoints.py): float16 on CUDA, else float32.
    assert ev.eval_dtype("auto", cuda) == torch.float16
    assert ev.eval_dtype("auto", cpu) == torch.float32
    assert ev.eval_dtype("fp32", cuda) == torch.float32
    assert ev.eval_dtype("fp16", cuda) == torch.float16
    with pytest.raises(ValueError, match="eval.precision"):
        ev.eval_dtype("fp16", cpu)
    with pytest.raises(ValueError, match="eval.precision"):
        ev.eval_dtype("bf16", cpu)


def test_multitask_rows_caps_only_the_multitask_set(checkpoint, tmp_path, monkeypatch):
    """The paper scores min(len, 10000) rows of a test set: only the multitask set (7 x 10,000
    rows at paper scale) is larger; eval.multitask_rows takes its first N (it is shuffled)."""
    seen = {}

    def fake(model, tokenizer, prompts, batch_size, max_new_tokens, *args, **kwargs):
        seen.setdefault(len(seen), list(prompts))
        return ["x"] * len(prompts)

    monkeypatch.setattr(ev, "greedy_decode", fake)
    rows = _rows(9, 5)
    sets = {"multitask__no_atlantis": _write(tmp_path / "m.jsonl", rows),
            "distance__no_atlantis": _write(tmp_path / "d.jsonl", rows)}  # fmt: skip
    metrics_p, samples_p = _paths(tmp_path)
    ev.evaluate_checkpoint(
        checkpoint=str(checkpoint), eval_sets=sets, out_metrics=metrics_p, out_samples=samples_p,
        rows_per_set=None, multitask_rows=4, batch_size=4, meta={"model": "m", "step": 7},
    )  # fmt: skip
    assert [len(p) for p in seen.values()] == [4, 9]
    assert seen[0] == [r.split("=")[0] + "=" for r in rows[:4]]


def test_multitask_rows_enters_params_only_where_it_trims(repo):
    from ftlab.config import load_config
    from ftlab.world.settings import evaluation

    paper = load_config(repo / "config/experiments/paper_exp1.yaml")  # 7 x 10,000 rows
    assert evaluation(paper, "base_seed1", 1)["multitask_rows"] == 10_000
    demo = load_config(repo / "config/config.yaml")  # 3 x 128 rows: nothing to trim
    assert "multitask_rows" not in evaluation(demo, "base_seed1", 1)
