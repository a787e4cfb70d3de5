"""Registry fixes from the audit of the experiment tracker (seed 001): the test item as the unit
of seed groups, warnings for unreadable newest results, a locked or read-only index, the seed's
command spellings, compare's edge cases, samples files checked against their metric files."""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from ftlab.cli import main
from ftlab.registry import index, synthetic, views
from ftlab.registry.records import ResultFileError
from ftlab.registry.store import Registry, RegistryError

A = [1, 1, 1, 0, 1, 1, 1, 1, 0, 1, 1, 1]
B = [0, 1, 0, 0, 1, 0, 1, 0, 0, 1, 0, 1]
SET = "angle__atlantis_required"


def cli(capsys, *args) -> tuple[int, str, str]:
    rc = main(list(args))
    out = capsys.readouterr()
    return rc, out.out, out.err


# -- 1. seed groups: the test item is the unit ------------------------------------------------
@pytest.mark.parametrize("method", ["auto", "permutation", "mcnemar", "bootstrap"])
def test_duplicated_seeds_do_not_shrink_p(tmp_path, method):
    """Two seeds with identical outcomes on the same questions carry no more evidence than one:
    p, the interval and n of the groups equal those of one seed pair."""
    study = tmp_path / "results" / "dup"
    for s in (1, 2):
        synthetic.in_domain(study, f"x_seed{s}", 5, {"gsm8k": A})
        synthetic.in_domain(study, f"y_seed{s}", 5, {"gsm8k": B})
    with Registry(tmp_path / "results", ["dup"]) as reg:
        one = views.significance(reg, "x_seed1", "y_seed1", "accuracy", None, method, 2000)
        two = views.significance(reg, "x", "y", "accuracy", None, method, 2000)
    assert len(two["pairs"]) == 2 and two["n"] == one["n"] == len(A)
    assert two["seeds_per_item"] == {2: len(A)}
    assert two["p_value"] == pytest.approx(one["p_value"], rel=1e-12)
    assert (two["ci_low"], two["ci_high"]) == (one["ci_low"], one["ci_high"])
    assert two["significant"] == one["significant"]
    if method in ("auto", "mcnemar"):
        assert one["p_value"] == pytest.approx(0.0625)  # 5 discordant pairs, all one way


def test_group_test_equals_scipy_on_per_item_means(tmp_path):
    """Three seeds with different graded outcomes on the same 12 questions: the group test is
    the exact sign-flip test of the per-item means (scipy, computed here from the arrays)."""
    rng = np.random.default_rng(3)
    study = tmp_path / "results" / "g"
    va = rng.normal(1.0, 1.0, (3, 12)).round(2)
    vb = rng.normal(0.4, 1.0, (3, 12)).round(2)
    for s in range(3):
        synthetic.world_eval(study, f"a_seed{s + 1}", 4, {SET: ("score", va[s])})
        synthetic.world_eval(study, f"b_seed{s + 1}", 4, {SET: ("score", vb[s])})
    ma, mb = va.mean(axis=0), vb.mean(axis=0)
    ref = sps.permutation_test(
        (ma, mb), lambda x, y: np.mean(x - y), permutation_type="samples", n_resamples=np.inf
    ).pvalue
    with Registry(tmp_path / "results", ["g"]) as reg:
        r = views.significance(reg, "a", "b", "score", None, "permutation")
        xa, xb, info = views.paired_outcomes(reg, "a", "b", "score", None)
    assert r["n"] == 12 and r["p_value"] == pytest.approx(ref, rel=1e-9)
    assert sorted(xa) == pytest.approx(sorted(ma)) and sorted(xb) == pytest.approx(sorted(mb))
    assert r["mean_a"] == pytest.approx(va.mean()) and r["mean_b"] == pytest.approx(vb.mean())


