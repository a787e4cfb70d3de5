"""mtl.eval.engine guru: seed 000's evaluation engine (Reasoning360-MTL 6133d10,
scripts/train/example_multinode_eval_guru7b_mtl.sh + verl main_generation / main_eval).

The leaderboard rules are re-derived here from the script's own conditions (transcribed below),
pass@k is checked against math.comb, and planted responses go through the real scorers."""

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml
from test_mtl_seed_config import ENGINE_LEADERBOARD  # the script's list, in order

from ftlab.config import ConfigError, validate_config
from ftlab.mtl import guru_eval, settings
from ftlab.mtl.guru_eval import (
    LEADERBOARDS,
    SAMPLING,
    find_task_files,
    main_eval_figures,
    problems_of,
    unbiased_pass_at_k,
)

TESTS = Path(__file__).resolve().parent


def script_n_samples(leaderboard: str) -> int:
    """The script's if / elif, names as written (aime2025, arcagi1, zebra_puzzle_dataset are
    not in its list: those branches never fire for them)."""
    if leaderboard in ("aime", "aime2025"):
        return 4
    if leaderboard in ("arcagi1", "livecodebench", "humaneval", "zebra_puzzle_dataset",
                       "multihier", "codeio", "gpqa_diamond"):  # fmt: skip
        return 4
    return 1


def script_lengths(leaderboard: str) -> tuple[int, int]:
    return (16384, 16384) if leaderboard == "arcagi1" else (4096, 28672)


def script_pattern(leaderboard: str, domain: str) -> str:
    if leaderboard in ("aime", "aime2025"):
        return f"{domain}__{leaderboard}_repeated_8x_[0-9a-zA-Z]*.parquet"
    return f"{domain}__{leaderboard}_[0-9a-zA-Z]*.parquet"


def test_the_registry_is_the_scripts_leaderboards_and_rules():
    assert [(b.name, b.domain) for b in LEADERBOARDS.values()] == ENGINE_LEADERBOARD
    for task, b in LEADERBOARDS.items():
        assert task == "guru_" + b.name.replace("-", "_")
        assert b.n_samples == script_n_samples(b.name), b.name
        assert (b.prompt_length, b.response_length) == script_lengths(b.name), b.name
        assert b.file_pattern == script_pattern(b.name, b.domain)
    four = sorted(b.name for b in LEADERBOARDS.values() if b.n_samples == 4)
    assert four == ["aime", "codeio", "gpqa_diamond", "humaneval", "livecodebench", "multihier"]
    # the condition's arcagi1 / zebra_puzzle_dataset never match the list's names
    assert LEADERBOARDS["guru_arcagi"].n_samples == LEADERBOARDS["guru_zebra_puzzle"].n_samples == 1
    assert (LEADERBOARDS["guru_arcagi"].prompt_length,
            LEADERBOARDS["guru_arcagi"].response_length) == (4096, 28672)  # fmt: skip
    assert SAMPLING == {"temperature": 1.0, "top_p": 0.7, "top_k": -1}


def test_the_schema_defaults_are_the_scripts_sampling():
    cfg = validate_config(yaml.safe_load((TESTS / "config_mtl_sft_tiny.yaml").read_text()))
    g = cfg["mtl"]["eval"]["guru"]
    assert {k: g[k] for k in SAMPLING} == SAMPLING
    assert g["gpu_memory_utilization"] == 0.7  # the script's
    assert g["data_folder"] == "data/offline_eval"
    assert g["max_response_tokens"] is None and g["limit"] is None
    assert cfg["mtl"]["eval"]["engine"] == "lm_eval"  # existing configs keep their engine


@pytest.mark.parametrize("n", range(1, 11))
def test_unbiased_pass_at_k_is_chens_estimator(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            expected = 1.0 - math.comb(n - c, k) / math.comb(n, k)
            assert unbiased_pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)
    with pytest.raises(ValueError, match="cannot be greater"):
        unbiased_pass_at_k(n, 0, n + 1)


def test_main_eval_figures_against_an_independent_computation():
    scores = [[1, 0, 0, 1], [0, 0, 0, 0], [1, 1, 1, 1], [0.5, 1, 0, 0]]
    sources = ["a", "b", "a", "b"]
    got = main_eval_figures(scores, sources)
    for k in (1, 2, 4):
        expected = sum(1 - math.comb(4 - sum(x == 1 for x in s), k) / math.comb(4, k)
                       for s in scores) / 4 * 100  # fmt: skip
        assert got[f"pass@{k}"] == pytest.approx(expected)
    assert "pass@3" not in got and got["max_k"] == 4
    means = [sum(s) / 4 for s in scores]
    assert got["pass@1_(avg4)"] == pytest.approx(sum(means) / 4 * 100)
    assert got["test_score(avg@k)/a"] == pytest.approx((means[0] + means[2]) / 2)
    assert got["test_score(avg@k)/b"] == pytest.approx((means[1] + means[3]) / 2)
    # main_eval's max_k is the LAST problem's count; a shorter problem adds 0 to larger k
    got = main_eval_figures([[1], [0, 1]], ["a", "a"])
    assert got["max_k"] == 2
    assert got["pass@1"] == pytest.approx((unbiased_pass_at_k(2, 1, 1) * 2) / 2 * 100)
    assert got["pass@2"] == pytest.approx((0 + 1.0) / 2 * 100)


def seed_extract_content(p):
    """main_generation.extract_content, transcribed."""
    if isinstance(p, str):
        try:
            p = json.loads(p)
        except Exception:
            return p
    if isinstance(p, list) and len(p) > 0 and isinstance(p[0], dict):
        return p[0].get("content", "")
    return str(p)


