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
FTLAB = Scorer(grader="ftlab")  # the hand counts below are the ftlab grader's


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
    # stdout as printed (its newline kept), SimpleTIR agent_utils.py execute_predictions
    assert a[0]["text"] == "Let me compute.```python\nprint(6*7)\n```"
    assert a[0]["observation"] == "\nCode execution result: 42\n\n"
    assert a[0]["tool"]["status"] == "ok" and a[1]["tool"] is None
    assert by["a"]["transcript"] == a[0]["text"] + a[0]["observation"] + "\\boxed{42}"
    assert by["b"]["turns"][0]["void"] and by["b"]["n_void_turns"] == 1
    assert by["b"]["turns"][0]["observation"] == "\n"  # SimpleTIR no_tool_prompt
    # e: code every turn; step 1 = max_turns - 2 gets final_prompt "\n", the last step's
    # observation is not appended although its cell ran
    assert [t["observation"] for t in by["e"]["turns"]] == [
        "\nCode execution result: 1\n\n", "\nCode execution result: 1\n\n\n", ""
    ]  # fmt: skip
    assert by["c"]["loop_answer"] == "1024"
    assert by["d"]["turns"][0]["observation"] == (
        "\nCode execution result: ZeroDivisionError: division by zero\n"
    )
    # the second turn of "a" saw the first turn and its output as context
    second = [c for c in gen.calls[1] if c.startswith("Q: a")][0]
    assert second == "Q: a\n" + a[0]["text"] + a[0]["observation"]
    assert by["a"]["obs_tokens"] == len(a[0]["observation"])  # count_tokens=len
    assert by["b"]["obs_tokens"] == 1
    assert by["e"]["n_tool_calls"] == 3 and by["e"]["gen_tokens"] == 15


def test_metrics_against_hand_counts(sandbox):
    recs, _ = run(sandbox)
    verdicts = score_samples(recs, GOLD, FTLAB)
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
    m = metrics(recs, score_samples(recs, GOLD, FTLAB))
    assert m["samples_per_problem"] == 3 and set(m["pass_at_k"]) == {"1", "2", "3"}
    assert all(v == pytest.approx(2 / 5) for v in m["pass_at_k"].values())


def test_tools_off_is_single_turn_and_runs_nothing(sandbox):
    recs, _ = run(sandbox, tools=False)
    by = {r["problem_id"]: r for r in recs}
    assert all(r["n_turns"] == 1 and r["n_tool_calls"] == 0 for r in recs)
    # b answers in prose without \boxed: the agent loop's void turn, not SimpleTIR's tool_use
    # False path, which masks nothing (mask_void_turns would drop it from GRPO's loss)
    assert by["a"]["stop_reason"] == "no_tools" and by["b"]["stop_reason"] == "no_tools"
    assert not any(t["void"] for r in recs for t in r["turns"]) and by["b"]["n_void_turns"] == 0


def test_scorer_settings_change_the_verdict_not_the_generations(sandbox):
    recs, _ = run(sandbox)
    e = next(r for r in recs if r["problem_id"] == "e")
    assert not score_samples([e], GOLD, FTLAB)[0]["correct"]  # no \boxed
    last_number = Scorer(grader="ftlab", extraction="boxed_or_last_number")
    assert score_samples([e], GOLD, last_number)[0]["correct"]
    assert score_samples([e], GOLD, Scorer())[0]["correct"]  # simpletir: the last number
    d = next(r for r in recs if r["problem_id"] == "d")
    assert not score_samples([d], GOLD, FTLAB)[0]["correct"]  # 7 vs 8
    assert score_samples([d], GOLD, Scorer(grader="ftlab", abs_tol=1.5))[0]["correct"]


def test_answer_parsing():
    assert to_number("\\frac{3}{4}") == 0.75 and to_number("1,234") == 1234
    assert to_number("-3/6") == -0.5 and to_number("50\\%") == 50 and to_number("x+1") is None
    assert FTLAB.correct("\\dfrac{1}{2}", "0.5") and not FTLAB.correct(None, "1")
    assert FTLAB.correct("\\text{(B)}", "(b)")
    assert cut_after_code("no code") == "no code"
    with pytest.raises(ValueError, match="scoring.extraction"):
        Scorer(extraction="last")


# --- SimpleTIR's loop (recipe/simpletir/agent_utils.py run_llm_loop / execute_predictions at
# ltzheng/SimpleTIR e7b5b44), hand-worked transcripts -------------------------------------


class ByTurn:
    """The same list of replies for every context, by turn (the number of calls so far)."""

    def __init__(self, replies):
        self.replies, self.calls = replies, []

    def __call__(self, contexts):
        self.calls.append(list(contexts))
        return [Generated(self.replies[len(self.calls) - 1], 3) for _ in contexts]


def one(sandbox, replies, max_turns=3, tools=True):
    gen = ByTurn(replies)
    [traj] = run_rollouts([{"id": "p", "prompt": "P\n"}], 1, gen, sandbox,
                          max_turns=max_turns, tools=tools, count_tokens=len)  # fmt: skip
    return traj.to_record(), gen


def test_cut_is_stripped_text_then_the_block():
    # _postprocess_responses: preceding_text.strip() + code_block.strip()
    reply = "  Think first.  \n\n```python\nprint(1)\n```\nthe rest\n```python\nprint(2)\n```"
    assert cut_after_code(reply) == "Think first.```python\nprint(1)\n```"
    assert cut_after_code("```py\nx = 1\n```") == "```py\nx = 1\n```"
    assert cut_after_code("  no code  ") == "  no code  "  # no block: left as generated


