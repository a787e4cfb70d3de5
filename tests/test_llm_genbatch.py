"""ftlab.llm.genbatch and CachedLM's generation batch: the KV-cache estimate against hand-worked
sizes, and which batch size lm-eval's generate_until runs at under each setting."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("lm_eval")

from lm_eval.api.instance import Instance  # noqa: E402

from ftlab.llm import cache as cache_mod  # noqa: E402
from ftlab.llm import genbatch as G  # noqa: E402
from ftlab.llm.cache import CachedLM, SampleCache, aligned_chunk  # noqa: E402
from ftlab.llm.lm_eval_runner import cache_identity  # noqa: E402

# Qwen/Qwen3-1.7B's config.json (the model of seed 003)
QWEN3_17B = SimpleNamespace(num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
                            head_dim=128, hidden_size=2048, intermediate_size=6144,
                            vocab_size=151936)  # fmt: skip


def test_kv_bytes_per_token_by_hand():
    # keys + values x 28 layers x 8 kv heads x 128 dims x 2 bytes (bf16)
    assert G.kv_bytes_per_token(QWEN3_17B, 2) == 2 * 28 * 8 * 128 * 2 == 114_688
    # no head_dim / num_key_value_heads: hidden / heads, multi-head attention
    mha = SimpleNamespace(num_hidden_layers=2, num_attention_heads=4, hidden_size=64)
    assert G.kv_bytes_per_token(mha, 4) == 2 * 2 * 4 * 16 * 4


def test_row_bytes_and_batch_by_hand():
    cfg = SimpleNamespace(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                          head_dim=8, hidden_size=32, intermediate_size=64,
                          vocab_size=100)  # fmt: skip
    kv = 2 * 2 * 2 * 8 * 2 * (10 + 20)  # 30 tokens of bf16 keys and values
    act = 10 * (4 * 32 + 3 * 64) * 2  # one layer's prefill activations over 10 prompt tokens
    scores = 4 * 10 * 10 * 2  # eager attention scores
    logits = 3 * 100 * 4  # last logits, float32, three copies
    per_row = kv + act + scores + logits
    assert G.row_bytes(cfg, 2, 10, 20) == per_row == 3840 + 6400 + 800 + 1200
    assert G.DEFAULT_MEMORY_SHARE == 0.5
    free = 15 * per_row + 1  # half of it holds 7.5 rows
    assert G.generation_batch_size(cfg, 2, 10, 20, free, n_requests=100) == 7
    assert G.generation_batch_size(cfg, 2, 10, 20, free, n_requests=3) == 3  # no padding rows
    assert G.generation_batch_size(cfg, 2, 10, 20, 0, n_requests=3) == 1
    assert G.generation_batch_size(cfg, 2, 10, 20, free, 100, memory_share=0.25) == 3


def test_qwen3_ifeval_on_an_h200_sized_gpu():
    """IFEval's shape (45 prompt tokens, 1,280 new) on seed 003's model: 541 rows need ~82 GB of
    KV cache, so 135 GiB free (an H200) runs them in two batches and 76 GiB (an H100) in three,
    where lm-eval's detection chose 63 (nine batches)."""
    per_row = G.row_bytes(QWEN3_17B, 2, 45, 1280)
    assert 114_688 * 1325 < per_row < 1.05 * 114_688 * 1325  # the KV cache dominates
    b = G.generation_batch_size(QWEN3_17B, 2, 45, 1280, 135 * 2**30, 541)
    assert b == 135 * 2**30 // 2 // per_row and -(-541 // b) == 2
    b = G.generation_batch_size(QWEN3_17B, 2, 45, 1280, 76 * 2**30, 541)
    assert b == 76 * 2**30 // 2 // per_row and -(-541 // b) == 3


class FakeLM:
    """The HFLM attributes CachedLM touches; generate_until records its batch size."""

    def __init__(self, device="cpu", oom_above=None):
        self.batch_size_per_gpu = "auto"
        self.batch_sizes: dict = {}
        self.device = device
        self.detections = 0
        self.seen: list = []
        self.calls: list = []
        self.oom_above = oom_above
        self.rank, self.world_size = 0, 1

    def _detect_batch_size(self):
        self.detections += 1
        return 3

    def generate_until(self, requests, disable_tqdm=False):
        if self.oom_above and self.batch_size_per_gpu > self.oom_above:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        self.seen.append(self.batch_size_per_gpu)
        self.calls.append(len(requests))
        return [r.args[0][::-1] for r in requests]


def gen_requests(n=6):
    return [Instance("generate_until", doc={}, idx=0, metadata=("t", i, 1),
                     arguments=(f"prompt {i:03d}", {"until": [], "max_gen_toks": 16}))
            for i in range(n)]  # fmt: skip


