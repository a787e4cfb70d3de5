"""The run registry on a study with planted outcomes (result files written directly, in the
evaluations' own shapes): a known winner, known p-values against scipy, config differences,
exports, provenance, and an index that many processes update at once."""

from __future__ import annotations

import csv
import io
import json
import math
import multiprocessing as mp
import re
import sqlite3
import sys

import numpy as np
import pytest
from scipy import stats as sps

from ftlab import provenance, stats
from ftlab.cli import main
from ftlab.registry import index, synthetic, views
from ftlab.registry.records import read_samples
from ftlab.registry.store import Registry, RegistryError

SETS = ("distance__no_atlantis", "angle__atlantis_required")
N = 40


def _planted(root):
    """Study 'planted': groups good/mid/bad x seeds 1-2 (world-style mae and accuracy sets),
    plus an LLM-style study 'llmish' with lm_eval and in_domain files."""
    study = root / "planted"
    rng = np.random.default_rng(7)
    acc = {"good": 0.9, "mid": 0.7, "bad": 0.5}
    err = {"good": 5.0, "mid": 10.0, "bad": 20.0}
    for grp in acc:
        for seed in (1, 2):
            model = f"{grp}_seed{seed}"
            synthetic.trained_model(
                study,
                model,
                [10, 20],
                meta={
                    "training": {"lr": 0.001 if grp != "bad" else 0.01, "epochs": 2},
                    "seed": seed,
                },
                provenance=provenance.collect(stage="train", study="planted", model=model),
            )
            for step in (10, 20):
                boost = 0.0 if step == 20 else -0.2  # the last checkpoint is the better one
                correct = (rng.random(N) < acc[grp] + boost).astype(float)
                errors = np.abs(rng.normal(err[grp], 1.0, N)).round(1)
                sets = {SETS[1]: ("accuracy", correct), SETS[0]: ("mae", errors)}
                synthetic.world_eval(study, model, step, sets)
    llm = root / "llmish"
    a = [1, 1, 1, 0, 1, 1, 1, 1, 0, 1, 1, 1]
    b = [0, 1, 0, 0, 1, 0, 1, 0, 0, 1, 0, 1]
    synthetic.lm_eval(llm, "gt_sft-gsm8k_seed1", 5, {"arc_easy": ("acc_norm", a)})
    synthetic.lm_eval(llm, "base", 0, {"arc_easy": ("acc_norm", b)})
    synthetic.in_domain(llm, "gt_sft-gsm8k_seed1", 5, {"gsm8k": a})
    synthetic.in_domain(llm, "base", 0, {"gsm8k": b})
    return root


@pytest.fixture
def results(tmp_path):
    return _planted(tmp_path / "results")


def cli(capsys, *args) -> tuple[int, str, str]:
    rc = main(list(args))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_leaderboard_finds_the_planted_winner(results):
    with Registry(results, ["planted"]) as reg:
        board = views.leaderboard(reg, "accuracy")
        assert {e["run"] for e in board[:2]} == {"good_seed1", "good_seed2"}
        assert {e["step"] for e in board} == {20}  # each run's last evaluated checkpoint
        mae = views.leaderboard(reg, "mae")  # lower is better
        assert mae[0]["group"] == "good" and mae[-1]["group"] == "bad"
        groups = views.leaderboard(reg, "accuracy", by="group")
        assert [g["group"] for g in groups] == ["good", "mid", "bad"]
        # the group value is the mean over seeds of each seed's value; sd the sample sd
        seeds = [e["value"] for e in board if e["group"] == "good"]
        assert groups[0]["value"] == pytest.approx(np.mean(seeds))
        assert groups[0]["sd"] == pytest.approx(np.std(seeds, ddof=1))
        assert groups[0]["seeds"] == 2


def test_leaderboard_values_equal_the_files(results):
    """Independent path: the mean of the samples file is the metric file's value."""
    with Registry(results, ["planted"]) as reg:
        for e in views.leaderboard(reg, "mae", task=SETS[0]):
            path = results / "planted/evals" / e["run"] / "checkpoint-20/world_eval.samples.jsonl"
            rows = [json.loads(line) for line in path.read_text().splitlines()]
            scores = [r["score"] for r in rows if r["eval_set"] == SETS[0]]
            assert e["value"] == pytest.approx(np.mean(scores))


def test_llm_shapes_are_read(results):
    with Registry(results, ["llmish"]) as reg:
        board = views.leaderboard(reg, "acc_norm")
        assert [e["run"] for e in board] == ["gt_sft-gsm8k_seed1", "base"]
        assert board[0]["value"] == pytest.approx(10 / 12)
        assert {r["task"] for r in reg.results("accuracy")} == {"gsm8k"}
        samples = read_samples(results / "llmish/evals/base/checkpoint-0/lm_eval.json", "acc_norm")
        assert list(samples) == ["arc_easy"] and len(samples["arc_easy"]) == 12


def test_permutation_p_value_matches_scipy_exact(results):
    with Registry(results, ["llmish"]) as reg:
        r = views.significance(reg, "gt_sft-gsm8k_seed1", "base", "acc_norm", None, "permutation")
    a = np.array([1, 1, 1, 0, 1, 1, 1, 1, 0, 1, 1, 1.0])
    b = np.array([0, 1, 0, 0, 1, 0, 1, 0, 0, 1, 0, 1.0])
    ref = sps.permutation_test(
        (a, b),
        lambda x, y: np.mean(x - y),
        permutation_type="samples",
        n_resamples=np.inf,
        alternative="two-sided",
    )
    assert r["p_value"] == pytest.approx(ref.pvalue, rel=1e-12)
    # 5 discordant pairs, all favouring A: exact sign-flip p = 2 / 2^5
    assert r["p_value"] == pytest.approx(2 / 32)
    assert r["better"] == "gt_sft-gsm8k_seed1"