def test_aime_rows_merge_as_main_generation_groups_them(tmp_path):
    """merge_aime_responses: pandas groupby on extract_content of the prompt column; pandas
    gives each prompt as a numpy array, so the key is the whole prompt - a shared system
    message does not merge different problems."""
    system = {"role": "system", "content": "Think step by step."}
    qs = ["q2", "q1", "q2", "q3", "q1"]
    rows = [{"prompt": [system, {"role": "user", "content": q}], "data_source": "math__aime",
             "reward_model": {"ground_truth": q}} for q in qs]  # fmt: skip
    path = write_parquet(tmp_path / "math__aime_repeated_8x_5.parquet", rows)
    got = guru_eval.read_rows(path, "guru_aime")
    assert problems_of(got, merge=False) == [(i, [i]) for i in range(5)]
    df = pd.read_parquet(path)
    df["row"] = range(len(df))
    df["prompt_content"] = df["prompt"].apply(seed_extract_content)
    assert [r.merge_key for r in got] == list(df["prompt_content"])
    seed = df.groupby(["prompt_content"], as_index=False).agg({"row": list})
    assert problems_of(got, merge=True) == [(r[0], r) for r in seed["row"]]
    assert problems_of(got, merge=True) == [(1, [1, 4]), (0, [0, 2]), (3, [3])]
    assert guru_eval.merges_by_prompt("x/math__aime_repeated_8x_240.parquet")
    assert not guru_eval.merges_by_prompt("x/math__math_500.parquet")
    # a prompt stored as JSON text: its first message's content (the seed's list branch)
    assert guru_eval.seed_merge_key(json.dumps([system])) == "Think step by step."