def generate(tmp_path, lm, **kw):
    with SampleCache(tmp_path / "c.sqlite") as c:
        clm = CachedLM(lm, c, "m", **kw)
        out = clm.generate_until(gen_requests())
    assert out == [f"prompt {i:03d}"[::-1] for i in range(6)]
    return clm


def test_fixed_generation_batch_is_used_and_restored(tmp_path):
    lm = FakeLM()
    clm = generate(tmp_path, lm, generation_batch_size=4)
    assert lm.seen == [4] and lm.detections == 0 and lm.batch_size_per_gpu == "auto"
    assert clm.batch_sizes_used == {"generate_until": 4}
    lm = FakeLM()
    lm.batch_size_per_gpu = 8  # a fixed batch_size: the generation one still wins, then back
    generate(tmp_path / "b", lm, generation_batch_size=2)
    assert lm.seen == [2] and lm.batch_size_per_gpu == 8


def test_generation_chunks_hold_whole_batches(tmp_path):
    assert aligned_chunk(512, 63) == 504  # IFEval's 541 at 63: 9 batches, not 10
    assert aligned_chunk(512, 464) == 464
    assert aligned_chunk(512, 541) == 512  # a batch above the chunk: the chunk bounds a kill
    assert aligned_chunk(8, 64) == 8
    for not_a_size in ("auto", None, True, 0):
        assert aligned_chunk(512, not_a_size) == 512
    lm = FakeLM()
    generate(tmp_path, lm, generation_batch_size=2, chunk_size=5)  # 6 requests: 4 + 2, not 5 + 1
    assert lm.calls == [4, 2]


def test_detect_and_cpu_auto_keep_lm_evals_detection(tmp_path):
    for mode in ("detect", "auto"):  # auto on the CPU: no estimate, lm-eval's detection
        lm = FakeLM()
        clm = generate(tmp_path / mode, lm, generation_batch_size=mode)
        assert lm.detections == 1 and lm.seen == [3] and lm.batch_size_per_gpu == "auto"
        assert clm.batch_sizes_used == {"generate_until": 3}


def test_auto_on_a_gpu_uses_the_estimate_and_halves_on_oom(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_mod, "hflm_generation_batch", lambda lm, reqs: 6)
    lm = FakeLM(device="cuda")
    clm = generate(tmp_path / "a", lm)
    assert lm.detections == 0 and lm.seen == [6]
    assert clm.batch_sizes_used == {"generate_until": 6, "generate_until_from": "kv_cache_estimate"}
    lm = FakeLM(device="cuda", oom_above=2)  # 6 and 3 run out of memory, 1 after halving twice
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    clm = generate(tmp_path / "b", lm)
    assert lm.seen == [1] and clm.batch_sizes_used["generate_until"] == 1
    assert lm.batch_size_per_gpu == "auto"
    lm = FakeLM(device="cuda", oom_above=2)  # a fixed size is the user's: its OOM is raised
    with pytest.raises(torch.cuda.OutOfMemoryError):
        generate(tmp_path / "c", lm, generation_batch_size=6)


def test_bad_generation_batch_size_is_named(tmp_path):
    with SampleCache(tmp_path / "c.sqlite") as c:
        for bad in (0, "fast", True, 2.5):
            with pytest.raises(ValueError, match="lm_eval.generation_batch_size"):
                CachedLM(FakeLM(), c, "m", generation_batch_size=bad)