def test_mcnemar_matches_binomial_and_chi2():
    rng = np.random.default_rng(3)
    a = (rng.random(300) < 0.7).astype(float)
    b = (rng.random(300) < 0.6).astype(float)
    n10 = int(((a == 1) & (b == 0)).sum())
    n01 = int(((a == 0) & (b == 1)).sum())
    # exact: two-sided binomial tail by hand (math.comb), not through scipy
    small = stats.mcnemar(a[:30], b[:30])
    k10 = int(((a[:30] == 1) & (b[:30] == 0)).sum())
    k01 = int(((a[:30] == 0) & (b[:30] == 1)).sum())
    n = k10 + k01
    tail = sum(math.comb(n, i) for i in range(min(k10, k01) + 1)) / 2**n
    assert small.p_value == pytest.approx(min(1.0, 2 * tail), rel=1e-9)
    big = stats.mcnemar(a, b)  # n10 + n01 >= 25: chi-square with continuity correction
    chi = (abs(n10 - n01) - 1) ** 2 / (n10 + n01)
    assert big.p_value == pytest.approx(sps.chi2.sf(chi, 1), rel=1e-9)
    with pytest.raises(ValueError, match=r"0/1 outcomes; A has values \[0\.5\] "):
        stats.mcnemar(np.array([0.5, 1]), [1, 0])  # numpy values printed as plain numbers


def test_bootstrap_ci_agrees_with_scipy():
    rng = np.random.default_rng(11)
    a = rng.normal(1.0, 1.0, 200)
    b = a - rng.normal(0.08, 1.0, 200)  # a small effect: p ~ 0.03, where an error shows
    ours = stats.paired_bootstrap(a, b, n_resamples=20000, seed=1)
    ref = sps.bootstrap(
        (a - b,),
        np.mean,
        n_resamples=20000,
        method="percentile",
        random_state=np.random.default_rng(2),
    )
    width = ref.confidence_interval.high - ref.confidence_interval.low
    assert ours.ci_low == pytest.approx(ref.confidence_interval.low, abs=0.05 * width)
    assert ours.ci_high == pytest.approx(ref.confidence_interval.high, abs=0.05 * width)
    # p-value from scipy's own bootstrap distribution (another random stream), same formula.
    dist = ref.bootstrap_distribution
    p_ref = 2 * (1 + min((dist <= 0).sum(), (dist >= 0).sum())) / (1 + dist.size)
    assert 0.02 < p_ref < 0.08
    # Monte Carlo sd of each p at B = 20000 is 2 * sqrt(q (1 - q) / B) with q = p / 2 (~0.002);
    # two independent streams differ by sd ~0.0027: allow 4 sd.
    q = p_ref / 2
    tol = 4 * math.sqrt(2) * 2 * math.sqrt(q * (1 - q) / 20000)
    assert ours.p_value == pytest.approx(p_ref, abs=tol)
    # ... and the bootstrap distribution is ~normal: p ~ the two-sided z-test on the mean
    z = (a - b).mean() / ((a - b).std(ddof=1) / math.sqrt(200))
    assert ours.p_value == pytest.approx(2 * sps.norm.sf(abs(z)), rel=0.25)
    same = stats.paired_bootstrap(a, a)
    assert same.p_value == 1.0 and same.diff == 0


def test_monte_carlo_permutation_close_to_exact():
    rng = np.random.default_rng(5)
    a, b = rng.normal(0.2, 1, 60), rng.normal(0, 1, 60)
    mc = stats.paired_permutation(a, b, n_resamples=40000, seed=0)
    ref = sps.permutation_test(
        (a, b),
        lambda x, y: np.mean(x - y),
        permutation_type="samples",
        n_resamples=40000,
        random_state=1,
    )
    assert mc.p_value == pytest.approx(ref.pvalue, abs=0.01)


