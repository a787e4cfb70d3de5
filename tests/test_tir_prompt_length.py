"""max_prompt_tokens: a turn's model input is the end of a context longer than the limit, as
SimpleTIR's _update_rolling_state keeps input_ids[:, -max_prompt_length:] every turn (HF
generate, vLLM in evaluation, and the GRPO rollouts' vLLM engine); shorter contexts are
untouched."""

import sys
import types

import pytest

from ftlab.tir.train import _policy_generator


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from ftlab.llm.tiny import build_tiny_causal_lm

    return build_tiny_causal_lm(tmp_path_factory.mktemp("m"), seed=0, hidden=32, max_length=256)


def _inputs_seen(gen, monkeypatch) -> list:
    seen = []
    real = gen.model.generate

    def generate(*args, **kwargs):
        mask = kwargs["attention_mask"].bool()
        seen.append([row[m].tolist() for row, m in zip(kwargs["input_ids"], mask, strict=True)])
        return real(*args, **kwargs)

    monkeypatch.setattr(gen.model, "generate", generate)
    return seen


@pytest.mark.parametrize("limit", [None, 12])
def test_hf_keeps_the_end_of_a_long_context(tiny_model, limit, monkeypatch):
    from ftlab.tir.generation import HFTurnGenerator

    gen = HFTurnGenerator(tiny_model, max_new_tokens=2, temperature=1.0, device="cpu",
                          max_prompt_tokens=limit)  # fmt: skip
    seen = _inputs_seen(gen, monkeypatch)
    long, short = "Q: 123*45\n" + "x" * 30 + "END", "Q: 1\n"
    gen([long, short])
    ids = {c: gen.tok(c)["input_ids"] for c in (long, short)}
    bos, body = ids[long][0], ids[long][1:]  # the tiny tokenizer adds a BOS, which stays
    want_long = ids[long] if limit is None else [bos] + body[-(limit - 1) :]
    assert seen == [[want_long, ids[short]]]
    if limit:
        assert len(want_long) == limit and gen.tok.decode(want_long[1:]).endswith("xxEND")
    assert gen.tok.truncation_side == "right"  # restored


class _Tok:
    """A tokenizer with one id per character and a BOS (as the tiny one), HF's truncation API."""

    truncation_side = "right"

    def __call__(self, text, add_special_tokens=True, truncation=False, max_length=None):
        ids = [ord(ch) for ch in text]
        if truncation and len(ids) + 1 > max_length:
            keep = max_length - 1
            ids = ids[-keep:] if self.truncation_side == "left" else ids[:keep]
        return {"input_ids": ([1] if add_special_tokens else []) + ids}


def test_vllm_gets_the_end_of_a_long_context_as_token_ids(monkeypatch):
    seen = []

    class LLM:
        def __init__(self, **kw):
            pass

        def get_tokenizer(self):
            return _Tok()

        def generate(self, prompts, params, use_tqdm=False):
            seen.append(prompts)
            out = types.SimpleNamespace(text="x", token_ids=[1])
            return [types.SimpleNamespace(outputs=[out]) for _ in prompts]

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(
        LLM=LLM, SamplingParams=lambda **kw: kw))  # fmt: skip
    from ftlab.tir.generation import VLLMTurnGenerator

    gen = VLLMTurnGenerator("m", max_new_tokens=4, temperature=1.0, max_prompt_tokens=6)
    gen(["abcdefghij", "abcd"])
    # 10 characters + BOS > 6: BOS + the last 5; "abcd" + BOS fits and goes as text
    assert seen == [[{"prompt_token_ids": [1, *map(ord, "fghij")]}, "abcd"]]
    assert gen.tok.truncation_side == "right"
    whole = VLLMTurnGenerator("m", max_new_tokens=4, temperature=1.0, max_prompt_tokens=None)
    whole(["abcdefghij"])
    assert seen[-1] == ["abcdefghij"]


def test_grpo_vllm_rollouts_keep_the_end_of_a_long_context():
    from tests.test_tir_grpo_config import _recipe

    seen = []

    class Engine:
        max_completion_length = 8000

        def generate(self, ids, images, n):
            seen.append(ids)
            return ids, [[7]] * len(ids), None, None

    class Trainer:
        use_vllm = True
        vllm_generation = Engine()

        class processing_class(_Tok):
            @staticmethod
            def batch_decode(ids, skip_special_tokens=True):
                return ["a" for _ in ids]

        processing_class = processing_class()

    _policy_generator(Trainer(), _recipe(max_prompt_tokens=4))(["abcdefg", "ab"])
    assert seen == [[list(map(ord, "defg")), list(map(ord, "ab"))]]  # no specials here
