"""Checkpoints saved in bf16, the delete-weights-after-evaluation policy, the resumable teacher
shards and the per-checkpoint cache identity (dtype, backend, model arguments)."""

import json

import pytest
import torch
from safetensors.torch import load_file

from ftlab.io import checkpoint_sha256
from ftlab.llm import data, teacher, weights
from ftlab.llm.lm_eval_runner import cache_identity
from ftlab.llm.steps import evaluate_point
from ftlab.llm.tiny import build_tiny_causal_lm


@pytest.fixture
def ckpt(tmp_path):
    return build_tiny_causal_lm(tmp_path / "m", seed=0, layers=1, hidden=16, heads=2)


def test_cast_to_bf16_halves_the_weights_and_is_idempotent(ckpt):
    from pathlib import Path

    (st,) = Path(ckpt).glob("*.safetensors")
    before = load_file(str(st))
    size = st.stat().st_size
    assert weights.cast_checkpoint(ckpt, "bfloat16") is True
    after = load_file(str(st))
    for name, t in before.items():
        if t.is_floating_point():
            assert after[name].dtype == torch.bfloat16
            assert torch.equal(after[name], t.to(torch.bfloat16))  # a cast, nothing else
    assert st.stat().st_size < 0.6 * size
    assert json.loads((Path(ckpt) / "config.json").read_text())["dtype"] == "bfloat16"
    assert weights.cast_checkpoint(ckpt, "bfloat16") is False  # re-run after a kill: no-op
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(ckpt)
    assert next(model.parameters()).dtype == torch.bfloat16


def test_delete_weights_keeps_identity_and_refuses_re_evaluation(ckpt, tmp_path):
    from pathlib import Path

    sha = checkpoint_sha256(ckpt)
    record = weights.delete_weights(ckpt, "evaluated")
    assert record["checkpoint_sha256"] == sha and record["files"]
    assert weights.weight_files(ckpt) == []
    assert (Path(ckpt) / "config.json").exists() and weights.weights_deleted(ckpt) == record
    assert weights.delete_weights(ckpt, "again") == record  # idempotent
    with pytest.raises(FileNotFoundError, match=r"weights were deleted .*\(llm.delete_weights\)"):
        evaluate_point(model_name="r", step=1, model_path=str(ckpt), test_rows={}, formats={},
                       benchmarks={}, lm_eval={}, in_domain={}, outputs={},
                       cache_path=str(tmp_path / "c.sqlite"), study="t")  # fmt: skip


def test_cache_identity_separates_dtype_backend_args_device_and_batch():
    h = "abc"
    args = [("hf", {}, "cpu", "auto"), ("hf", {"dtype": "bfloat16"}, "cpu", "auto"),
            ("hf", {"dtype": "float32"}, "cpu", "auto"), ("vllm", {}, "cpu", "auto"),
            ("hf", {"max_length": 2048}, "cpu", "auto"), ("hf", {}, "cuda", "auto"),
            ("hf", {}, "cpu", 8), ("hf", {}, "cpu", 16)]  # fmt: skip
    ids = {cache_identity(h, *a) for a in args}
    assert len(ids) == len(args) and all(i.startswith(h + "-") for i in ids)
    # the device's type, not its index: cuda:0 and cuda:1 share answers
    assert cache_identity(h, "hf", {}, "cuda:0", 8) == cache_identity(h, "hf", {}, "cuda:1", 8)
    assert cache_identity(h, "hf", {}, "cuda", 8) == cache_identity(h, "hf", {}, "cuda:0", "8")