def test_significance_across_seeds_pairs_by_seed(results):
    with Registry(results, ["planted"]) as reg:
        r = views.significance(reg, "good", "bad", "accuracy", None, "bootstrap", 2000)
        # both seeds score the same N prompts: N items, each averaged over its 2 seeds
        assert len(r["pairs"]) == 2 and r["n"] == N and r["seeds_per_item"] == {2: N}
        # accuracy 0.9 vs 0.5 over 40 items: no resample reaches 0, so p is the Monte Carlo
        # floor 2 / (1 + B), never 0
        assert r["better"] == "good" and r["p_value"] == pytest.approx(2 / 2001)
        xa, xb, _ = views.paired_outcomes(reg, "good", "bad", "accuracy", None)
        # independent: each prompt's outcome averaged over seeds, read from the sample files
        per_seed = {}
        for seed in (1, 2):
            for grp in ("good", "bad"):
                path = results / f"planted/evals/{grp}_seed{seed}/checkpoint-20"
                lines = (path / "world_eval.samples.jsonl").read_text().splitlines()
                per_seed[grp, seed] = {
                    d["prompt"]: d["score"] for d in map(json.loads, lines)
                    if d["eval_set"] == SETS[1]
                }  # fmt: skip
        prompts = sorted(per_seed["good", 1])
        ref_a = np.array([np.mean([per_seed["good", s][p] for s in (1, 2)]) for p in prompts])
        ref_b = np.array([np.mean([per_seed["bad", s][p] for s in (1, 2)]) for p in prompts])
        assert sorted(zip(xa, xb, strict=True)) == sorted(zip(ref_a, ref_b, strict=True))
        # item means of 0/1 outcomes are not 0/1: auto falls to the bootstrap
        auto = views.significance(reg, "good", "bad", "accuracy", None)
        assert auto["method"] == "auto" and "bootstrap" in auto["p_from"] and auto["significant"]
        ref = sps.permutation_test(
            (ref_a, ref_b),
            lambda x, y: np.mean(x - y),
            permutation_type="samples",
            n_resamples=20000,
            random_state=0,
        )
        ours = views.significance(reg, "good", "bad", "accuracy", None, "permutation", 20000)
        assert ours["p_value"] == pytest.approx(ref.pvalue, abs=2e-3)


def test_compare_shows_config_differences(results):
    with Registry(results, ["planted"]) as reg:
        diffs, rows, names = views.compare(reg, ["good_seed1", "bad_seed1"])
    keys = {d["key"]: d for d in diffs}
    assert keys["training.lr"]["good_seed1"] == 0.001 and keys["training.lr"]["bad_seed1"] == 0.01
    assert "training.epochs" not in keys  # equal values are not differences
    acc = next(r for r in rows if r["metric"] == "accuracy")
    assert acc["best"] == "good_seed1"
    # mae: lower is better, so the best is the smaller value (good: ~5, bad: ~20)
    mae = next(r for r in rows if r["metric"] == "mae")
    assert mae["good_seed1"] < mae["bad_seed1"] and mae["best"] == "good_seed1"


def test_export_formats_round_trip(results, tmp_path, capsys):
    rc, out, _ = cli(
        capsys,
        "export",
        "--results",
        str(results),
        "--study",
        "planted",
        "--format",
        "csv",
        "--metric",
        "mae",
    )
    assert rc == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 6 * 2 and {r["metric"] for r in rows} == {"mae"}
    with Registry(results, ["planted"]) as reg:
        want = {(r["model"], r["step"]): r["value"] for r in reg.results("mae")}
    assert {(r["model"], int(r["step"])): float(r["value"]) for r in rows} == pytest.approx(want)
    rc, out, _ = cli(capsys, "export", "--results", str(results), "--format", "json")
    assert rc == 0 and {r["study"] for r in json.loads(out)} == {"planted", "llmish"}
    rc, out, _ = cli(
        capsys, "export", "--results", str(results), "--format", "latex", "--study", "llmish"
    )
    assert r"gt\_sft-gsm8k\_seed1" in out and out.count(r"\\") == 1 + 8  # header + 2 x 4 rows
    rc, out, _ = cli(
        capsys, "export", "--results", str(results), "--format", "markdown", "--study", "llmish"
    )
    assert out.count("\n") == 2 + 8


def test_cli_errors_name_the_problem(results, capsys):
    rc, _, err = cli(capsys, "leaderboard", "--results", str(results), "--metric", "bleu")
    assert rc == 2 and "no results for metric 'bleu'" in err and "accuracy" in err
    rc, _, err = cli(capsys, "show", "--results", str(results), "nosuch")
    assert rc == 2 and "no run or group 'nosuch'" in err
    rc, _, err = cli(
        capsys,
        "significance",
        "--results",
        str(results),
        "--study",
        "planted",
        "good",
        "bad",
        "--metric",
        "mae",
        "--method",
        "mcnemar",
    )
    assert rc == 2 and "0/1 outcomes" in err
    rc, _, err = cli(capsys, "list", "--results", str(results / "missing"))
    assert rc == 2 and "does not exist" in err
    rc, _, err = cli(capsys, "list", "--results", str(results), "--study", "nope")
    assert rc == 2 and "no study 'nope'" in err and "planted" in err