def test_seeds_on_different_items_keep_every_item(tmp_path, capsys):
    """Seeds scored on disjoint question sets: the items are distinct, each counted once."""
    study = tmp_path / "results" / "d"
    for s in (1, 2):
        prompts = [f"s{s}q{i}" for i in range(len(A))]
        synthetic.world_eval(study, f"x_seed{s}", 1, {SET: ("accuracy", A)}, prompts)
        synthetic.world_eval(study, f"y_seed{s}", 1, {SET: ("accuracy", B)}, prompts)
    with Registry(tmp_path / "results", ["d"]) as reg:
        r = views.significance(reg, "x", "y", "accuracy", None, "mcnemar")
    assert r["n"] == 2 * len(A) and r["seeds_per_item"] == {1: 2 * len(A)}
    assert r["p_value"] == pytest.approx(sps.binomtest(0, 10, 0.5).pvalue)
    rc, out, _ = cli(capsys, "significance", "--results", str(tmp_path / "results"), "x", "y",
                     "--metric", "accuracy")  # fmt: skip
    assert rc == 0 and "24 distinct items tested" in out and "24 under 1 seed(s)" in out


# -- 2. an unreadable newest result is never a silent fallback --------------------------------
def test_unreadable_newest_result_is_warned_with_the_step_used(tmp_path, capsys):
    study = tmp_path / "results" / "c"
    for model, vals in (("x_seed1", A), ("y_seed1", B)):
        for step in (10, 20):
            synthetic.in_domain(study, model, step, {"gsm8k": vals})
    bad = study / "evals/x_seed1/checkpoint-20/in_domain.json"
    bad.write_text('{"datasets": {"gsm8k": ')  # cut mid-write
    res = str(tmp_path / "results")
    for args in (
        ["leaderboard", "--metric", "accuracy"],
        ["show", "x_seed1"],
        ["compare", "x_seed1", "y_seed1"],
        ["significance", "x_seed1", "y_seed1", "--metric", "accuracy"],
    ):
        rc, out, err = cli(capsys, *args, "--results", res)
        assert rc == 0, (args, err)
        assert f"{bad} is unreadable" in err and err.count(str(bad)) == 1, args
        assert "(not readable as JSON" in err, args
        assert "x_seed1 is shown at step 10, not step 20" in err, args
        assert "y_seed1" not in err, args  # only the run with the broken file
    rc, out, err = cli(capsys, "compare", "x_seed1", "y_seed1", "--results", res)
    assert "steps used: x_seed1 10, y_seed1 20" in out
    rc, out, err = cli(capsys, "significance", "x_seed1", "y_seed1", "--results", res,
                       "--metric", "accuracy")  # fmt: skip
    assert "x_seed1 (step 10) vs y_seed1 (step 20)" in out
    # a readable study warns about nothing
    bad.unlink()
    rc, out, err = cli(capsys, "show", "x_seed1", "--results", res)
    assert rc == 0 and err == "" and "results at step 10" in out


# -- 3. a locked or read-only index: a warning and a correct answer, no traceback --------------
def test_locked_index_answers_from_the_files(tmp_path, capsys, monkeypatch):
    study = tmp_path / "results" / "lk"
    synthetic.in_domain(study, "x_seed1", 1, {"gsm8k": A})
    res = str(tmp_path / "results")
    assert cli(capsys, "list", "--results", res)[0] == 0  # the index exists
    synthetic.in_domain(study, "y_seed1", 1, {"gsm8k": B})  # new: the refresh must write
    monkeypatch.setattr(index, "BUSY_TIMEOUT_S", 1)
    holder = index.connect(index.index_path(study))
    holder.execute("BEGIN EXCLUSIVE")  # another process mid-write
    try:
        rc, out, err = cli(capsys, "list", "--results", res)
        rc2, out2, err2 = cli(capsys, "leaderboard", "--metric", "accuracy", "--results", res)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert rc == 0 and "x_seed1" in out and "y_seed1" in out
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"results index {index.index_path(study)} could not be updated" in err
    assert "database is locked" in err and "write lock" in err
    assert rc2 == 0 and out2.index("x_seed1") < out2.index("y_seed1")  # 10/12 before 5/12


def test_read_only_index_answers_from_the_files(tmp_path, capsys, monkeypatch):
    study = tmp_path / "results" / "ro"
    synthetic.in_domain(study, "x_seed1", 1, {"gsm8k": A})
    res = str(tmp_path / "results")
    assert cli(capsys, "list", "--results", res)[0] == 0
    synthetic.in_domain(study, "y_seed1", 1, {"gsm8k": B})
    real_connect = index.connect

    def read_only(path):  # what SQLite does on a read-only folder (tests run as root)
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
        conn.row_factory = sqlite3.Row
        return conn

    monkeypatch.setattr(index, "connect", read_only)
    rc, out, err = cli(capsys, "list", "--results", res)
    assert rc == 0 and "y_seed1" in out and "Traceback" not in err
    assert "readonly database" in err and "make the folder and the index writable" in err
    monkeypatch.setattr(index, "connect", real_connect)
    if os.geteuid() != 0:  # a real read-only folder where permissions apply
        for p in (study, study / "index.sqlite"):
            p.chmod(0o555)
        try:
            rc, out, err = cli(capsys, "list", "--results", res)
        finally:
            study.chmod(0o755)
        assert rc == 0 and "y_seed1" in out and "could not be updated" in err