def test_hflm_estimate_reads_the_model_and_the_requests(monkeypatch):
    """The estimate from a model's config, its weights' dtype, the longest prompt in tokens
    (HFLM's left truncation applied) and max_gen_toks, over the free memory reported."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    cfg = Qwen3Config(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=8)  # fmt: skip
    model = Qwen3ForCausalLM(cfg).to(torch.bfloat16)
    lm = SimpleNamespace(model=model, device="cpu", max_length=40, max_gen_toks=256,
                         tok_encode=lambda s: list(s))  # fmt: skip
    reqs = gen_requests()
    assert G.hflm_generation_batch(lm, reqs) is None  # the CPU: lm-eval's detection
    lm.device = "cuda"
    monkeypatch.setattr(G, "free_gpu_bytes", lambda device: 10**6)
    # prompts of 10 characters = 10 tokens, max_gen_toks 16 from the requests
    assert G.hflm_generation_batch(lm, reqs) == G.generation_batch_size(cfg, 2, 10, 16, 10**6, 6)
    long = [Instance("generate_until", doc={}, idx=0, metadata=("t", 0, 1),
                     arguments=("x" * 100, {"until": [], "max_gen_toks": 16}))]  # fmt: skip
    # truncated to max_length - max_gen_toks = 24 prompt tokens
    assert G.hflm_generation_batch(lm, long) == G.generation_batch_size(cfg, 2, 24, 16, 10**6, 1)


def test_cache_identity_keeps_old_keys_at_auto():
    a = cache_identity("h", "hf", {}, "cuda", "auto")
    assert cache_identity("h", "hf", {}, "cuda", "auto", "auto") == a
    assert cache_identity("h", "hf", {}, "cuda", "auto", 64) != a
    assert cache_identity("h", "hf", {}, "cuda", "auto", "detect") != a


def test_estimate_on_a_real_hflm(tmp_path, monkeypatch):
    """lm-eval's HFLM has every attribute the estimate reads (its device set to cuda by hand,
    the free memory reported by hand: no GPU is touched)."""
    from lm_eval.models.huggingface import HFLM

    from ftlab.llm.tiny import build_tiny_causal_lm

    lm = HFLM(pretrained=build_tiny_causal_lm(tmp_path / "m", max_length=64), device="cpu",
              batch_size="auto", max_length=64)  # fmt: skip
    assert G.hflm_generation_batch(lm, gen_requests()) is None
    context = max(len(lm.tok_encode(r.args[0])) for r in gen_requests())
    per_row = G.row_bytes(lm.model.config, 4, context, 16)  # float32 weights, max_gen_toks 16
    monkeypatch.setattr(lm, "_device", torch.device("cuda"))
    monkeypatch.setattr(G, "free_gpu_bytes", lambda device: 5 * per_row)  # half: 2.5 rows
    assert G.hflm_generation_batch(lm, gen_requests()) == 2


def _tiny_hflm():
    """A 2-layer random Qwen3 behind lm-eval's HFLM, with the project's character tokenizer."""
    from lm_eval.models.huggingface import HFLM
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from ftlab.llm.tiny import build_tiny_tokenizer

    tok = build_tiny_tokenizer(model_max_length=256)
    cfg = Qwen3Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      head_dim=8, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)  # fmt: skip
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(cfg).eval()
    return HFLM(pretrained=model, tokenizer=tok, batch_size=3, device="cpu", max_length=256)


def _kv_caches_seen(model) -> list[str]:
    """Class names of the KV caches the model's forward passes receive."""
    seen = []
    model.register_forward_pre_hook(
        lambda mod, args, kwargs: seen.append(type(kwargs.get("past_key_values")).__name__),
        with_kwargs=True,
    )
    return seen


def test_static_generation_cache_is_used_and_gives_the_same_answers(tmp_path):
    """generation_cache static: HF generate decodes with a StaticCache (checked on the
    forward passes), greedy answers equal the dynamic cache's, and the model's generation
    config is restored after."""
    lm = _tiny_hflm()
    seen = _kv_caches_seen(lm.model)
    reqs = [Instance("generate_until", doc={}, idx=0, metadata=("t", i, 1),
                     arguments=("abc " * (i + 1), {"until": ["zz"], "max_gen_toks": 12}))
            for i in range(5)]  # fmt: skip
    answers = {}
    for mode in ("dynamic", "static"):
        seen.clear()
        with SampleCache(tmp_path / f"{mode}.sqlite") as c:
            answers[mode] = CachedLM(lm, c, mode, generation_cache=mode).generate_until(reqs)
        assert set(seen) == {"StaticCache" if mode == "static" else "DynamicCache"}, seen
        assert lm.model.generation_config.cache_implementation is None
    assert answers["static"] == answers["dynamic"]
    assert any(answers["static"])  # some text was generated: the comparison means something


def test_generation_cache_errors_name_the_key(tmp_path):
    with SampleCache(tmp_path / "c.sqlite") as c:
        with pytest.raises(ValueError, match="lm_eval.generation_cache: 'fast'"):
            CachedLM(FakeLM(), c, "m", generation_cache="fast")
        clm = CachedLM(FakeLM(), c, "m", generation_cache="static")  # no HF model to set
        with pytest.raises(ValueError, match="lm_eval.generation_cache: 'static' needs the hf"):
            clm.generate_until(gen_requests())
    from ftlab.llm.lm_eval_runner import run_lm_eval

    with pytest.raises(ValueError, match="generation_cache: 'static' needs backend 'hf'"):
        run_lm_eval(model="unused", benchmarks={"t": "acc"}, out_json="x", samples_path="y",
                    cache_path="z", backend="vllm", generation_cache="static")  # fmt: skip


def test_cache_identity_names_a_static_generation_cache():
    a = cache_identity("h", "hf", {}, "cuda", "auto")
    assert cache_identity("h", "hf", {}, "cuda", "auto", "auto", "dynamic") == a
    assert cache_identity("h", "hf", {}, "cuda", "auto", "auto", "static") != a