def test_tracking_flag_without_package(results, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import fails even where it is installed
    rc, _, err = cli(capsys, "export", "--results", str(results), "--to", "wandb")
    assert rc == 2 and "optional package 'wandb'" in err and "pip install wandb" in err


def test_show_prints_provenance(results, capsys):
    rc, out, _ = cli(capsys, "show", "--results", str(results), "--study", "planted", "good_seed1")
    assert rc == 0
    assert "provenance (train" in out and "git" in out and "python" in out
    assert "results at step 20" in out


def test_provenance_fields(tmp_path):
    data = tmp_path / "rows.jsonl"
    data.write_text('{"text": "a"}\n')
    out = tmp_path / "evals/m_seed1/checkpoint-3/provenance.json"
    rec = provenance.write_provenance(
        out,
        stage="evaluate",
        study="s",
        model="m_seed1",
        step=3,
        config={"b": 1, "a": [1, 2]},
        data=[data],
    )
    on_disk = json.loads(out.read_text())
    assert on_disk == rec
    assert rec["git"]["commit"] and len(rec["git"]["commit"]) == 40
    assert isinstance(rec["git"]["dirty"], bool)
    assert rec["config_sha256"] == provenance.config_sha256({"a": [1, 2], "b": 1})
    import hashlib

    assert rec["data_sha256"] == hashlib.sha256(b"rows.jsonl\0" + data.read_bytes()).hexdigest()
    assert rec["wall_s"] is not None and rec["wall_s"] >= 0
    assert rec["python"] and "numpy" in rec["packages"] and rec["host"] and rec["user"]
    # the job also recorded itself in the study's index
    conn = sqlite3.connect(tmp_path / "index.sqlite")
    assert conn.execute("SELECT stage FROM provenance").fetchall() == [("evaluate",)]


def test_a_snakemake_jobs_provenance_goes_where_the_contract_says(tmp_path, monkeypatch):
    """write_job_provenance (every training and evaluation script): the file contract's
    train_provenance / eval_provenance path of the job's wildcards, its stage, model, step."""
    from pathlib import Path
    from types import SimpleNamespace

    from ftlab.paths import Layout

    monkeypatch.chdir(tmp_path)
    data = tmp_path / "rows.jsonl"
    data.write_text("{}\n")
    config = {"study": "s"}
    train = SimpleNamespace(config=config, wildcards=SimpleNamespace(model="pcgrad_seed1"))
    rec = provenance.write_job_provenance(train, "train", [data])
    path = Path(Layout("s").path("train_provenance", model="pcgrad_seed1"))
    assert json.loads(path.read_text()) == rec
    assert (rec["stage"], rec["model"], rec["step"]) == ("train", "pcgrad_seed1", None)
    ev = SimpleNamespace(config=config, wildcards=SimpleNamespace(model="pcgrad_seed1", step="7"))
    rec = provenance.write_job_provenance(ev, "evaluate", [data], device="cpu")
    path = Path(Layout("s").path("eval_provenance", model="pcgrad_seed1", step=7))
    assert json.loads(path.read_text()) == rec and rec["step"] == 7 and rec["device"] == "cpu"


def _writer(args):
    """One 'job': write its result files, then record itself in the index."""
    root, i = args
    study = root / "conc"
    for step in (1, 2, 3):
        sets = {SETS[1]: ("accuracy", [1, 0, i % 2])}
        path = synthetic.world_eval(study, f"m{i}_seed1", step, sets)
        provenance.write_provenance(
            path.with_name("provenance.json"),
            stage="evaluate",
            study="conc",
            model=f"m{i}_seed1",
            step=step,
        )
    return i


def test_concurrent_index_updates_and_rebuild(tmp_path):
    root = tmp_path / "results"
    with mp.get_context("spawn").Pool(8) as pool:
        done = pool.map(_writer, [(root, i) for i in range(24)])
    assert len(done) == 24
    conn = sqlite3.connect(root / "conc/index.sqlite")
    pushed = sorted(conn.execute("SELECT model, step, value FROM results").fetchall())
    assert len(pushed) == 24 * 3  # every job's rows landed, none lost to a lock
    conn.close()
    index.rebuild(root / "conc")
    conn = sqlite3.connect(root / "conc/index.sqlite")
    assert sorted(conn.execute("SELECT model, step, value FROM results").fetchall()) == pushed


def test_refresh_follows_the_files(results):
    study = results / "planted"
    assert index.refresh(study)["updated"] > 0  # first read: everything
    assert index.refresh(study)["updated"] == 0  # nothing changed: nothing re-read
    path = study / "evals/good_seed1/checkpoint-20/world_eval.json"
    obj = json.loads(path.read_text())
    [entry] = [r for r in obj["results"] if r["eval_set"] == SETS[1]]
    entry["value"] = 0.123
    path.write_text(json.dumps(obj))
    assert index.refresh(study)["updated"] == 1
    with Registry(results, ["planted"]) as reg:
        vals = {r["value"] for r in reg.results("accuracy") if r["model"] == "good_seed1"}
        assert 0.123 in vals
        path.unlink()
        reg.close()
    assert index.refresh(study)["removed"] == 1
    bad = study / "evals/good_seed1/checkpoint-20/broken.json"
    bad.write_text("{not json")
    with Registry(results, ["planted"]) as reg:
        assert any("broken.json" in p for _, p, _ in reg.file_errors())


def test_resolve_errors(results):
    with Registry(results) as reg:
        with pytest.raises(RegistryError, match="no run or group"):
            reg.resolve("zzz")
        assert [r.seed for r in reg.resolve("good")] == [1, 2]
        assert reg.name(reg.resolve("planted/good_seed1")[0]) == "planted/good_seed1"


def _two_filter_lm_eval(study, model, strict, flexible):
    """An lm_eval.json reporting exact_match under strict-match, with samples of both filters
    (as lm-eval writes gsm8k): each document appears once per filter."""
    out = study / "evals" / model / "checkpoint-1" / "lm_eval.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (s, f) in enumerate(zip(strict, flexible, strict=True)):
        for filt, v in (("strict-match", s), ("flexible-extract", f)):
            rows.append({"benchmark": "gsm8k", "task": "gsm8k", "doc_id": i, "filter": filt,
                         "metrics": {"exact_match": float(v)}})  # fmt: skip
    out.with_name("lm_eval.samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    bench = {"task": "gsm8k", "metric": "exact_match,strict-match", "n": len(strict),
             "value": float(np.mean(strict)), "stderr": None}  # fmt: skip
    out.write_text(json.dumps({"model": model, "step": 1, "benchmarks": [bench]}))
    return out


def test_lm_eval_filters_are_not_pooled(tmp_path):
    study = tmp_path / "results" / "filters"
    # A wins every document under strict-match and loses every one under flexible-extract.
    path = _two_filter_lm_eval(study, "a_seed1", [1] * 10, [0] * 10)
    _two_filter_lm_eval(study, "b_seed1", [0] * 10, [1] * 10)
    strict = read_samples(path, "exact_match,strict-match")["gsm8k"]
    flexible = read_samples(path, "exact_match,flexible-extract")["gsm8k"]
    assert len(strict) == len(flexible) == 10
    assert set(strict.values()) == {1.0} and set(flexible.values()) == {0.0}
    assert read_samples(path, "exact_match") == {}  # no "none"-filter rows in this file
    with Registry(tmp_path / "results", ["filters"]) as reg:
        r = views.significance(
            reg, "a_seed1", "b_seed1", "exact_match,strict-match", None, "permutation"
        )
    # the file's values (1.0 vs 0.0), 10 documents, 10 discordant pairs all for A: 2 / 2^10
    assert (r["n"], r["mean_a"], r["mean_b"]) == (10, 1.0, 0.0)
    assert r["p_value"] == pytest.approx(2 / 2**10) and r["better"] == "a_seed1"


def test_monte_carlo_p_is_never_zero_and_one_item_is_never_significant():
    # one item: every resample is that item; the p-value is the Monte Carlo floor, not 0,
    # and the result is flagged (too few items for a bootstrap p-value)
    one = stats.paired_bootstrap([1.0], [0.0], n_resamples=999, min_items=stats.MIN_BOOTSTRAP_N)
    assert one.p_value == pytest.approx(2 / 1000) and (one.ci_low, one.ci_high) == (1.0, 1.0)
    assert not one.decidable and "only 1 paired items" in one.note
    # the plain bootstrap (seed 001's, min_items=0) decides by its p, with the caveat noted
    plain = stats.paired_bootstrap([1.0], [0.0], n_resamples=999)
    assert plain.p_value == one.p_value and plain.decidable and "understates" in plain.note
    # graded constant differences, enough items: every resample mean is 0.5 > 0 -> 2 / (1 + B)
    const = stats.paired_bootstrap(np.full(25, 0.5), np.zeros(25), n_resamples=999)
    assert const.p_value == pytest.approx(2 / 1000) and const.decidable
    # the default test on one 0/1 item: exact McNemar, binomtest(1, 1) = 1
    auto = stats.run_test("auto", [1.0], [0.0])
    assert auto.p_value == 1.0 and auto.p_from.startswith("exact McNemar")
    for bad in (0, -5):
        with pytest.raises(ValueError, match="resamples must be at least 1"):
            stats.run_test("bootstrap", [1.0, 0.5], [0.0, 0.2], n_resamples=bad)


def _exact_bootstrap_p(d: np.ndarray) -> float:
    """The bootstrap p-value with every one of the n^n resamples enumerated (no Monte Carlo)."""
    n = d.size
    idx = np.array(np.meshgrid(*[np.arange(n)] * n, indexing="ij")).reshape(n, -1)
    means = d[idx].mean(axis=0)
    return min(1.0, 2 * min(np.mean(means <= 0), np.mean(means >= 0)))


def test_bootstrap_p_matches_exact_enumeration():
    d = np.array([0.9, -0.4, 0.3, 0.6, -0.5, 0.2])  # 6^6 = 46,656 resamples enumerated
    exact = _exact_bootstrap_p(d)
    assert 0.1 < exact < 0.6
    B = 40000
    r = stats.paired_bootstrap(d, np.zeros_like(d), n_resamples=B, seed=3)
    # Monte Carlo sd of 2 x a tail fraction q: 2 sqrt(q (1 - q) / B) ~ 0.004; allow 4 sd
    q = exact / 2
    assert r.p_value == pytest.approx(exact, abs=4 * 2 * math.sqrt(q * (1 - q) / B) + 2 / B)


def test_stratified_bootstrap_resamples_within_strata():
    # stratum 0: 30 items with difference +1, stratum 1: 10 items with -1. Resampled within
    # strata every replicate has 30 x (+1) and 10 x (-1): mean (30 - 10) / 40 = 0.5 exactly, so
    # the interval is [0.5, 0.5] and p the floor 2 / (1 + B). Pooled, the interval is wide.
    a = np.r_[np.ones(30), np.zeros(10)]
    b = np.r_[np.zeros(30), np.ones(10)]
    strata = np.r_[np.zeros(30), np.ones(10)]
    r = stats.paired_bootstrap(a, b, n_resamples=999, seed=0, strata=strata)
    assert (r.ci_low, r.ci_high) == (0.5, 0.5) and r.p_value == pytest.approx(2 / 1000)
    pooled = stats.paired_bootstrap(a, b, n_resamples=999, seed=0)
    assert pooled.ci_high - pooled.ci_low > 0.3


def _lm(study, model, values, ids=None, order=None):
    """lm_eval.json + samples of arc_easy (acc) with the given doc ids, rows in `order`."""
    ids = list(range(len(values))) if ids is None else ids
    out = study / "evals" / model / "checkpoint-1" / "lm_eval.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"benchmark": "arc_easy", "task": "arc_easy", "doc_id": i, "filter": "none",
             "metrics": {"acc": float(v)}} for i, v in zip(ids, values, strict=True)]  # fmt: skip
    if order is not None:
        rows = [rows[i] for i in order]
    out.with_name("lm_eval.samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    bench = {"task": "arc_easy", "metric": "acc", "value": float(np.mean(values)), "n": len(values)}
    out.write_text(json.dumps({"model": model, "step": 1, "benchmarks": [bench]}))


@pytest.mark.parametrize("n10,n01", [(4, 0), (5, 0), (10, 3), (0, 6)])
def test_default_test_of_binary_outcomes_is_exact_mcnemar(tmp_path, n10, n01):
    """3000 documents; the checkpoint differs from the base on n10 + n01 of them only."""
    base = np.zeros(3000)
    base[:2000] = 1
    ck = base.copy()
    ck[:n01] = 0  # losses: base right, checkpoint wrong
    ck[2000 : 2000 + n10] = 1  # gains
    study = tmp_path / "results" / "mc"
    _lm(study, "ck_seed1", ck)
    _lm(study, "base", base)
    with Registry(tmp_path / "results", ["mc"]) as reg:
        r = views.significance(reg, "ck_seed1", "base", "acc", None)
        boot = views.significance(reg, "ck_seed1", "base", "acc", None, "bootstrap", 4000)
    ref = sps.binomtest(min(n10, n01), n10 + n01, 0.5).pvalue
    tail = sum(math.comb(n10 + n01, i) for i in range(min(n10, n01) + 1)) / 2 ** (n10 + n01)
    assert r["p_value"] == pytest.approx(ref, rel=1e-9)
    assert r["p_value"] == pytest.approx(min(1.0, 2 * tail), rel=1e-9)
    assert r["significant"] is bool(ref < 0.05) and "exact McNemar" in r["p_from"]
    assert "bootstrap" in r["ci_from"] and r["ci_low"] <= r["diff"] <= r["ci_high"]
    if (n10, n01) == (0, 6):
        assert r["significant"] and r["p_value"] == pytest.approx(2 / 64)
        with Registry(tmp_path / "results", ["mc"]) as reg:
            strict = views.significance(reg, "ck_seed1", "base", "acc", None, alpha=0.01)
        assert strict["p_value"] == r["p_value"] and not strict["significant"]
    if (n10, n01) == (4, 0):
        # 4 gains in 3000: exact p = 2 / 16 = 0.125, not significant ...
        assert r["p_value"] == pytest.approx(0.125) and not r["significant"]
        # ... an explicit bootstrap reports its own (anti-conservative) p, and says so
        assert boot["p_value"] < 0.1 and "exact McNemar p = 0.125" in boot["note"]


def test_pairing_is_by_sample_id_and_unmatched_items_are_counted(tmp_path, capsys):
    rng = np.random.default_rng(0)
    a = (rng.random(30) < 0.8).astype(float)
    b = (rng.random(30) < 0.5).astype(float)
    study = tmp_path / "results" / "pairs"
    order = rng.permutation(30)
    _lm(study, "x_seed1", a)
    _lm(study, "y_seed1", b, order=order)  # the same documents, rows in another order
    _lm(study, "z_seed1", b, ids=list(range(10, 40)))  # documents 10..39: 20 shared with x
    # world-style rows (keyed by prompt), shuffled too
    sets = {SETS[1]: ("accuracy", a)}
    synthetic.world_eval(study, "w1_seed1", 1, sets)
    path = synthetic.world_eval(study, "w2_seed1", 1, {SETS[1]: ("accuracy", b)})
    samples = path.with_name("world_eval.samples.jsonl")
    lines = samples.read_text().splitlines()
    samples.write_text("".join(lines[i] + "\n" for i in order))
    nz = a != b  # documents with equal outcomes are the same under either sign
    assert 8 <= nz.sum() <= 18  # scipy enumerates 2^k sign patterns
    exact = sps.permutation_test(
        (a[nz], b[nz]), lambda x, y: np.mean(x - y), permutation_type="samples",
        n_resamples=np.inf,
    ).pvalue  # fmt: skip
    with Registry(tmp_path / "results", ["pairs"]) as reg:
        for x, y in (("x_seed1", "y_seed1"), ("w1_seed1", "w2_seed1")):
            r = views.significance(reg, x, y, "acc" if x[0] == "x" else "accuracy", None,
                                   "permutation")  # fmt: skip
            assert r["p_value"] == pytest.approx(exact, rel=1e-9), x
            assert r["pairs"][0]["common"] == 30 and r["warnings"] == []
        r = views.significance(reg, "x_seed1", "z_seed1", "acc", None, "permutation")
    assert r["n"] == 20 and r["pairs"] == [
        {
            "a": "x_seed1",
            "b": "z_seed1",
            "step_a": 1,
            "step_b": 1,
            "n_a": 30,
            "n_b": 30,
            "common": 20,
        }  # fmt: skip
    ]
    assert r["p_value"] == pytest.approx(stats.paired_permutation(a[10:], b[:20]).p_value)
    assert len(r["warnings"]) == 1 and "10 of 30 items of x_seed1" in r["warnings"][0]
    base = ["significance", "--results", str(tmp_path / "results"), "x_seed1", "z_seed1"]
    rc, out, err = cli(capsys, *base, "--metric", "acc")
    assert rc == 0 and "20 items paired (x_seed1 30, z_seed1 30)" in out
    assert "warning:" in err and "left out" in err
    rc, out, err = cli(capsys, *base, "--metric", "acc", "--json")
    assert rc == 0 and json.loads(out)["pairs"][0]["common"] == 20 and "warning:" in err


def test_significance_reports_verdict_alpha_and_confidence(results, capsys):
    base = ["significance", "--results", str(results), "--study", "planted", "good", "bad"]
    rc, out, _ = cli(capsys, *base, "--metric", "mae", "--alpha", "0.3", "--json")
    r = json.loads(out)
    assert rc == 0 and r["alpha"] == 0.3 and r["confidence"] == pytest.approx(0.7)
    assert r["significant"] is True and r["method"] == "auto" and "bootstrap" in r["p_from"]
    # the interval is at 1 - alpha: the 15th and 85th percentiles of the same resamples
    with Registry(results, ["planted"]) as reg:
        xa, xb, _ = views.paired_outcomes(reg, "good", "bad", "mae", None)
    ref = stats.paired_bootstrap(xa, xb, 10000, 0, confidence=0.7)
    wide = stats.paired_bootstrap(xa, xb, 10000, 0, confidence=0.95)
    assert (r["ci_low"], r["ci_high"]) == (pytest.approx(ref.ci_low), pytest.approx(ref.ci_high))
    assert wide.ci_low < r["ci_low"] < r["ci_high"] < wide.ci_high
    rc, out, _ = cli(capsys, *base, "--metric", "mae", "--alpha", "0.3")
    assert rc == 0 and "70% CI of A - B" in out and "95%" not in out
    assert "significant at alpha 0.3" in out and "p = " in out


def test_significance_rejects_bad_options(results, capsys):
    base = ["significance", "--results", str(results), "--study", "planted", "good", "bad"]
    for opt, val, msg in (
        ("--resamples", "0", "--resamples must be at least 100, got 0"),
        ("--resamples", "-5", "--resamples must be at least 100, got -5"),
        ("--alpha", "5", "--alpha must lie strictly between 0 and 1, got 5.0"),
        ("--alpha", "0", "--alpha must lie strictly between 0 and 1"),
        ("--step", "all", "--step all is not allowed; choose --step last or a step number"),
    ):
        rc, _, err = cli(capsys, *base, "--metric", "accuracy", opt, val)
        assert rc == 2 and msg in err and "Traceback" not in err, (opt, val, err)
    with Registry(results, ["planted"]) as reg:
        with pytest.raises(RegistryError, match="--step all is not allowed"):
            views.significance(reg, "good", "bad", "accuracy", None, step="all")
    rc, _, err = cli(capsys, "stats", "--rebuild", "--results", str(results / "nope"))
    assert rc == 2 and "results folder" in err and "nope" in err and "does not exist" in err


def _sets(study, model, step, values, metric="accuracy"):
    out = study / "evals" / model / f"checkpoint-{step}" / f"{metric}_eval.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    res = [{"eval_set": s, "task": s.split("__")[0], "metric": metric, "value": v, "n": 10}
           for s, v in values.items()]  # fmt: skip
    out.write_text(json.dumps({"results": res}))