# -- 4. the seed's command spellings --------------------------------------------------------
def _many(tmp_path, k=12):
    study = tmp_path / "results" / "m"
    rng = np.random.default_rng(0)
    for i in range(k):
        vals = (rng.random(20) < (i + 1) / (k + 1)).astype(float)
        synthetic.in_domain(study, f"r{i:02d}_seed1", 1, {"gsm8k": vals})
    synthetic.in_domain(study, "base", 0, {"gsm8k": B})
    return str(tmp_path / "results")


def test_seed_command_spellings(tmp_path, capsys):
    res = _many(tmp_path)
    # list --limit 20 (the seed's example); --limit 3 lists 3 of the 13 runs
    rc, out, _ = cli(capsys, "list", "--limit", "20", "--results", res)
    assert rc == 0 and out.count("_seed1") == 12 and "of 13 runs" not in out
    rc, out, _ = cli(capsys, "list", "--limit", "3", "--results", res)
    assert rc == 0 and len(out.splitlines()) == 2 + 3 + 1  # header, 3 runs, the note
    assert "(3 of 13 runs; --limit 0 lists all)" in out
    # leaderboard without arguments: accuracy, top 10 (the seed's defaults)
    rc, out, _ = cli(capsys, "leaderboard", "--results", res)
    table = [ln for ln in out.splitlines() if ln[:1].isdigit()]
    assert rc == 0 and out.startswith("accuracy (higher is better")
    assert len(table) == 10 and table[0].split()[1] == "r11_seed1"
    assert "(top 10 of 13; --top 0 shows all)" in out
    rc, out, _ = cli(capsys, "leaderboard", "--top", "0", "--benchmark", "gsm8k", "--results", res)
    assert rc == 0 and len([ln for ln in out.splitlines() if ln[:1].isdigit()]) == 13
    # significance with --benchmark and no --metric (accuracy)
    rc, out, _ = cli(capsys, "significance", "r11_seed1", "base", "--benchmark", "gsm8k",
                     "--method", "bootstrap", "--results", res)  # fmt: skip
    assert rc == 0 and "accuracy on gsm8k" in out


@pytest.mark.parametrize("args", [["leaderboard", "--top", "-2"], ["list", "--limit", "-1"]])
def test_negative_row_limits_are_refused(tmp_path, capsys, args):
    res = _many(tmp_path, 2)
    with pytest.raises(SystemExit) as exc:
        main([*args, "--results", res])
    assert exc.value.code == 2 and "must be 0 (all) or a positive number" in capsys.readouterr().err


def test_export_run_names_and_format_from_the_extension(tmp_path, capsys):
    res = _many(tmp_path, 2)
    out_json = tmp_path / "exp.json"
    rc, out, _ = cli(capsys, "export", "base", "--output", str(out_json), "--results", res)
    rows = json.loads(out_json.read_text())
    assert rc == 0 and "(json)" in out and {r["model"] for r in rows} == {"base"}
    assert {r["metric"] for r in rows} == {"accuracy", "partial_accuracy", "format_accuracy"}
    assert [r["value"] for r in rows if r["metric"] == "accuracy"] == [pytest.approx(5 / 12)]
    rc, _, _ = cli(capsys, "export", "r00", "-o", str(tmp_path / "x.csv"), "--results", res)
    text = (tmp_path / "x.csv").read_text()
    assert rc == 0 and text.startswith("study,model") and "base" not in text
    rc, _, err = cli(capsys, "export", "--format", "csv", "-o", str(tmp_path / "y.json"),
                     "--results", res)  # fmt: skip
    assert rc == 2 and "contradicts the extension" in err and not (tmp_path / "y.json").exists()