def test_answer_and_code_in_one_reply_runs_the_code(sandbox):
    rec, gen = one(sandbox, ["So \\boxed{4}. Check:\n```python\nprint(2+2)\n```\nmore"])
    [turn] = rec["turns"]
    assert turn["text"] == "So \\boxed{4}. Check:```python\nprint(2+2)\n```"
    assert turn["tool"]["status"] == "ok" and turn["tool"]["stdout"] == "4\n"
    assert turn["observation"] == "\nCode execution result: 4\n\n"
    assert rec["stop_reason"] == "answer" and rec["loop_answer"] == "4" and len(gen.calls) == 1


def test_boxed_inside_code_ends_the_trajectory_and_the_cell_runs(sandbox):
    rec, _ = one(sandbox, ["```python\nx = 2\nprint(f'\\\\boxed{{{x}}}')\n```"])
    [turn] = rec["turns"]
    assert turn["tool"]["stdout"] == "\\boxed{2}\n"
    assert rec["stop_reason"] == "answer" and rec["loop_answer"] == "2"
    assert turn["observation"] == "\nCode execution result: \\boxed{2}\n\n"


def test_final_answer_helper_prints_the_boxed_answer(sandbox):
    rec, _ = one(sandbox, ["Done.\n```py\nfinal_answer(6 * 7)\n```"])
    assert rec["turns"][0]["tool"]["stdout"] == "\\boxed{42}\n"
    assert rec["stop_reason"] == "answer" and rec["loop_answer"] == "42"


def test_last_turn_observation_is_not_appended(sandbox):
    # max_turns 2: step 0 = max_turns - 2 gets final_prompt, step 1 is the last
    rec, gen = one(sandbox, ["```python\nprint(1)\n```", "```python\nprint(2)\n```"], 2)
    assert [t["observation"] for t in rec["turns"]] == ["\nCode execution result: 1\n\n\n", ""]
    assert rec["turns"][1]["tool"]["stdout"] == "2\n"  # the cell still ran
    assert rec["stop_reason"] == "max_turns"
    assert rec["transcript"] == (
        "```python\nprint(1)\n```\nCode execution result: 1\n\n\n```python\nprint(2)\n```"
    )
    assert gen.calls[1] == ["P\n```python\nprint(1)\n```\nCode execution result: 1\n\n\n"]


def test_observation_rules(sandbox):
    # stderr replaces stdout even when the cell succeeds; its last line only
    code = "import sys\nprint('out')\nsys.stderr.write('warn 1\\nwarn 2\\n')"
    rec, _ = one(sandbox, [f"```python\n{code}\n```", "\\boxed{1}"])
    assert rec["turns"][0]["tool"]["status"] == "ok"
    assert rec["turns"][0]["observation"] == "\nCode execution result: warn 2\n"
    # neither stdout nor stderr: no observation at all
    rec, _ = one(sandbox, ["```python\nx = 1\n```", "\\boxed{1}"])
    assert rec["turns"][0]["observation"] == ""
    # an error: the traceback's last line
    rec, _ = one(sandbox, ["```python\nprint('a')\nraise ValueError('bad')\n```", "\\boxed{1}"])
    assert rec["turns"][0]["observation"] == "\nCode execution result: ValueError: bad\n"


def _truncate_content(content, max_length):
    # SimpleTIR recipe/simpletir/agent_utils.py truncate_content, for comparison
    if len(content) <= max_length:
        return content
    return (
        content[: max_length // 2]
        + f"\n..._This content has been truncated to stay below {max_length} characters_...\n"
        + content[-max_length // 2 :]
    )


def test_long_output_is_truncated_as_simpletir_does():
    from ftlab.tir.sandbox import truncate

    marker = "\n..._This content has been truncated to stay below 512 characters_...\n"
    text = "".join(str(i % 10) for i in range(600))
    assert truncate(text, 512) == text[:256] + marker + text[-256:] == _truncate_content(text, 512)
    # odd limit: head 511 // 2 = 255, tail (-511) // 2 = -256 characters
    odd = truncate(text, 511)
    assert odd.startswith(text[:255] + "\n") and odd.endswith("\n" + text[-256:])
    assert odd == _truncate_content(text, 511)
    box = Sandbox(SandboxLimits(max_output_chars=512, wall_seconds=10))
    out = box.run("print(''.join(str(i % 10) for i in range(600)))").stdout
    assert out == _truncate_content(text + "\n", 512)
    err = box.run("raise ValueError('x' * 1000)")
    assert err.stderr_last_line == _truncate_content("ValueError: " + "x" * 1000, 512)


def test_hf_stops_at_a_closed_code_block_not_at_an_answer():
    # SimpleTIR (and the vLLM backend) generate on to EOS / budget after a \boxed{}; only a
    # closed code block ends an HF reply early (the loop cuts there anyway)
    import torch

    from ftlab.tir.generation import _StopOnToolCall

    texts = ["So \\boxed{4}. Check:", "```python\nprint(1)\n```", "```python\nprint(1)", "x"]

    class Tok:
        def batch_decode(self, ids, skip_special_tokens=True):
            assert ids.shape == (4, 2)  # the new tokens only
            return texts

    stop = _StopOnToolCall(Tok(), prompt_len=3)
    got = stop(torch.zeros((4, 5), dtype=torch.long), None)
    assert got.tolist() == [False, True, False, False]