def test_leaderboard_ranks_over_common_tasks(tmp_path, capsys):
    """b skipped the hard set: ranked on its easy score alone (0.8) it beat a, whose mean
    over easy 0.9 and hard 0.1 is 0.5. Over the common task (easy) a is first."""
    study = tmp_path / "results" / "lb"
    _sets(study, "a_seed1", 10, {"easy__x": 0.9, "hard__x": 0.1})
    _sets(study, "b_seed1", 10, {"easy__x": 0.8})
    _sets(study, "g_seed1", 10, {"easy__x": 0.5, "hard__x": 0.5})
    _sets(study, "g_seed2", 20, {"easy__x": 0.4})
    _sets(study, "n_seed1", 10, {"easy__x": float("nan"), "hard__x": 0.7})  # stored as NULL
    with Registry(tmp_path / "results", ["lb"]) as reg:
        board = views.leaderboard(reg, "accuracy")
        assert [(e["run"], e["value"]) for e in board[:4]] == [
            ("a_seed1", 0.9), ("b_seed1", 0.8), ("g_seed1", 0.5), ("g_seed2", 0.4)
        ]  # fmt: skip
        assert board[4]["run"] == "n_seed1" and math.isnan(board[4]["value"])  # not dropped
        assert board.tasks == ["easy__x"] and board.nan == ["n_seed1"]
        assert board.excluded == {"hard__x": ["b_seed1", "g_seed2"]}
        groups = views.leaderboard(reg, "accuracy", by="group")
        assert [(g["run"], g["value"]) for g in groups[:3]] == [
            ("a", 0.9), ("b", 0.8), ("g", pytest.approx(0.45))
        ]  # fmt: skip
        assert groups[2]["sd"] == pytest.approx(np.std([0.5, 0.4], ddof=1))
        own = views.leaderboard(reg, "accuracy", common=False)
        assert [(e["run"], e["value"]) for e in own[:2]] == [("b_seed1", 0.8), ("a_seed1", 0.5)]
        assert own[0]["missing"] == ["hard__x"]
    rc, out, _ = cli(capsys, "leaderboard", "--results", str(tmp_path / "results"),
                     "--metric", "accuracy", "--by", "group")  # fmt: skip
    assert rc == 0 and "mean over the 1 task(s) every ranked run has (easy__x)" in out
    assert "left out: hard__x (lacked by b_seed1, g_seed2)" in out
    assert "nan: no value (NaN or missing) for n" in out and "sample standard deviation" in out