# -- fixture folder laid out like offline_eval -------------------------------------------
def write_parquet(path: Path, rows: list[dict]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(path)
    return str(path)


def math_rows(questions: list[tuple[str, str]], source: str) -> list[dict]:
    return [{"prompt": [{"role": "user", "content": q}], "data_source": source,
             "reward_model": {"style": "rule", "ground_truth": a}, "extra_info": {"index": i}}
            for i, (q, a) in enumerate(questions)]  # fmt: skip


@pytest.fixture
def offline_eval(tmp_path):
    root = tmp_path / "offline_eval"
    write_parquet(root / "math__math_500.parquet",
                  math_rows([("What is 2+2?", "4"), ("What is 3*3?", "9"), ("What is 1+0?", "1")],
                            "math"))  # fmt: skip
    # AIME: each problem repeated (the real file: 8x), merged into one problem
    aime = [("Find x if x+1=6.", "5"), ("Find y if 2y=14.", "7")] * 2
    write_parquet(
        root / "sub" / "math__aime_repeated_8x_240.parquet", math_rows(aime, "math__aime")
    )
    # decoys: no alphanumeric after the leaderboard's underscore, another leaderboard
    write_parquet(root / "math__math_.parquet", math_rows([("x", "0")], "math"))
    write_parquet(root / "math__aime_240.parquet", math_rows([("x", "0")], "aime"))
    return root


def test_files_are_found_by_the_scripts_pattern(offline_eval, tmp_path):
    found, problems = find_task_files(offline_eval, ["guru_math", "guru_aime", "guru_hitab"])
    assert found == {
        "guru_math": str(offline_eval / "math__math_500.parquet"),
        "guru_aime": str(offline_eval / "sub" / "math__aime_repeated_8x_240.parquet"),
    }  # the aime file is found in a subfolder, as `find` does
    assert problems == [
        f"'mtl.eval.suite' task 'guru_hitab': no file matching "
        f"'table__hitab_[0-9a-zA-Z]*.parquet' under 'mtl.eval.guru.data_folder' "
        f"'{offline_eval}'"
    ]
    # several matches: the first in sorted order
    write_parquet(offline_eval / "math__math_100.parquet", math_rows([("y", "1")], "math"))
    assert find_task_files(offline_eval, ["guru_math"])[0]["guru_math"].endswith("math_100.parquet")
    none, problems = find_task_files(tmp_path / "nowhere", ["guru_math"])
    assert none == {} and "is not a folder" in problems[0] and "nowhere" in problems[0]


def test_rows_are_read_as_chat_lists_with_their_ground_truth(offline_eval):
    rows = guru_eval.read_rows(str(offline_eval / "math__math_500.parquet"), "guru_math")
    assert rows[1].chat == [{"role": "user", "content": "What is 3*3?"}]
    assert (rows[1].data_source, rows[1].ground_truth) == ("math", "9")
    assert rows[1].extra_info == {"index": 1}
    assert len(guru_eval.read_rows(str(offline_eval / "math__math_500.parquet"), "t", 2)) == 2
    # ground truth / extra_info as main_eval reads them (pandas: nested lists as numpy arrays)
    grid = [{"prompt": [{"role": "user", "content": "q"}], "data_source": "simulation__arcagi",
             "reward_model": {"ground_truth": [[1, 2], [3, 4]]}}]  # fmt: skip
    (row,) = guru_eval.read_rows(write_parquet(offline_eval / "grid.parquet", grid), "t")
    seen = pd.read_parquet(offline_eval / "grid.parquet")["reward_model"][0]["ground_truth"]
    assert type(row.ground_truth) is type(seen) and str(row.ground_truth) == str(seen)
    assert row.extra_info == {}  # main_eval's dict() without the column
    plain = {"prompt": "plain text", "data_source": "m", "reward_model": {"ground_truth": "1"}}
    bad = write_parquet(offline_eval / "bad.parquet", [plain])
    with pytest.raises(ValueError, match=r"bad.parquet \(task guru_x\) row 0: 'prompt' is not"):
        guru_eval.read_rows(bad, "guru_x")


# -- config, settings ---------------------------------------------------------------------
def guru_config(data_folder, **guru) -> dict:
    raw = yaml.safe_load((TESTS / "config_mtl_sft_tiny.yaml").read_text())
    raw["mtl"]["eval"] = {
        "engine": "guru", "suite": {"math": ["guru_math", "guru_aime"]},
        "guru": {"data_folder": str(data_folder), **guru},
    }  # fmt: skip
    return raw


def test_config_refuses_what_the_engine_cannot_run(tmp_path):
    raw = guru_config(tmp_path)
    validate_config(raw)
    raw["mtl"]["eval"]["suite"]["math"].append("guru_amc")
    with pytest.raises(ConfigError, match=r"\['guru_amc'\] are not leaderboards of the guru"):
        validate_config(raw)
    raw = guru_config(tmp_path)
    raw["mtl"]["eval"]["metrics"] = {"guru_math": "acc"}
    with pytest.raises(ConfigError, match=r"'mtl.eval.metrics' is set, but mtl.eval.engine guru"):
        validate_config(raw)
    raw = guru_config(tmp_path)  # main_generation: n_samples must be 1 at temperature 0
    raw["mtl"]["eval"]["guru"]["temperature"] = 0
    raw["mtl"]["eval"]["suite"]["math"] = ["guru_math"]
    validate_config(raw)  # guru_math: 1 sample
    raw["mtl"]["eval"]["suite"]["math"].append("guru_aime")  # 4 samples
    with pytest.raises(ConfigError, match=r"'mtl.eval.guru.temperature' is 0 \(greedy\), but "
                       r"\['guru_aime'\] sample several"):  # fmt: skip
        validate_config(raw)
    world = yaml.safe_load((TESTS / "config_mtl_tiny.yaml").read_text())
    world["mtl"]["eval"]["engine"] = "guru"
    with pytest.raises(ConfigError, match=r"'mtl.eval.engine' guru evaluates sft/grpo"):
        validate_config(world)


def test_the_jobs_params_carry_the_engine_settings(tmp_path):
    cfg = validate_config(guru_config(tmp_path))
    s = settings.evaluation(cfg, "baseline_seed1", 4)
    # every mtl.eval.guru setting but score_workers (how, not what: settings.evaluation_job)
    guru = {k: v for k, v in cfg["mtl"]["eval"]["guru"].items() if k != "score_workers"}
    assert s["engine"] == "guru" and s["guru"] == guru
    assert s["plan"]["guru_aime"] == {
        "name": "aime", "domain": "math", "n_samples": 4, "prompt_length": 4096,
        "response_length": 28672, "file_pattern": "math__aime_repeated_8x_[0-9a-zA-Z]*.parquet",
    }  # fmt: skip
    changed = validate_config(guru_config(tmp_path, max_response_tokens=64, top_p=0.9))
    capped = settings.evaluation(changed, "baseline_seed1", 4)
    assert capped["plan"]["guru_math"]["response_length"] == 64
    assert capped["guru"]["top_p"] == 0.9 and capped != s  # a change re-runs evaluation
    # lm_eval keeps the params it always had (no engine key: nothing re-runs)
    lm = settings.evaluation(validate_config(yaml.safe_load(
        (TESTS / "config_mtl_sft_tiny.yaml").read_text())), "baseline_seed1", 4)  # fmt: skip
    assert "engine" not in lm and set(lm) == {"objective", "suite", "meta", "metrics", "lm_eval"}


# -- planted responses through the real scorers (ftlab.mtl.guru) -------------------------
TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


@pytest.fixture(scope="module")
def tiny_chat_model(tmp_path_factory):
    """The tiny random model with a chat template and the checkpoint record a job reads."""
    from transformers import AutoTokenizer

    from ftlab.llm.tiny import build_tiny_causal_lm

    path = build_tiny_causal_lm(tmp_path_factory.mktemp("tiny") / "checkpoint-4")
    tok = AutoTokenizer.from_pretrained(path)
    tok.chat_template = TEMPLATE
    tok.save_pretrained(path)
    (Path(path) / "ftlab_checkpoint.json").write_text(json.dumps({"epoch": 2, "step": 4}))
    return path


class Planted:
    """A generator that answers each prompt by its question (decoded from the prompt ids);
    `answers`: question -> the list of n texts of each call (repeats take the next list)."""

    def __init__(self, tok, answers: dict[str, list[list[str]]]):
        self.tok, self.answers, self.calls = tok, answers, []
        self.seen: dict[str, int] = {}

    def __call__(self, prompts, n, max_tokens):
        self.calls.append((len(prompts), n, max_tokens))
        out = []
        for ids in prompts:
            text = self.tok.decode(ids)
            (q,) = [q for q in self.answers if q in text]
            i = self.seen.get(q, 0)
            self.seen[q] = i + 1
            assert len(self.answers[q][i]) == n
            out.append(self.answers[q][i])
        return out


def pass_at_k(n, c, k):
    return 1 - math.comb(n - c, k) / math.comb(n, k)


def run_engine(cfg, folder, model, tmp_path, generator=None, tasks=None):
    """The job's own call: rule params from ftlab.mtl.settings, ftlab.mtl.steps' stage."""
    from ftlab.mtl import steps

    s = settings.evaluation_job(settings.evaluation(cfg, "baseline_seed1", 4), cfg)
    test_sets = find_task_files(folder, tasks or list(s["suite"]))[0]
    out = tmp_path / "mtl_eval.json", tmp_path / "mtl_eval.samples.jsonl"
    if generator is not None:
        s["generator"] = generator
    steps.evaluate_checkpoint(model, test_sets, str(out[0]), str(out[1]), 1, "unused", **s)
    return json.loads(out[0].read_text()), [json.loads(x) for x in out[1].read_text().splitlines()]


def test_planted_responses_give_main_evals_figures(offline_eval, tiny_chat_model, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_chat_model)
    gen = Planted(tok, {
        "What is 2+2?": [["The sum is \\boxed{4}."]],
        "What is 3*3?": [["\\boxed{8}"]],
        "What is 1+0?": [["so \\boxed{1}"]],
        # AIME: two rows per problem (the file's repeats), 4 samples each -> 8 responses
        "Find x if x+1=6.": [["\\boxed{5}", "\\boxed{0}", "\\boxed{0}", "\\boxed{0}"],
                             ["\\boxed{5}", "no answer", "\\boxed{6}", "\\boxed{0}"]],
        "Find y if 2y=14.": [["\\boxed{7}"] * 4, ["\\boxed{1}"] * 4],
    })  # fmt: skip
    cfg = validate_config(guru_config(offline_eval, max_response_tokens=32))
    result, samples = run_engine(cfg, offline_eval, tiny_chat_model, tmp_path, generator=gen)
    assert gen.calls == [(3, 1, 32), (4, 4, 32)]  # math: n 1; aime: its 4 rows, n 4
    assert (result["model"], result["step"], result["epoch"]) == ("baseline_seed1", 4, 2)
    math_row, aime_row = result["tasks"]
    assert math_row["task"] == "guru_math" and math_row["n"] == 3 and math_row["n_samples"] == 1
    assert math_row["metric"] == "pass@1_(avg1)"
    assert math_row["reward"] == pytest.approx(2 / 3)
    assert math_row["value"] == pytest.approx(200 / 3)
    assert math_row["main_eval"]["pass@1"] == pytest.approx(200 / 3)
    assert math_row["main_eval"]["test_score(avg@k)/math"] == pytest.approx(2 / 3)
    # AIME: 2 problems of 8 responses, x correct 2 of 8, y 4 of 8
    assert aime_row["n"] == 2 and aime_row["metric"] == "pass@1_(avg8)"
    figures = aime_row["main_eval"]
    assert figures["max_k"] == 8 and "pass@16" not in figures
    for k in (1, 2, 4, 8):
        expected = (pass_at_k(8, 2, k) + pass_at_k(8, 4, k)) / 2 * 100
        assert figures[f"pass@{k}"] == pytest.approx(expected), k
    assert aime_row["reward"] == pytest.approx((2 / 8 + 4 / 8) / 2)
    assert figures["test_score(avg@k)/math__aime"] == pytest.approx((2 / 8 + 4 / 8) / 2)
    # one sample record per PROBLEM (the bootstrap's unit), its reward the mean of its scores
    by_task = {}
    for s in samples:
        by_task.setdefault(s["task"], []).append(s)
    assert [s["sample"] for s in by_task["guru_math"]] == [0, 1, 2]
    assert [s["reward"] for s in by_task["guru_math"]] == [1.0, 0.0, 1.0]
    x, y = by_task["guru_aime"]
    assert (x["sample"], y["sample"]) == (0, 1)  # each problem's first row
    assert x["scores"] == [1, 0, 0, 0, 1, 0, 0, 0] and x["reward"] == 2 / 8
    assert x["outputs"][4] == "\\boxed{5}" and len(y["outputs"]) == 8
    assert y["reward"] == 0.5 and y["data_source"] == "math__aime" and y["domain"] == "math"


def test_the_tiny_model_generates_and_scores_on_cpu(offline_eval, tiny_chat_model, tmp_path):
    """The HF backend end to end: n responses per row, every response scored again here."""
    from ftlab.mtl import guru

    cfg = validate_config(guru_config(offline_eval, max_response_tokens=6, backend="hf",
                                      batch_size=2))  # fmt: skip
    result, samples = run_engine(cfg, offline_eval, tiny_chat_model, tmp_path)
    assert [t["n"] for t in result["tasks"]] == [3, 2]
    rows = guru_eval.read_rows(str(offline_eval / "math__math_500.parquet"), "guru_math")
    for s in samples:
        assert len(s["outputs"]) == {"guru_math": 1, "guru_aime": 8}[s["task"]]
        gt = "5" if s["task"] == "guru_aime" and s["sample"] == 0 else None
        gt = gt or ("7" if s["task"] == "guru_aime" else rows[s["sample"]].ground_truth)
        again = [guru.compute_score(s["data_source"], o, gt, {})["score"] for o in s["outputs"]]
        assert s["scores"] == again and s["reward"] == pytest.approx(sum(again) / len(again))
        assert 0.0 <= s["reward"] <= 1.0


def test_a_missing_file_or_unscored_source_names_the_task(offline_eval, tiny_chat_model, tmp_path):
    from ftlab.mtl.study import preflight

    raw = guru_config(offline_eval)
    raw["mtl"]["eval"]["suite"] = {"math": ["guru_math"], "table": ["guru_hitab", "guru_finqa"]}
    write_parquet(offline_eval / "table__finqa_1147.parquet",
                  math_rows([("q", "1")], "nosuch__source"))  # fmt: skip
    cfg = validate_config(raw)
    with pytest.raises(
        ValueError,
        match=r"task 'guru_hitab': no file matching "
        r"'table__hitab_\[0-9a-zA-Z\]\*.parquet' under 'mtl.eval.guru.data_folder'",
    ):
        run_engine(cfg, offline_eval, tiny_chat_model, tmp_path, generator=lambda *a: [])
    problems = guru_eval.preflight_problems(str(offline_eval), ["guru_math", "guru_hitab",
                                                                "guru_finqa"])  # fmt: skip
    assert len(problems) == 2, problems
    assert problems[0].startswith("'mtl.eval.suite' task 'guru_hitab': no file matching")
    finqa = offline_eval / "table__finqa_1147.parquet"
    assert problems[1].startswith(
        f"task 'guru_finqa' ({finqa}): data source 'nosuch__source' has no ported scorer"
    )
    # `ftlab validate`'s preflight reports them with the model and dataset checks
    assert preflight(cfg) == problems
    # the job itself: the scorer's error names the task
    only = {"table": ["guru_finqa"]}
    raw = guru_config(offline_eval)
    raw["mtl"]["eval"]["suite"] = only
    with pytest.raises(ValueError, match=r"task guru_finqa \(.*table__finqa_1147.parquet\): "
                       r"data_source 'nosuch__source'"):  # fmt: skip
        run_engine(validate_config(raw), offline_eval, tiny_chat_model, tmp_path,
                   generator=lambda p, n, m: [["x"] * n for _ in p])  # fmt: skip


def test_the_comparison_pairs_problems(offline_eval, tiny_chat_model, tmp_path):
    """The report's paired bootstrap reads the engine's records: one outcome per problem (the
    mean of its n scores), paired by problem id."""
    from ftlab.mtl import analysis

    raw = guru_config(offline_eval, max_response_tokens=8)
    raw["mtl"]["eval"]["suite"] = {"math": ["guru_aime"]}
    cfg = validate_config(raw)
    x, y = "Find x if x+1=6.", "Find y if 2y=14."
    planted = {  # baseline: x 1 of 8, y 0 of 8; pcgrad: x 4 of 8, y 8 of 8
        "baseline_seed1": {x: [["\\boxed{5}"] + ["\\boxed{0}"] * 3, ["\\boxed{0}"] * 4],
                           y: [["\\boxed{0}"] * 4, ["\\boxed{0}"] * 4]},
        "pcgrad_seed1": {x: [["\\boxed{5}"] * 4, ["\\boxed{0}"] * 4],
                         y: [["\\boxed{7}"] * 4, ["\\boxed{7}"] * 4]},
    }  # fmt: skip
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_chat_model)
    paths, manifests = [], {}
    for run, answers in planted.items():
        out = tmp_path / run / "checkpoint-4"
        out.mkdir(parents=True)
        run_engine(cfg, offline_eval, tiny_chat_model, out, generator=Planted(tok, answers))
        paths.append(out / "mtl_eval.samples.jsonl")
        manifests[run] = {"checkpoints": [{"step": 4, "epoch": 2}], "selected": {"step": 4}}
    runs = {"baseline_seed1": {"method": "baseline", "seed": 1},
            "pcgrad_seed1": {"method": "pcgrad", "seed": 1}}  # fmt: skip
    frame = analysis.comparison_frame(paths, manifests, runs, {"math": ["guru_aime"]},
                                      confidence=0.95, n_resamples=200, seed=0)  # fmt: skip
    row = frame[frame["level"] == "task"].iloc[0]
    assert row["n_samples"] == 2  # problems, not the 16 responses
    assert row["baseline_reward"] == pytest.approx((1 / 8 + 0) / 2)
    assert row["method_reward"] == pytest.approx((4 / 8 + 1) / 2)
    assert row["diff"] == pytest.approx(((4 / 8 - 1 / 8) + (1 - 0)) / 2)