def test_teacher_resumes_from_finished_shards(tmp_path):
    rows = data.load_rows(data.write_fixtures(tmp_path / "fx", n_train=10, n_test=2)["gsm8k"],
                          "gsm8k")  # fmt: skip
    rows_path = tmp_path / "rows.jsonl"
    data.write_jsonl(rows_path, rows)
    calls = []

    def answer(prompts, n):  # a perfect teacher that counts what it is asked
        calls.append(len(prompts))
        by_prompt = {data.prompt_for(r, "reasoning"): r for r in rows}
        return [[f"<reasoning>x</reasoning>\n<answer>{by_prompt[p]['answer']}</answer>"] * n
                for p in prompts]  # fmt: skip

    def crash_after_two(prompts, n):
        if len(calls) == 2:
            raise RuntimeError("time limit")
        return answer(prompts, n)

    kw = dict(teacher_model="t", rows_path=str(rows_path), fmt="gsm8k", max_new_tokens=8,
              batch_size=4, shard_size=4, shards_dir=str(tmp_path / "shards"))  # fmt: skip
    out, rep = str(tmp_path / "sft.jsonl"), str(tmp_path / "rep.json")
    with pytest.raises(RuntimeError, match="time limit"):
        teacher.generate_trajectories(out_path=out, report_path=rep, generate=crash_after_two, **kw)
    assert calls == [4, 4] and len(list((tmp_path / "shards").iterdir())) == 2
    report = teacher.generate_trajectories(out_path=out, report_path=rep, generate=answer, **kw)
    assert calls == [4, 4, 2]  # only the third shard (2 questions) was generated again
    assert report["shards"] == 3 and report["shards_resumed"] == 2 and report["n_kept"] == 10
    # A changed setting never reuses a shard.
    teacher.generate_trajectories(out_path=out, report_path=rep, generate=answer,
                                  **{**kw, "max_new_tokens": 9})  # fmt: skip
    assert calls == [4, 4, 2, 4, 4, 2]


def test_teacher_shards_are_keyed_by_backend_and_local_teacher_content(tmp_path, monkeypatch):
    """auto may choose vLLM on one run and HF on its resume, and a local teacher folder may be
    replaced under the same path: either way no shard is reused."""
    rows = data.load_rows(data.write_fixtures(tmp_path / "fx", n_train=4, n_test=2)["gsm8k"],
                          "gsm8k")  # fmt: skip
    rows_path = tmp_path / "rows.jsonl"
    data.write_jsonl(rows_path, rows)
    model = build_tiny_causal_lm(tmp_path / "teacher", seed=0, layers=1, hidden=16, heads=2)
    calls = []

    def builder(name):
        def build(*args, **kwargs):
            def generate(prompts, n):
                calls.append(name)
                return [["<reasoning>x</reasoning><answer>0</answer>"] * n for _ in prompts]

            return generate

        return build

    monkeypatch.setattr(teacher, "hf_generator", builder("hf"))
    monkeypatch.setattr(teacher, "vllm_generator", builder("vllm"))
    kw = dict(teacher_model=str(model), rows_path=str(rows_path), fmt="gsm8k",
              max_new_tokens=8, batch_size=4, shard_size=4, shards_dir=str(tmp_path / "shards"),
              out_path=str(tmp_path / "sft.jsonl"),
              report_path=str(tmp_path / "rep.json"))  # fmt: skip
    backend = {"now": "vllm"}
    monkeypatch.setattr(teacher, "choose_backend", lambda b: backend["now"])
    teacher.generate_trajectories(backend="auto", **kw)
    teacher.generate_trajectories(backend="auto", **kw)  # same backend: resumed
    assert calls == ["vllm"]
    backend["now"] = "hf"  # auto picks HF on the resume: generated again
    rep = teacher.generate_trajectories(backend="auto", **kw)
    assert calls == ["vllm", "hf"] and rep["shards_resumed"] == 0
    teacher.generate_trajectories(backend="auto", **kw)
    assert calls == ["vllm", "hf"]
    # the same path, other weights: generated again
    before = checkpoint_sha256(model)
    build_tiny_causal_lm(tmp_path / "teacher", seed=1, layers=1, hidden=16, heads=2)
    assert checkpoint_sha256(model) != before
    rep = teacher.generate_trajectories(backend="auto", **kw)
    assert calls == ["vllm", "hf", "hf"] and rep["shards_resumed"] == 0