def test_compare_winner_and_improvement_vs_average_of_others(tmp_path, capsys):
    study = tmp_path / "results" / "cmp"
    _sets(study, "a_seed1", 1, {"easy__x": 0.9, "hard__x": 0.3})
    _sets(study, "b_seed1", 1, {"easy__x": 0.6, "hard__x": 0.5})
    _sets(study, "c_seed1", 1, {"easy__x": 0.3, "hard__x": 0.4, "extra__x": 0.99})
    for m, v in (("a_seed1", 4.0), ("b_seed1", 2.0), ("c_seed1", 3.0)):
        _sets(study, m, 1, {"easy__x": v}, metric="mae")
    with Registry(tmp_path / "results", ["cmp"]) as reg:
        _, rows, names = views.compare(reg, ["a_seed1", "b_seed1", "c_seed1"])
    assert next(r for r in rows if r["metric"] == "mae")["best"] == "b_seed1"  # smallest
    win = {w["metric"]: w for w in views.compare_winners(rows, names)}
    # accuracy over easy and hard (extra: c only): means 0.6, 0.55, 0.35; others 0.45
    acc = win["accuracy"]
    assert acc["winner"] == "a_seed1" and acc["tasks"] == 2
    assert acc["improvement"] == pytest.approx(0.15) and acc["relative"] == pytest.approx(1 / 3)
    # mae 4, 2, 3: b wins; others' mean 3.5, improvement 3.5 - 2 = +1.5 (positive = better)
    mae = win["mae"]
    assert mae["winner"] == "b_seed1" and mae["improvement"] == pytest.approx(1.5)
    rc, out, _ = cli(capsys, "compare", "--results", str(tmp_path / "results"),
                     "a_seed1", "b_seed1", "c_seed1")  # fmt: skip
    assert rc == 0 and "winner a_seed1 0.6; improvement vs average of others (0.45): +0.15" in out