def test_the_vllm_backend_passes_the_seeds_sampling(monkeypatch):
    """The wiring of vLLM (not installed here): token-id prompts, n per prompt, the seed's
    sampling and gpu_memory_utilization, context = prompt + response length."""
    import sys
    import types

    made = {}

    class LLM:
        def __init__(self, **kw):
            made["llm"] = kw

        def get_tokenizer(self):
            return None

        def generate(self, prompts, params, use_tqdm):
            made["prompts"], made["params"] = prompts, params
            outs = [types.SimpleNamespace(text=f"r{i}") for i in range(params["n"])]
            return [types.SimpleNamespace(outputs=outs) for _ in prompts]

    fake = types.SimpleNamespace(LLM=LLM, SamplingParams=lambda **kw: kw)
    monkeypatch.setitem(sys.modules, "vllm", fake)
    cfg = validate_config(guru_config("unused"))
    plan = settings.evaluation(cfg, "baseline_seed1", 4)["plan"]
    g = cfg["mtl"]["eval"]["guru"]
    gen = guru_eval.make_backend("vllm", "/m", plan=plan, device="cuda", gpus=1, batch_size=8,
                                 seed=0, gpu_memory_utilization=g["gpu_memory_utilization"],
                                 sampling={k: g[k] for k in SAMPLING})  # fmt: skip
    assert made["llm"] == {"model": "/m", "seed": 0, "tensor_parallel_size": 1,
                           "gpu_memory_utilization": 0.7, "max_model_len": 32768}  # fmt: skip
    assert gen([[1, 2], [3]], 4, 28672) == [["r0", "r1", "r2", "r3"]] * 2
    assert made["prompts"] == [{"prompt_token_ids": [1, 2]}, {"prompt_token_ids": [3]}]
    assert made["params"] == {"n": 4, "max_tokens": 28672, "skip_special_tokens": True,
                              "temperature": 1.0, "top_p": 0.7, "top_k": -1}  # fmt: skip