# -- 5. compare's edge cases ----------------------------------------------------------------
def test_compare_ties_unknown_metric_missing_config_and_self(tmp_path, capsys):
    study = tmp_path / "results" / "t"
    synthetic.in_domain(study, "x_seed1", 1, {"gsm8k": A})
    synthetic.in_domain(study, "y_seed1", 1, {"gsm8k": list(reversed(A))})  # same accuracy
    synthetic.in_domain(study, "z_seed1", 1, {"gsm8k": B})
    res = str(tmp_path / "results")
    with Registry(tmp_path / "results", ["t"]) as reg:
        _, rows, _ = views.compare(reg, ["x_seed1", "y_seed1", "z_seed1"], "accuracy")
    assert rows[0]["best"] == "tie (x_seed1, y_seed1)"
    # a metric no run has: an error naming it and the metrics there are
    rc, out, err = cli(capsys, "compare", "x_seed1", "y_seed1", "--metric", "bleu",
                       "--results", res)  # fmt: skip
    assert rc == 2 and "no results for metric 'bleu'" in err and "accuracy" in err
    # no configuration recorded (evaluated only): not "identical"
    rc, out, err = cli(capsys, "compare", "x_seed1", "z_seed1", "--results", res)
    assert rc == 0 and "identical" not in out
    assert "configurations: none recorded for x_seed1, z_seed1" in out
    # a run compared with itself: an error, no numpy warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rc, out, err = cli(capsys, "compare", "x_seed1", "x_seed1", "--results", res)
    assert rc == 2 and "two or more different runs" in err and "x_seed1" in err


# -- 6. a samples file must hold what its metric file summarises ------------------------------
@pytest.mark.parametrize("kind", ["world", "in_domain", "lm_eval"])
def test_cut_or_stale_samples_file_is_an_error_naming_it(tmp_path, capsys, kind):
    study = tmp_path / "results" / "s"
    rng = np.random.default_rng(1)
    x, y = (rng.random(40) < 0.7).astype(float), (rng.random(40) < 0.5).astype(float)
    write = {
        "world": lambda m, v: synthetic.world_eval(study, m, 1, {SET: ("accuracy", v)}),
        "in_domain": lambda m, v: synthetic.in_domain(study, m, 1, {"gsm8k": v}),
        "lm_eval": lambda m, v: synthetic.lm_eval(study, m, 1, {"arc": ("accuracy", v)}),
    }[kind]
    write("x_seed1", x)
    path = write("y_seed1", y)
    samples = path.with_name(path.stem + ".samples.jsonl")
    lines = samples.read_text().splitlines()
    res = str(tmp_path / "results")
    args = ["significance", "x_seed1", "y_seed1", "--results", res]
    assert cli(capsys, *args)[0] == 0
    samples.write_text("".join(ln + "\n" for ln in lines[:10]))  # cut to 10 of 40 rows
    rc, out, err = cli(capsys, *args)
    assert rc == 2 and f"{samples}: 10 per-sample values of accuracy" in err
    assert "reports n = 40" in err
    # the right count, other outcomes: the mean disagrees (lm-eval's may aggregate otherwise)
    flipped = [json.loads(ln) for ln in lines]
    for row in flipped[:5]:
        for k in ("score", "correct"):
            if k in row:
                row[k] = 1.0 - row[k]
        if "metrics" in row:
            row["metrics"]["accuracy"] = 1.0 - row["metrics"]["accuracy"]
    samples.write_text("".join(json.dumps(r) + "\n" for r in flipped))
    rc, out, err = cli(capsys, *args)
    if kind == "lm_eval":
        assert rc == 0
    else:
        assert rc == 2 and f"{samples}: the mean of its per-sample values of accuracy" in err


# -- 7. smaller ones --------------------------------------------------------------------------
class _FakeWandb:
    """Records what `ftlab export --to wandb` asks of wandb (not installed here)."""

    def __init__(self):
        self.inits, self.logged = [], []

    def init(self, **kw):
        self.inits.append(kw)
        fake = self

        class Run:
            def log(self, values, step):
                fake.logged.append((kw["name"], step, dict(values)))

            def finish(self):
                pass

        return Run()


