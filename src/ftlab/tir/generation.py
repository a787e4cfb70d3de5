"""Turn generators for the rollout loop: HF generate (CPU or GPU) and vLLM (GPU, if installed).

Both take full contexts (prompt + transcript) and return one reply per context, generated to
EOS or the token budget, or - HF only, tools on (stop_at_code) - stopped as soon as it closed a
code block (a stopping criterion that reads the decoded text). vLLM generates past the block
and the loop cuts the reply after it, so both give the same transcript: the loop drops
everything after the first code block. With tools off neither stops nor cuts at a code block
(SimpleTIR's tool_use False generates plainly). A closed \\boxed{...} stops neither.
`backend: auto` picks vLLM when it is installed and a GPU is visible, else HF.

`max_prompt_tokens` (SimpleTIR's max_prompt_length, agent_utils.py _update_rolling_state): a
context longer than that many tokens is cut to its last max_prompt_tokens tokens before the
model sees it (the prompt's start goes first; special tokens the tokenizer adds, a BOS, stay -
Qwen2.5 adds none); None keeps every context whole.
"""

from __future__ import annotations

import importlib.util
import logging

from ftlab.tir.rollout import Generated, stop_reply

log = logging.getLogger("ftlab.tir.generation")


def pick_backend(backend: str) -> str:
    if backend not in ("auto", "hf", "vllm"):
        raise ValueError(f"generation backend must be auto, hf or vllm, not {backend!r}")
    if backend != "auto":
        return backend
    import torch

    has_vllm = importlib.util.find_spec("vllm") is not None
    return "vllm" if has_vllm and torch.cuda.is_available() else "hf"


class _StopOnToolCall:
    """transformers StoppingCriteria: a row is done once its new text closed a code block."""

    def __init__(self, tokenizer, prompt_len: int):
        self.tok, self.prompt_len = tokenizer, prompt_len

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        new = self.tok.batch_decode(input_ids[:, self.prompt_len :], skip_special_tokens=True)
        return torch.tensor([stop_reply(t) for t in new], device=input_ids.device)


def sampling_kwargs(temperature: float, top_p: float) -> dict:
    return {"do_sample": False} if temperature <= 0 else {
        "do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0,
    }  # fmt: skip


def hf_generate(
    model, tok, contexts: list[str], *, max_new_tokens: int, temperature: float, top_p: float,
    add_special_tokens: bool = True, stop_at_code: bool = True,
    max_prompt_tokens: int | None = None,
) -> tuple[list[list[int]], list[list[int]]]:  # fmt: skip
    """(context ids, reply ids) per context; left-padded batch; a row stops at a closed code
    block when `stop_at_code` (tools on), else at EOS or the token budget only; a context keeps
    its last `max_prompt_tokens` tokens."""
    import torch
    from transformers import GenerationConfig, StoppingCriteriaList

    side = tok.truncation_side
    tok.truncation_side = "left"  # keep the end of a long context (SimpleTIR: ids[-max_len:])
    try:
        enc = tok(
            contexts, return_tensors="pt", padding=True, add_special_tokens=add_special_tokens,
            truncation=max_prompt_tokens is not None, max_length=max_prompt_tokens,
        )  # fmt: skip
    finally:
        tok.truncation_side = side
    enc = enc.to(model.device)
    eos = model.generation_config.eos_token_id or tok.eos_token_id
    cfg = GenerationConfig(
        max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id, eos_token_id=eos,
        use_cache=True, **sampling_kwargs(temperature, top_p),
    )  # fmt: skip
    width = enc["input_ids"].shape[1]
    stop = StoppingCriteriaList([_StopOnToolCall(tok, width)] if stop_at_code else [])
    with torch.inference_mode():
        out = model.generate(**enc, generation_config=cfg, stopping_criteria=stop)
    pad, eos_ids = tok.pad_token_id, set(eos if isinstance(eos, list) else [eos])
    ctx_ids, reply_ids = [], []
    for i in range(len(contexts)):
        mask = enc["attention_mask"][i].bool()
        ctx_ids.append(enc["input_ids"][i][mask].tolist())
        ids = out[i, width:].tolist()
        n = len(ids)
        while ids and ids[-1] == pad:  # right padding of rows that stopped early
            ids.pop()
        if pad in eos_ids and len(ids) < n:  # pad doubles as eos: the row ended with it
            ids.append(pad)
        reply_ids.append(ids)
    return ctx_ids, reply_ids