def test_preflight_names_a_scorers_missing_package_and_nltk_data(monkeypatch):
    """The packages and nltk data a scorer needs are checked before any job: a missing one is
    named with its task and scorer (here made missing by hand)."""
    import importlib.util

    import nltk

    real_find_spec = importlib.util.find_spec

    def find_spec(name, *a):
        return None if name == "pylatexenc" else real_find_spec(name, *a)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)

    def no_data(resource, *a, **k):
        raise LookupError(resource)

    monkeypatch.setattr(nltk.data, "find", no_data)
    assert guru_eval.dependency_problems("guru_math", ["naive_dapo", "naive_dapo"]) == [
        "task 'guru_math': scorer naive_dapo needs the Python package 'pylatexenc' "
        "(pip install -e .[llm])"
    ]
    assert guru_eval.dependency_problems("guru_ifeval", ["ifeval"]) == [
        "task 'guru_ifeval': scorer ifeval needs nltk's tokenizers/punkt_tab data (run: "
        "python -m nltk.downloader punkt_tab)"
    ]
    assert guru_eval.dependency_problems("guru_hitab", ["tablereason"]) == []


# -- resume after a kill: finished tasks' outputs are kept -------------------------------
CRUX_TRUTH = json.dumps({"functional": "def f(x):\n    return x * 2"})


def add_crux_file(folder: Path) -> None:
    rows = [{"prompt": [{"role": "user", "content": q}], "data_source": "simulation__cruxeval-o",
             "reward_model": {"ground_truth": CRUX_TRUTH}, "extra_info": {"index": i}}
            for i, q in enumerate(["Crux A?", "Crux B?"])]  # fmt: skip
    write_parquet(folder / "simulation__cruxeval-o_800.parquet", rows)


THREE_TASKS = {"math": ["guru_math", "guru_aime"], "simulation": ["guru_cruxeval_o"]}
THREE_ANSWERS = {
    "What is 2+2?": [["\\boxed{4}"]], "What is 3*3?": [["\\boxed{8}"]],
    "What is 1+0?": [["\\boxed{1}"]],
    "Find x if x+1=6.": [["\\boxed{5}", "\\boxed{0}", "\\boxed{0}", "\\boxed{0}"],
                         ["\\boxed{5}", "no", "\\boxed{6}", "\\boxed{0}"]],
    "Find y if 2y=14.": [["\\boxed{7}"] * 4, ["\\boxed{1}"] * 4],
    "Crux A?": [["```python\nassert f(2) == 4\n```"]],
    "Crux B?": [["```python\nassert f(2) == 5\n```"]],
}  # fmt: skip