def test_markdown_export_escapes_pipes():
    row = dict.fromkeys(views.EXPORT_COLUMNS, None)
    row.update({"study": "s", "model": "m|x_seed1", "task": "a|b", "value": 0.5, "step": 1})
    text = views.export([row], "markdown")
    line = text.splitlines()[2]
    assert r"m\|x_seed1" in line and r"a\|b" in line
    cells = [c for c in re.split(r"(?<!\\)\|", line)[1:-1]]
    assert len(cells) == len(views.EXPORT_COLUMNS)


def test_monte_carlo_permutation_p_is_never_zero():
    # 25 equal positive differences (> EXACT_MAX, so Monte Carlo): only the all-plus and
    # all-minus patterns (2 / 2^25) reach the observed sum, so no resample hits: p = 1 / (1 + B)
    r = stats.paired_permutation(np.ones(25), np.zeros(25), n_resamples=999, seed=0)
    assert r.detail.startswith("Monte Carlo") and r.p_value == pytest.approx(1 / 1000)


def test_few_graded_items_and_the_bootstrap_minimum(tmp_path, capsys):
    study = tmp_path / "results" / "few"
    synthetic.world_eval(study, "a_seed1", 1, {SETS[0]: ("mae", [1.0, 2.0, 3.0, 4.0, 5.0])})
    synthetic.world_eval(study, "b_seed1", 1, {SETS[0]: ("mae", [3.0, 4.0, 5.0, 6.0, 7.0])})
    with Registry(tmp_path / "results", ["few"]) as reg:
        sig = lambda method, **kw: views.significance(  # noqa: E731
            reg, "a_seed1", "b_seed1", "mae", None, method, 999, **kw
        )
        # every resample's mean difference is -2: p is the floor 2 / (1 + B)
        auto = sig("auto")  # ours: 5 items are below auto's minimum of 20, no decision
        assert auto["p_value"] == pytest.approx(2 / 1000) and not auto["significant"]
        assert "only 5 paired items" in auto["note"] and auto["better"] == "a_seed1"
        assert auto["min_bootstrap_items"] == stats.MIN_BOOTSTRAP_N
        boot = sig("bootstrap")  # seed 001's bootstrap: its p decides, the caveat is noted
        assert boot["p_value"] == pytest.approx(2 / 1000) and boot["significant"]
        assert "understates" in boot["note"] and boot["min_bootstrap_items"] == 0
        strict = sig("bootstrap", min_bootstrap_items=20)  # the named option
        assert not strict["significant"] and "--min-bootstrap-items 20" in strict["note"]
        assert sig("auto", min_bootstrap_items=0)["significant"]
        exact = views.significance(reg, "a_seed1", "b_seed1", "mae", None, "permutation")
    # the exact sign-flip test: 2 of 2^5 patterns as extreme, p = 0.0625 (5 items cannot reach 0.05)
    assert exact["p_value"] == pytest.approx(2 / 2**5) and not exact["significant"]
    base = ["significance", "a_seed1", "b_seed1", "--metric", "mae", "--results",
            str(tmp_path / "results"), "--method", "bootstrap"]  # fmt: skip
    rc, out, _ = cli(capsys, *base, "--min-bootstrap-items", "6")
    assert rc == 0 and "not significant" in out and "--min-bootstrap-items 6" in out
    rc, out, _ = cli(capsys, *base)
    assert rc == 0 and ", significant at alpha" in out