@pytest.mark.parametrize("online", [False, True])
def test_wandb_mode_is_what_the_output_says(tmp_path, capsys, monkeypatch, online):
    study = tmp_path / "results" / "w"
    synthetic.in_domain(study, "x_seed1", 3, {"gsm8k": A})
    fake = _FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setenv("WANDB_MODE", "offline" if online else "online")  # the opposite
    args = ["export", "--to", "wandb", "--results", str(tmp_path / "results")]
    rc, out, _ = cli(capsys, *args, *(["--online"] if online else []))
    assert rc == 0 and [i["mode"] for i in fake.inits] == ["online" if online else "offline"]
    assert ("W&B server" in out) is online and ("offline files" in out) is not online
    assert fake.logged == [("x_seed1", 3, {
        "gsm8k/accuracy": 10 / 12, "gsm8k/partial_accuracy": 10 / 12,
        "gsm8k/format_accuracy": 1.0})]  # fmt: skip


def _tir_scores(study, model, step, eval_set, correct_by_problem):
    """A scores.json as ftlab.tir.steps.score writes it (ftlab.tir.scoring.metrics), in its
    eval set's folder."""
    from ftlab.io import atomic_write_json
    from ftlab.tir.scoring import metrics

    samples, verdicts = [], []
    for pid, outcomes in correct_by_problem.items():
        for c in outcomes:
            samples.append({"n_turns": 1, "turns": [{"tool": None}], "n_tool_calls": 0,
                            "n_void_turns": 0, "stop_reason": "answer", "gen_tokens": 5,
                            "obs_tokens": 0, "seconds": 1.0, "gen_seconds": 1.0,
                            "tool_seconds": 0.0})  # fmt: skip
            verdicts.append({"problem_id": pid, "correct": bool(c), "pred": "1"})
    out = study / "evals" / model / f"checkpoint-{step}" / eval_set / "scores.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    (out.parent / "generation_info.json").write_text('{"model": "m"}')  # not a result
    atomic_write_json(out, {"scorer": {}, "generations": "g", **metrics(samples, verdicts)})
    return out


def test_scores_in_an_eval_set_folder_are_indexed(tmp_path, capsys):
    study = tmp_path / "results" / "tir"
    problems = {"p1": [1, 0, 0, 0], "p2": [1, 1, 1, 1], "p3": [0, 0, 0, 0]}
    _tir_scores(study, "grpo_seed1", 8, "aime__greedy", problems)
    _tir_scores(study, "grpo_seed1", 8, "math__greedy", {"q": [1, 1, 0, 0]})
    with Registry(tmp_path / "results", ["tir"]) as reg:
        rows = {(r["task"], r["metric"]): r for r in reg.results()}
        assert reg.file_errors() == []
    # independent: accuracy over samples; unbiased pass@k = mean over problems of
    # 1 - C(n - c, k) / C(n, k)
    import math

    def pass_at(k):
        return np.mean([1 - math.comb(4 - sum(o), k) / math.comb(4, k) for o in problems.values()])

    assert rows["aime__greedy", "accuracy"]["value"] == pytest.approx(5 / 12)
    assert rows["aime__greedy", "accuracy"]["n"] == 12
    for k in (1, 2, 4):
        assert rows["aime__greedy", f"pass@{k}"]["value"] == pytest.approx(pass_at(k))
        assert rows["aime__greedy", f"pass@{k}"]["n"] == 3
    assert rows["math__greedy", "accuracy"]["value"] == pytest.approx(0.5)
    assert {r["source"] for r in rows.values()} == {"aime__greedy/scores", "math__greedy/scores"}
    rc, out, _ = cli(capsys, "leaderboard", "--metric", "pass@4", "--task", "aime__greedy",
                     "--results", str(tmp_path / "results"))  # fmt: skip
    assert rc == 0 and "grpo_seed1" in out and "0.6667" in out
    # a finishing job indexes its sets' scores too
    ckpt = study / "evals/grpo_seed1/checkpoint-8"
    (ckpt / "provenance.json").write_text('{"stage": "tir_eval"}')
    for suffix in ("", "-wal", "-shm"):
        Path(f"{index.index_path(study)}{suffix}").unlink(missing_ok=True)
    assert index.record_job(ckpt / "provenance.json") == 3  # provenance + 2 sets' scores