class HFTurnGenerator:
    """HF transformers generation; `chat`: the prompt is already chat-formatted text;
    `stop_at_code`: stop a reply at a closed code block (tools on)."""

    def __init__(self, model_path: str, *, max_new_tokens: int, temperature: float,
                 top_p: float = 1.0, device: str | None = None, seed: int = 0,
                 gpus: int = 1, stop_at_code: bool = True,
                 max_prompt_tokens: int | None = None):  # fmt: skip
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        self.tok = AutoTokenizer.from_pretrained(model_path, padding_side="left")
        if self.tok.pad_token_id is None:
            self.tok.pad_token = self.tok.eos_token
        if gpus > 1 and self.device.startswith("cuda"):  # one model over the job's GPUs
            self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype,
                                                              device_map="auto")  # fmt: skip
            self.device = str(self.model.device)
        else:
            self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
            self.model.to(self.device)
        self.model.eval()
        self.max_new_tokens, self.temperature, self.top_p = max_new_tokens, temperature, top_p
        self.stop_at_code, self.max_prompt_tokens = stop_at_code, max_prompt_tokens
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        """Sample from here on as a fresh run with this seed (torch's global generator, which
        HF generate draws from): each shard of an evaluation starts with its own seed."""
        import torch

        torch.manual_seed(seed)

    def count_tokens(self, text: str) -> int:
        return len(self.tok(text, add_special_tokens=False)["input_ids"])

    def __call__(self, contexts: list[str]) -> list[Generated]:
        _, replies = hf_generate(
            self.model, self.tok, contexts, max_new_tokens=self.max_new_tokens,
            temperature=self.temperature, top_p=self.top_p, stop_at_code=self.stop_at_code,
            max_prompt_tokens=self.max_prompt_tokens,
        )  # fmt: skip
        texts = self.tok.batch_decode(replies, skip_special_tokens=True)
        return [Generated(t, len(r)) for t, r in zip(texts, replies, strict=True)]


class VLLMTurnGenerator:
    """vLLM offline generation (GPU). Contexts are passed as text, as with HF."""

    def __init__(self, model_path: str, *, max_new_tokens: int, temperature: float,
                 top_p: float = 1.0, seed: int = 0, gpu_memory_utilization: float = 0.85,
                 max_model_len: int | None = None, gpus: int = 1,
                 max_prompt_tokens: int | None = None):  # fmt: skip
        from vllm import LLM, SamplingParams

        self.llm = LLM(
            model=model_path, seed=seed, gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len, tensor_parallel_size=max(1, gpus),
        )  # fmt: skip
        self.tok = self.llm.get_tokenizer()
        self.max_prompt_tokens = max_prompt_tokens
        self._sampling_params = SamplingParams
        self.sampling = {"temperature": temperature, "top_p": top_p if temperature > 0 else 1.0,
                         "max_tokens": max_new_tokens}  # fmt: skip
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        """Sample from here on as a fresh run with this seed. Each request gets its own seed
        (from this one, the call and its place in the call): one seed shared by every request
        would give the n samples of a problem - the same context - the same text."""
        self.seed, self.calls = int(seed), 0

    def count_tokens(self, text: str) -> int:
        return len(self.tok(text, add_special_tokens=False)["input_ids"])

    def __call__(self, contexts: list[str]) -> list[Generated]:
        base = (self.seed * 1_000_003 + self.calls * 65_537) % 2**31
        self.calls += 1
        params = [self._sampling_params(**self.sampling, seed=(base + i) % 2**31)
                  for i in range(len(contexts))]  # fmt: skip
        outs = self.llm.generate(self._prompts(contexts), params, use_tqdm=False)
        return [Generated(o.outputs[0].text, len(o.outputs[0].token_ids)) for o in outs]

    def _prompts(self, contexts: list[str]) -> list:
        """The contexts as vLLM prompts: text, or the token ids of one longer than
        max_prompt_tokens cut as hf_generate cuts it (left truncation of the tokenizer)."""
        n = self.max_prompt_tokens
        if n is None:
            return contexts
        out = []
        for c in contexts:
            if len(self.tok(c)["input_ids"]) <= n:
                out.append(c)
                continue
            side, self.tok.truncation_side = self.tok.truncation_side, "left"
            try:
                ids = self.tok(c, truncation=True, max_length=n)["input_ids"]
            finally:
                self.tok.truncation_side = side
            out.append({"prompt_token_ids": ids})
        return out


def make_generator(backend: str, model_path: str, **kwargs):
    chosen = pick_backend(backend)
    log.info("generation backend: %s (asked: %s)", chosen, backend)
    if chosen == "vllm":
        kwargs.pop("device", None)
        kwargs.pop("stop_at_code", None)  # vLLM never stops at a code block; the loop cuts
        return VLLMTurnGenerator(model_path, **kwargs)
    kwargs.pop("gpu_memory_utilization", None)
    kwargs.pop("max_model_len", None)
    return HFTurnGenerator(model_path, **kwargs)