class Crashing(Planted):
    """Planted, but the job dies (raises) when it asks for task number `crash_at`."""

    def __init__(self, tok, answers, crash_at: int):
        super().__init__(tok, answers)
        self.crash_at = crash_at

    def __call__(self, prompts, n, max_tokens):
        if len(self.calls) + 1 == self.crash_at:
            raise RuntimeError("killed")
        return super().__call__(prompts, n, max_tokens)


def three_task_config(folder, **guru):
    add_crux_file(folder)
    raw = guru_config(folder, **{"max_response_tokens": 32, **guru})
    raw["mtl"]["eval"]["suite"] = THREE_TASKS
    return validate_config(raw)


def test_a_killed_job_generates_only_its_unfinished_tasks(offline_eval, tiny_chat_model,
                                                          tmp_path):  # fmt: skip
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_chat_model)
    cfg = three_task_config(offline_eval)
    whole = tmp_path / "whole"
    whole.mkdir()
    expected = run_engine(cfg, offline_eval, tiny_chat_model, whole,
                          generator=Planted(tok, THREE_ANSWERS))  # fmt: skip
    assert [t["task"] for t in expected[0]["tasks"]] == ["guru_math", "guru_aime",
                                                         "guru_cruxeval_o"]  # fmt: skip
    assert [s["reward"] for s in expected[1] if s["task"] == "guru_cruxeval_o"] == [1.0, 0.0]

    out = tmp_path / "resumed"
    out.mkdir()
    with pytest.raises(RuntimeError, match="killed"):  # dies asking for task 3 of 3
        run_engine(cfg, offline_eval, tiny_chat_model, out,
                   generator=Crashing(tok, THREE_ANSWERS, crash_at=3))  # fmt: skip
    # the rule's outputs appear only with the whole suite; tasks 1 and 2 are kept
    assert not (out / "mtl_eval.json").exists() and not (out / "mtl_eval.samples.jsonl").exists()
    kept = out / "mtl_eval.json.generations"
    assert sorted(p.name for p in kept.iterdir()) == ["guru_aime.jsonl", "guru_math.jsonl"]
    again = Planted(tok, {q: a for q, a in THREE_ANSWERS.items() if q.startswith("Crux")})
    assert run_engine(cfg, offline_eval, tiny_chat_model, out, generator=again) == expected
    assert again.calls == [(2, 1, 32)]  # only task 3 (cruxeval: 2 prompts, n 1)
    # a finished job re-run (a scoring-only change) generates nothing
    nothing = Planted(tok, {})
    assert run_engine(cfg, offline_eval, tiny_chat_model, out, generator=nothing) == expected
    assert nothing.calls == []


@pytest.mark.parametrize(
    "change",
    [{"top_p": 0.9}, {"temperature": 0.5}, {"seed": 1}, {"limit": 1}, {"max_response_tokens": 16},
     {"backend": "hf"}, "weights", "n_samples", "file"],
)  # fmt: skip
def test_a_changed_setting_model_or_plan_generates_again(change, offline_eval, tiny_chat_model,
                                                         tmp_path, monkeypatch):  # fmt: skip
    """A change of weights, sampling, seed, backend, limit or lengths changes the key of every
    task's kept outputs, a task's own plan or file that task's: nothing stale is reused."""
    import shutil

    from transformers import AutoTokenizer

    from ftlab.mtl import steps

    tok = AutoTokenizer.from_pretrained(tiny_chat_model)
    cfg = three_task_config(offline_eval)
    first = Planted(tok, THREE_ANSWERS)
    run_engine(cfg, offline_eval, tiny_chat_model, tmp_path, generator=first)
    assert len(first.calls) == 3
    model, generator = tiny_chat_model, Planted(tok, THREE_ANSWERS)
    answers = THREE_ANSWERS
    if change == "weights":  # the same checkpoint path, other weights
        import safetensors.torch as st

        model = str(tmp_path / "copy")
        shutil.copytree(tiny_chat_model, model)
        weights = Path(model) / "model.safetensors"
        tensors = st.load_file(weights)
        name = sorted(tensors)[0]
        tensors[name] = tensors[name] + 1
        st.save_file(tensors, weights, metadata={"format": "pt"})
        # the first run's kept outputs, as if the checkpoint had been retrained in place
        shutil.copytree(tmp_path / "mtl_eval.json.generations",
                        tmp_path / "copy_out" / "mtl_eval.json.generations")  # fmt: skip
        run_engine(cfg, offline_eval, tiny_chat_model, tmp_path / "copy_out", generator=first)
        assert len(first.calls) == 3  # same weights: all kept
    elif change == "n_samples":  # the registry's samples per prompt (part of the job's plan)
        monkeypatch.setitem(guru_eval.LEADERBOARDS, "guru_math",
                            guru_eval.Leaderboard("math", "math", 2, 4096, 28672))  # fmt: skip
        answers = {q: [a[0] * 2] if q.startswith("What") else a for q, a in answers.items()}
        generator = Planted(tok, answers)
    elif change == "file":  # another file of the task's pattern comes first
        shutil.copy(
            offline_eval / "math__math_500.parquet", offline_eval / "math__math_100.parquet"
        )
    elif change == {"backend": "hf"}:  # the built backend, not the planted one, generates
        built = Planted(tok, THREE_ANSWERS)
        monkeypatch.setattr(guru_eval, "make_backend", lambda *a, **k: built)
        generator = None
    else:
        cfg = three_task_config(offline_eval, **change)
    s = settings.evaluation(cfg, "baseline_seed1", 4)
    test_sets = find_task_files(offline_eval, list(s["suite"]))[0]
    out = tmp_path / ("copy_out" if change == "weights" else "")
    if generator is not None:
        s["generator"] = generator
    steps.evaluate_checkpoint(model, test_sets, str(out / "mtl_eval.json"),
                              str(out / "mtl_eval.samples.jsonl"), 1, "unused", **s)  # fmt: skip
    calls = (built if change == {"backend": "hf"} else generator).calls
    if change in ("n_samples", "file"):  # guru_math's plan only: the other tasks are kept
        assert calls == [(3, 2 if change == "n_samples" else 1, 32)]
    else:
        assert len(calls) == 3, change  # every task generated again