def test_a_tir_eval_sets_provenance_is_its_own_and_indexes_its_set_only(tmp_path, monkeypatch):
    """Each eval set of a TIR checkpoint is its own job: write_job_provenance puts its
    provenance in the set's folder (tir_eval_provenance), `ftlab show` lists one per set, and
    the finishing job indexes its own set's files, not a sibling set's."""
    from types import SimpleNamespace

    from ftlab import provenance
    from ftlab.paths import Layout

    monkeypatch.chdir(tmp_path)
    study = tmp_path / "results" / "tir"
    _tir_scores(study, "grpo_seed1", 8, "aime__greedy", {"p": [1, 0]})
    _tir_scores(study, "grpo_seed1", 8, "math__greedy", {"q": [1, 1]})
    rows = tmp_path / "rows.jsonl"
    rows.write_text("{}\n")
    job = SimpleNamespace(config={"study": "tir"}, wildcards=SimpleNamespace(
        model="grpo_seed1", step="8", eval_set="aime__greedy"))  # fmt: skip
    rec = provenance.write_job_provenance(job, "evaluate", [rows])
    path = Path(Layout("tir").path("tir_eval_provenance", model="grpo_seed1", step=8,
                                   eval_set="aime__greedy"))  # fmt: skip
    assert path == Path("results/tir/evals/grpo_seed1/checkpoint-8/aime__greedy/provenance.json")
    assert json.loads(path.read_text()) == rec and (rec["stage"], rec["step"]) == ("evaluate", 8)
    assert not (study / "evals/grpo_seed1/checkpoint-8/provenance.json").exists()
    conn = sqlite3.connect(index.index_path(study))  # what the job itself indexed
    indexed = sorted(r[0] for r in conn.execute("SELECT path FROM files"))
    conn.close()
    assert indexed == ["evals/grpo_seed1/checkpoint-8/aime__greedy/provenance.json",
                       "evals/grpo_seed1/checkpoint-8/aime__greedy/scores.json"]  # fmt: skip
    with Registry(tmp_path / "results", ["tir"]) as reg:  # a full refresh finds both sets
        (ref,) = reg.resolve("grpo_seed1")
        assert [p["path"] for p in reg.provenance(ref)] == [
            "evals/grpo_seed1/checkpoint-8/aime__greedy/provenance.json"
        ]
        assert {r["task"] for r in reg.results()} == {"aime__greedy", "math__greedy"}


def _tir_scored(scores_path, correct_by_problem):
    """scored.jsonl beside a scores.json (ftlab.tir.scoring: one line per sample)."""
    lines = [
        json.dumps({"problem_id": pid, "sample": i, "pred": "1", "gold": "1", "correct": bool(c)})
        for pid, outcomes in correct_by_problem.items()
        for i, c in enumerate(outcomes)
    ]
    (scores_path.parent / "scored.jsonl").write_text("\n".join(lines) + "\n")


def test_tir_significance_pairs_problems_by_their_pass_at_k(tmp_path):
    """TIR: the test item is the problem, its value the problem's unbiased pass@k from its n
    samples (accuracy: pass@1 = c/n); two models are paired problem by problem. Checked
    against scipy's exact sign-flip test of per-problem values computed here with math.comb."""
    import math

    rng = np.random.default_rng(5)
    study = tmp_path / "results" / "tir"
    n = 8
    pa = {f"p{i}": (rng.random(n) < 0.6).astype(int).tolist() for i in range(12)}
    pb = {f"p{i}": (rng.random(n) < 0.3).astype(int).tolist() for i in reversed(range(12))}
    for model, problems in (("a_seed1", pa), ("b_seed1", pb)):
        _tir_scored(_tir_scores(study, model, 4, "aime__t1", problems), problems)

    def per_problem(problems, k):
        keys = sorted(problems)
        return np.array([1 - math.comb(n - sum(problems[p]), k) / math.comb(n, k) for p in keys])

    with Registry(tmp_path / "results", ["tir"]) as reg:
        for metric, k in (("accuracy", 1), ("pass@1", 1), ("pass@4", 4)):
            xa, xb, info = views.paired_outcomes(reg, "a_seed1", "b_seed1", metric, "aime__t1")
            assert info["items"] == 12
            assert sorted(xa) == pytest.approx(sorted(per_problem(pa, k)))
            ref = sps.permutation_test(
                (per_problem(pa, k), per_problem(pb, k)), lambda x, y: np.mean(x - y),
                permutation_type="samples", n_resamples=np.inf,
            ).pvalue  # fmt: skip
            r = views.significance(reg, "a_seed1", "b_seed1", metric, "aime__t1", "permutation")
            assert r["p_value"] == pytest.approx(ref, rel=1e-9)
            assert r["diff"] == pytest.approx(np.mean(per_problem(pa, k) - per_problem(pb, k)))
        with pytest.raises(RegistryError, match=r"no results for metric 'pass@9'"):
            views.paired_outcomes(reg, "a_seed1", "b_seed1", "pass@9", "aime__t1")


