"""The multi-turn loop, void turns and the metrics on scripted model outputs, checked against
hand-counted values."""

import pytest

from ftlab.tir.rollout import Generated, cut_after_code, run_rollouts
from ftlab.tir.sandbox import Sandbox, SandboxLimits
from ftlab.tir.scoring import Scorer, metrics, score_samples, to_number


class Scripted:
    """Replies by (problem prompt, sample index, turn) from a script; records the contexts."""

    def __init__(self, script):
        self.script, self.calls = script, []

    def __call__(self, contexts):
        self.calls.append(list(contexts))
        out = []
        for ctx in contexts:
            prompt = ctx.split("\n", 1)[0]
            turn = ctx.count("Code execution result:")
            out.append(Generated(self.script[prompt][turn], 5))
        return out


SCRIPT = {
    # tool call, then the answer from the output: 2 turns, correct
    "Q: a": ["Let me compute.\n```python\nprint(6*7)\n```\nignored tail", "\\boxed{42}"],
    # a void turn (no code, no answer): stops after 1 turn, no answer
    "Q: b": ["I am thinking about it"],
    # the cell prints the boxed answer itself: stops after 1 turn, answer from the output
    "Q: c": ["```python\nprint('\\\\boxed{%d}' % (2**10))\n```"],
    # a crashing cell, then a wrong answer: 2 turns
    "Q: d": ["```python\nprint(1/0)\n```", "\\boxed{7}"],
    # code every turn: hits max_turns = 3
    "Q: e": ["```python\nprint(1)\n```"] * 3,
}
GOLD = {"a": "42", "b": "5", "c": "1024", "d": "8", "e": "1"}


@pytest.fixture(scope="module")
def sandbox():
    return Sandbox(SandboxLimits(max_concurrency=2, wall_seconds=10))


def run(sandbox, tools=True, n=1):
    problems = [{"id": k, "prompt": f"Q: {k}\n"} for k in GOLD]
    gen = Scripted(SCRIPT)
    trajs = run_rollouts(problems, n, gen, sandbox, max_turns=3, tools=tools, count_tokens=len)
    return [t.to_record() for t in trajs], gen


def test_turns_stop_reasons_and_observations(sandbox):
    recs, gen = run(sandbox)
    by = {r["problem_id"]: r for r in recs}
    assert [by[k]["n_turns"] for k in "abcde"] == [2, 1, 1, 2, 3]
    assert [by[k]["stop_reason"] for k in "abcde"] == ["answer", "void", "answer", "answer",
                                                       "max_turns"]  # fmt: skip
    a = by["a"]["turns"]
    assert a[0]["text"].endswith("```") and "ignored tail" not in a[0]["text"]
    assert a[0]["observation"] == "\nCode execution result: 42\n"
    assert a[0]["tool"]["status"] == "ok" and a[1]["tool"] is None
    assert by["a"]["transcript"] == a[0]["text"] + a[0]["observation"] + "\\boxed{42}"
    assert by["b"]["turns"][0]["void"] and by["b"]["n_void_turns"] == 1
    assert by["c"]["loop_answer"] == "1024"
    assert by["d"]["turns"][0]["observation"] == (
        "\nCode execution result: ZeroDivisionError: division by zero\n"
    )
    # the second turn of "a" saw the first turn and its output as context
    second = [c for c in gen.calls[1] if c.startswith("Q: a")][0]
    assert second == "Q: a\n" + a[0]["text"] + a[0]["observation"]
    assert by["a"]["obs_tokens"] == len(a[0]["observation"])  # count_tokens=len
    assert by["e"]["n_tool_calls"] == 3 and by["e"]["gen_tokens"] == 15


def test_metrics_against_hand_counts(sandbox):
    recs, _ = run(sandbox)
    verdicts = score_samples(recs, GOLD, Scorer())
    assert [v["correct"] for v in verdicts] == [True, False, True, False, False]
    m = metrics(recs, verdicts)
    assert m["pass_at_k"] == {"1": pytest.approx(2 / 5)}
    assert m["mean_turns"] == pytest.approx((2 + 1 + 1 + 2 + 3) / 5)
    assert m["tool_usage_rate"] == pytest.approx(4 / 5)  # a, c, d, e ran a cell
    assert m["tool_calls_per_sample"] == pytest.approx((1 + 0 + 1 + 1 + 3) / 5)
    assert m["void_turn_rate"] == pytest.approx(1 / 9)  # one void turn among 9 turns
    assert m["void_sample_rate"] == pytest.approx(1 / 5)
    assert m["answer_rate"] == pytest.approx(3 / 5)  # b and e have no \boxed
    assert m["stop_reasons"] == {"answer": 3, "max_turns": 1, "void": 1}
    assert m["tool_status"] == {"error": 1, "ok": 5}
    secs = [r["gen_seconds"] + r["tool_seconds"] for r in recs]
    assert m["seconds_per_sample"]["mean"] == pytest.approx(sum(secs) / 5)
    assert m["seconds_per_sample"]["max"] == pytest.approx(max(secs))


def test_pass_at_k_over_several_samples(sandbox):
    recs, _ = run(sandbox, n=3)  # scripted: the 3 samples of a problem are identical
    m = metrics(recs, score_samples(recs, GOLD, Scorer()))
    assert m["samples_per_problem"] == 3 and set(m["pass_at_k"]) == {"1", "2", "3"}
    assert all(v == pytest.approx(2 / 5) for v in m["pass_at_k"].values())


def test_tools_off_is_single_turn_and_runs_nothing(sandbox):
    recs, _ = run(sandbox, tools=False)
    by = {r["problem_id"]: r for r in recs}
    assert all(r["n_turns"] == 1 and r["n_tool_calls"] == 0 for r in recs)
    assert by["a"]["stop_reason"] == "no_tools" and by["b"]["stop_reason"] == "void"


def test_scorer_settings_change_the_verdict_not_the_generations(sandbox):
    recs, _ = run(sandbox)
    e = next(r for r in recs if r["problem_id"] == "e")
    assert not score_samples([e], GOLD, Scorer())[0]["correct"]  # no \boxed
    assert score_samples([e], GOLD, Scorer(extraction="boxed_or_last_number"))[0]["correct"]
    d = next(r for r in recs if r["problem_id"] == "d")
    assert not score_samples([d], GOLD, Scorer())[0]["correct"]  # 7 vs 8
    assert score_samples([d], GOLD, Scorer(abs_tol=1.5))[0]["correct"]


def test_answer_parsing():
    assert to_number("\\frac{3}{4}") == 0.75 and to_number("1,234") == 1234
    assert to_number("-3/6") == -0.5 and to_number("50\\%") == 50 and to_number("x+1") is None
    assert Scorer().correct("\\dfrac{1}{2}", "0.5") and not Scorer().correct(None, "1")
    assert Scorer().correct("\\text{(B)}", "(b)")
    assert cut_after_code("no code") == "no code"
    with pytest.raises(ValueError, match="scoring.extraction"):
        Scorer(extraction="last")
