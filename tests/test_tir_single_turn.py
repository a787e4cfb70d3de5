"""The single-turn (tools off) baseline as SimpleTIR runs it with tool_use False: the model
generates once (generate_sequences, no agent loop), the reply is neither stopped nor cut at a
code block, and it is scored whole."""

import pytest

from ftlab.io import read_jsonl
from ftlab.tir.rollout import Generated, run_rollouts
from ftlab.tir.sandbox import Sandbox, SandboxLimits
from ftlab.tir.scoring import Scorer, score_samples

REPLY = "Let me check.\n```python\nprint(2 + 2)\n```\nSo the answer is \\boxed{4}."


def rollout(reply: str, tools: bool, sandbox=None) -> dict:
    calls = []

    def gen(contexts):
        calls.append(contexts)
        return [Generated(reply if len(calls) == 1 else "\\boxed{5}", 7) for _ in contexts]

    [t] = run_rollouts([{"id": "p", "prompt": "P\n"}], 1, gen, sandbox, max_turns=3 if tools else 1,
                       tools=tools, count_tokens=len)  # fmt: skip
    return t.to_record()


def test_a_tools_off_reply_is_kept_whole_and_scores_its_answer():
    rec = rollout(REPLY, tools=False)
    [turn] = rec["turns"]
    assert turn["text"] == REPLY and rec["transcript"] == REPLY
    assert turn["tool"] is None and rec["n_tool_calls"] == 0
    assert rec["stop_reason"] == "answer" and rec["loop_answer"] == "4"
    for scorer in (Scorer(), Scorer(grader="ftlab")):  # SimpleTIR's grader and ftlab's
        [verdict] = score_samples([rec], {"p": "4"}, scorer)
        assert verdict["correct"], scorer
    [wrong] = score_samples([rec], {"p": "5"}, Scorer())
    assert not wrong["correct"]


def test_with_tools_on_the_same_reply_is_cut_after_its_block():
    # the contrast: the agent loop drops the text after the block; the answer comes later
    rec = rollout(REPLY, tools=True, sandbox=Sandbox(SandboxLimits(wall_seconds=10)))
    assert rec["turns"][0]["text"] == "Let me check.```python\nprint(2 + 2)\n```"
    assert rec["turns"][0]["tool"]["stdout"] == "4\n"
    assert rec["n_turns"] == 2 and rec["loop_answer"] == "5"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from ftlab.llm.tiny import build_tiny_causal_lm

    return build_tiny_causal_lm(tmp_path_factory.mktemp("m"), seed=0, hidden=32, max_length=128)


@pytest.mark.parametrize("stop_at_code", [True, False])
def test_hf_stops_at_a_code_block_only_with_tools_on(tiny_model, stop_at_code, monkeypatch):
    from ftlab.tir.generation import HFTurnGenerator, _StopOnToolCall

    gen = HFTurnGenerator(tiny_model, max_new_tokens=4, temperature=1.0, device="cpu",
                          stop_at_code=stop_at_code)  # fmt: skip
    seen = []
    real = gen.model.generate

    def generate(*args, stopping_criteria=None, **kwargs):
        seen.append(list(stopping_criteria or []))
        return real(*args, stopping_criteria=stopping_criteria, **kwargs)

    monkeypatch.setattr(gen.model, "generate", generate)
    [reply] = gen(["Q: 1\n"])
    assert reply.n_tokens <= 4
    assert [type(c) for c in seen[0]] == ([_StopOnToolCall] if stop_at_code else [])


def test_the_generate_step_asks_for_the_stop_rule_of_its_sampling(tmp_path, monkeypatch):
    """steps.generate passes stop_at_code = the sampling's tools (and the sampling's
    max_prompt_tokens) to the generator."""
    import ftlab.tir.generation as generation
    from ftlab.io import write_jsonl
    from ftlab.tir import steps

    asked = []

    def make_generator(backend, model_path, **kwargs):
        asked.append((kwargs["stop_at_code"], kwargs["max_prompt_tokens"]))

        class Gen:
            def reseed(self, seed):
                pass

            def count_tokens(self, text):
                return len(text)

            def __call__(self, contexts):
                return [Generated(REPLY, 7) for _ in contexts]

        return Gen()

    monkeypatch.setattr(generation, "make_generator", make_generator)
    monkeypatch.setattr("ftlab.llm.fingerprint.model_fingerprint", lambda path: "m")
    rows = tmp_path / "rows.jsonl"
    write_jsonl(rows, [{"id": "p", "question": "2+2", "answer": "4"}])
    sampling = {"n": 1, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 8, "max_turns": 1,
                "max_context_tokens": None, "max_prompt_tokens": 1000, "tools": False}  # fmt: skip
    out = tmp_path / "generations.jsonl"
    steps.generate("m", str(rows), sampling, prompt_template="{question}", backend="hf",
                   batch_size=4, seed=0, sandbox={}, out_generations=str(out),
                   out_info=str(tmp_path / "info.json"))  # fmt: skip
    assert asked == [(False, 1000)]
    [rec] = read_jsonl(out)
    assert rec["transcript"] == REPLY