def test_tir_scored_file_must_match_its_scores(tmp_path):
    study = tmp_path / "results" / "tir"
    problems = {"p1": [1, 0, 1, 1], "p2": [0, 0, 0, 1], "p3": [1, 1, 1, 1]}
    for model in ("a_seed1", "b_seed1"):
        path = _tir_scores(study, model, 4, "aime__t1", problems)
        _tir_scored(path, problems)
    _tir_scored(path, {"p1": [1, 0, 1, 1], "p2": [0, 0, 0, 1]})  # b's file lost a problem
    with Registry(tmp_path / "results", ["tir"]) as reg:
        with pytest.raises(ResultFileError, match=r"2 per-sample values of pass@2 .* n = 3"):
            views.significance(reg, "a_seed1", "b_seed1", "pass@2", "aime__t1")


# -- the multi-task kind's results (mtl_eval.json) -----------------------------------------
def _mtl_eval(study: Path, model: str, step: int, rewards: dict[str, list[float]]) -> Path:
    """An mtl_eval.json + samples as ftlab.mtl.evaluate writes them (metric: the guru engine's
    pass@1_(avg k), a percentage; reward: the per-item outcomes in [0, 1])."""
    folder = study / "evals" / model / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    tasks, lines = [], []
    for task, values in rewards.items():
        mean = sum(values) / len(values)
        tasks.append({"task": task, "domain": "math", "metric": "pass@1_(avg4)",
                      "value": 100 * mean, "n": len(values), "reward": mean})  # fmt: skip
        lines += [json.dumps({"task": task, "domain": "math", "sample": i, "reward": v})
                  for i, v in enumerate(values)]  # fmt: skip
    (folder / "mtl_eval.json").write_text(json.dumps({"model": model, "tasks": tasks}))
    (folder / "mtl_eval.samples.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "mtl_eval.json"


def test_mtl_results_are_indexed_and_paired_by_item(tmp_path, capsys):
    """mtl_eval.json (seed 000's kind) is read: each task's own metric and its reward; the
    reward is paired item by item (the exact sign-flip test of the per-item differences,
    scipy here); a task metric has no per-item values and says so."""
    study = tmp_path / "results" / "m"
    ra = [1.0, 0.75, 1.0, 0.5, 1.0, 0.25, 1.0, 1.0]
    rb = [0.5, 0.75, 0.25, 0.5, 0.0, 0.25, 0.75, 0.5]
    _mtl_eval(study, "pcgrad_seed1", 5, {"guru_aime": ra, "guru_math": [1.0, 0.0]})
    _mtl_eval(study, "baseline_seed1", 5, {"guru_aime": rb, "guru_math": [0.0, 0.0]})
    ref = sps.permutation_test((np.array(ra), np.array(rb)), lambda x, y: np.mean(x - y),
                               permutation_type="samples", n_resamples=np.inf).pvalue  # fmt: skip
    with Registry(tmp_path / "results", ["m"]) as reg:
        r = views.significance(reg, "pcgrad_seed1", "baseline_seed1", "reward", "guru_aime",
                               "permutation")  # fmt: skip
        assert r["n"] == 8 and r["p_value"] == pytest.approx(ref, rel=1e-9)
        with pytest.raises(ResultFileError, match=r"'pass@1_\(avg4\)' is a task metric"):
            views.significance(reg, "pcgrad_seed1", "baseline_seed1", "pass@1_(avg4)",
                               "guru_aime", "permutation")  # fmt: skip
    rc, out, _ = cli(capsys, "leaderboard", "--results", str(tmp_path / "results"), "--metric",
                     "pass@1_(avg4)", "--task", "guru_aime")  # fmt: skip
    assert rc == 0 and out.index("pcgrad_seed1") < out.index("baseline_seed1")
    assert f" {100 * sum(ra) / len(ra):.2f} " in out and f" {100 * sum(rb) / len(rb):.2f} " in out