def test_the_hf_backend_resumes_as_one_uninterrupted_run(offline_eval, tiny_chat_model, tmp_path,
                                                         monkeypatch):  # fmt: skip
    """Sampling (temperature 1) with the tiny model: torch is seeded at every task, so a task
    generated after a kill draws what it draws in one uninterrupted run."""
    cfg = validate_config(guru_config(offline_eval, max_response_tokens=5, backend="hf"))
    (tmp_path / "whole").mkdir()
    expected = run_engine(cfg, offline_eval, tiny_chat_model, tmp_path / "whole")
    real_call = guru_eval.HFBackend.__call__
    tasks_seen = []

    def dies_at_task_2(self, prompts, n, max_tokens):
        tasks_seen.append(n)
        if len(tasks_seen) == 2:
            raise RuntimeError("killed")
        return real_call(self, prompts, n, max_tokens)

    monkeypatch.setattr(guru_eval.HFBackend, "__call__", dies_at_task_2)
    with pytest.raises(RuntimeError, match="killed"):
        run_engine(cfg, offline_eval, tiny_chat_model, tmp_path)
    monkeypatch.setattr(guru_eval.HFBackend, "__call__", real_call)
    result, samples = run_engine(cfg, offline_eval, tiny_chat_model, tmp_path)
    assert (result, samples) == expected
    assert len({o for s in samples for o in s["outputs"]}) > 1  # it did sample


def test_a_stale_or_foreign_kept_file_is_not_used(tmp_path):
    path = tmp_path / "guru_math.jsonl"
    assert guru_eval.kept_outputs(path, "k", 2) is None  # none yet
    guru_eval.keep_outputs(path, "k", "guru_math", [["a"], ["b"]])
    assert guru_eval.kept_outputs(path, "k", 2) == [["a"], ["b"]]
    assert guru_eval.kept_outputs(path, "other", 2) is None
    assert guru_eval.kept_outputs(path, "k", 3) is None  # another row count
    path.write_text('{"row": 0, "outputs": ["a"]}\nnot json\n')
    assert guru_eval.kept_outputs(path, "k", 1) is None
    # the stamp is the last line: a file cut before it is never taken as whole
    guru_eval.keep_outputs(path, "k", "guru_math", [["a"], ["b"]])
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:2]))
    assert guru_eval.kept_outputs(path, "k", 2) is None


# -- parallel scoring ---------------------------------------------------------------------
def code_block(code):
    return f"```python\n{code}\n```"


ADD_TESTS = json.dumps({"functional": "assert add(1, 2) == 3\nassert add(0, 0) == 0"})
ZEBRA_TRUTH = {"header": ["House", "Name"], "rows": [["1", "Al"], ["2", "Bo"]]}


def planted_scoring_rows():
    """(rows, outputs, path) over naive_dapo (sympy in a forked, time-limited child),
    zebra_puzzle (a SIGALRM limit), coder1 and cruxeval (the sandbox), with right, wrong and
    unparsable responses."""
    maths = [("4", ["\\boxed{4}", "\\boxed{2+2}", "\\boxed{\\frac{8}{2}}", "four"]),
             ("\\frac{1}{2}",
              ["\\boxed{1/2}", "\\boxed{0.5}", "\\boxed{\\frac{2}{4}}", "\\boxed{2}"])]  # fmt: skip
    code = [code_block("def add(a, b):\n    return a + b"),
            code_block("def add(a, b):\n    return a - b"), "no code",
            code_block("def add(a, b):\n    raise ValueError")]  # fmt: skip
    crux = ["```python\nassert f(2) == 4\n```", "```python\nassert f(2) == 5\n```",
            "assert f(1) == 2", "```python\nassert f(3) == 7\n```"]  # fmt: skip
    rows, outputs = [], []
    for truth, texts in maths:
        rows.append(guru_eval.Row([], "math", truth, {}))
        outputs.append(texts)
    rows.append(guru_eval.Row([], "codegen__humaneval", ADD_TESTS, {}))
    outputs.append(code)
    rows.append(guru_eval.Row([], "simulation__cruxeval-o", CRUX_TRUTH, {}))
    outputs.append(crux)
    rows.append(guru_eval.Row([], "logic__zebra_puzzle_dataset", ZEBRA_TRUTH, {}))
    outputs.append([f"<answer>{json.dumps(ZEBRA_TRUTH)}</answer>", "no answer",
                    f"<answer>{json.dumps({**ZEBRA_TRUTH, 'rows': [['1', 'Bo'], ['2', 'Bo']]})}"
                    "</answer>", "<answer>true</answer>"])  # fmt: skip
    return rows, outputs, "x/mixed.parquet"


def alarm_fires() -> bool:
    """In a pool worker: whether _limits.alarm (zebra_puzzle's SIGALRM limit) interrupts a
    call there."""
    import time

    from ftlab.mtl.guru import _limits

    start = time.monotonic()
    try:
        with _limits.alarm(0.2):
            time.sleep(5)
    except TimeoutError:
        return time.monotonic() - start < 2
    return False


def test_the_pool_scores_as_the_jobs_process(tmp_path):
    from ftlab.mtl import guru
    from ftlab.mtl.guru import _limits

    rows, outputs, path = planted_scoring_rows()
    serial = guru_eval.score_task("t", path, rows, outputs)
    with guru_eval.score_pool(2) as pool:
        assert pool is not None
        # scorers run in a worker's main thread: the SIGALRM limits apply there
        assert pool.submit(_limits.in_main_thread).result()
        assert pool.submit(alarm_fires).result()
        pooled = guru_eval.score_task("t", path, rows, outputs, pool)
    assert pooled == serial
    figures, records = serial
    # independently: every response scored one by one here
    for row, texts, rec in zip(rows, outputs, records, strict=True):
        again = [guru.compute_score(row.data_source, t, row.ground_truth, {})["score"]
                 for t in texts]  # fmt: skip
        assert rec["scores"] == again
    # a mix of right and wrong in every scorer (naive_dapo compares normalised strings)
    assert [r["scores"] for r in records] == [[1, 0, 0, 0], [1, 1, 0, 0], [1, 0, 0, 0],
                                              [1, 0, 1, 0], [1, 0, 0.75, 0]]  # fmt: skip
    with guru_eval.score_pool(1) as none:
        assert none is None  # 1: in-process, the engine's behaviour before score_workers


def test_a_scorers_time_limit_holds_in_a_pool_worker(monkeypatch):
    """zebra_puzzle's SIGALRM limit (patched to 0.3 s before the fork) ends a slow scoring in
    the worker, which scores 0 as in-process."""
    import time

    from ftlab.mtl.guru import logic

    monkeypatch.setattr(logic, "ZEBRA_SECONDS", 0.3)
    monkeypatch.setattr(logic, "zebra_accuracy", lambda a, g: time.sleep(5) or 1.0)
    rows = [guru_eval.Row([], "logic__zebra_puzzle", ZEBRA_TRUTH, {})]
    outputs = [[f"<answer>{json.dumps(ZEBRA_TRUTH)}</answer>"]]
    with guru_eval.score_pool(2) as pool:
        start = time.monotonic()
        _, (record,) = guru_eval.score_task("guru_zebra_puzzle", "z.parquet", rows, outputs, pool)
        assert time.monotonic() - start < 3
    assert record["scores"] == [0.0]


def test_a_pool_workers_error_names_the_task():
    rows = [guru_eval.Row([], "nosuch__source", "1", {})]
    with (
        guru_eval.score_pool(2) as pool,
        pytest.raises(ValueError, match=r"task guru_x \(f.parquet\): data_source 'nosuch__source'"),
    ):
        guru_eval.score_task("guru_x", "f.parquet", rows, [["x"]], pool)


def test_score_workers_give_the_jobs_results(offline_eval, tiny_chat_model, tmp_path):
    """The job with mtl.eval.guru.score_workers 2 writes what 1 (in-process) writes."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_chat_model)
    results = []
    for workers in (1, 2):
        (tmp_path / str(workers)).mkdir()
        cfg = three_task_config(offline_eval, score_workers=workers)
        results.append(run_engine(cfg, offline_eval, tiny_chat_model, tmp_path / str(workers),
                                  generator=Planted(tok, THREE_ANSWERS)))  # fmt: skip
    assert results[0] == results[1]
    assert validate_config(guru_config(tmp_path))["mtl"]["eval"]["guru"]["score_workers"] is None


@pytest.mark.parametrize(("score_workers", "threads", "expected"), [(None, 3, 3), (2, 3, 2),
                                                                    (1, 8, 1)])  # fmt: skip
def test_score_workers_default_to_the_jobs_threads(score_workers, threads, expected,
                                                   offline_eval, tiny_chat_model, tmp_path,
                                                   monkeypatch):  # fmt: skip
    from ftlab.mtl import steps

    made = []
    real = guru_eval.score_pool

    def recording(workers):
        made.append(workers)
        return real(1)

    monkeypatch.setattr(guru_eval, "score_pool", recording)
    cfg = validate_config(guru_config(offline_eval, score_workers=score_workers))
    params = settings.evaluation(cfg, "baseline_seed1", 4)
    assert "score_workers" not in params["guru"]  # how, not what: a change re-runs nothing
    s = settings.evaluation_job(params, cfg)  # as workflow/scripts/mtl_evaluate.py
    s["generator"] = lambda p, n, m: [["\\boxed{1}"] * n for _ in p]
    test_sets = find_task_files(offline_eval, list(s["suite"]))[0]
    steps.evaluate_checkpoint(tiny_chat_model, test_sets, str(tmp_path / "e.json"),
                              str(tmp_path / "e.jsonl"), threads, "unused", **s)  # fmt: skip
    assert made == [expected]
    with pytest.raises(ConfigError, match="score_workers"):
        validate_config(guru_config(offline_eval, score_workers=0))


def test_scorer_draws_are_reproducible_in_process_and_in_workers():
    """supergpqa guesses a letter with Python's global random when an answer has none (the
    seed's code): seeded per problem from (mtl.eval.guru.seed, task, problem), the same scores
    in the job's process, in pool workers and on a second run; the global state is put back."""
    import random

    rows = [guru_eval.Row([], "stem__supergpqa", letter, {}) for letter in "ABCDEFGHIJ" * 4]
    outputs = [["no letter here", "nor here"] for _ in rows]
    state = random.getstate()
    first = guru_eval.score_task("guru_supergpqa", "s.parquet", rows, outputs, seed=3)
    assert random.getstate() == state
    assert guru_eval.score_task("guru_supergpqa", "s.parquet", rows, outputs, seed=3) == first
    with guru_eval.score_pool(2) as pool:
        pooled = guru_eval.score_task("guru_supergpqa", "s.parquet", rows, outputs, pool, seed=3)
    assert pooled == first
    scores = [s for r in first[1] for s in r["scores"]]
    assert 0 < sum(scores) < len(scores)  # guesses: some right, some wrong
    # independently: problem p's guesses are random.seed("3:guru_supergpqa:p")'s draws
    for (pid, _), record, row in zip(guru_eval.problems_of(rows, False), first[1], rows,
                                     strict=True):  # fmt: skip
        draws = random.Random(f"3:guru_supergpqa:{pid}")
        assert record["scores"] == [float(draws.choice("ABCDEFGHIJ") == row.ground_truth)
                                    for _ in range(2)]  # fmt: skip


@pytest.mark.parametrize("workers", [1, 2])
def test_a_scorers_own_error_names_task_problem_and_source(monkeypatch, workers):
    from ftlab.mtl import guru

    def broken(data_source, solution, ground_truth, extra_info=None):
        raise KeyError("instruction_id_list")

    monkeypatch.setattr(guru, "compute_score", broken)  # before the fork: workers see it
    rows = [guru_eval.Row([], "ood__ifeval", "", {})] * 2
    with guru_eval.score_pool(workers) as pool, pytest.raises(
        RuntimeError, match=r"task guru_ifeval \(i.parquet\): problem 0 \(data source "
        r"'ood__ifeval'\): KeyError: 'instruction_id_list'"
    ):  # fmt: skip
        guru_eval.score_task("guru_ifeval", "i.parquet", rows, [["x"], ["y"]], pool)
