"""One HF text generator for the LLM study: in-domain evaluation and teacher trajectories."""

from __future__ import annotations

import copy


def default_device() -> str:
    """The GPU of this process (LOCAL_RANK's under a launcher: each rank its own), or "cpu"."""
    import os

    import torch

    if not torch.cuda.is_available():
        return "cpu"
    return f"cuda:{os.environ['LOCAL_RANK']}" if "LOCAL_RANK" in os.environ else "cuda"


class HFGenerator:
    """Batched generation with an HF causal LM: left padding, KV cache, stop at eos.

    Greedy at temperature 0, with a fresh generation config: the checkpoint's own may ask for
    sampling (temperature, top_p), which must not change a greedy result. Sampling at
    temperature > 0 keeps the checkpoint's other sampling settings (top_k, top_p), as its model
    card intends. `chat_template`: wrap each prompt as one user turn of the tokenizer's
    template. `device_map` ("auto"): one model split over every visible GPU by accelerate (a
    model too large for one GPU; the inputs go to its first device).
    """

    def __init__(
        self, model: str, device: str | None = None, chat_template: bool = False,
        device_map: str | None = None,
    ):  # fmt: skip
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = device or default_device()
        dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        self.tok = AutoTokenizer.from_pretrained(model, padding_side="left")
        if self.tok.pad_token_id is None:  # batching needs one; eos is the usual stand-in
            self.tok.pad_token = self.tok.eos_token
        if device_map and self.device.startswith("cuda"):
            self.model = AutoModelForCausalLM.from_pretrained(model, dtype=dtype,
                                                              device_map=device_map)  # fmt: skip
            self.device = str(self.model.device)  # the first layer's: where inputs start
        else:
            self.model = AutoModelForCausalLM.from_pretrained(model, dtype=dtype).to(self.device)
        self.model.eval()
        self.chat_template = chat_template

    @classmethod
    def of(cls, model, tokenizer, chat_template: bool = False) -> HFGenerator:
        """A generator over a model already in memory (e.g. one being trained)."""
        gen = cls.__new__(cls)
        gen.model, gen.tok, gen.chat_template = model, tokenizer, chat_template
        gen.device = str(model.device)
        return gen

    def _config(self, max_new_tokens: int, n: int, temperature: float, top_p: float | None = None):
        from transformers import GenerationConfig

        eos = self.model.generation_config.eos_token_id or self.tok.eos_token_id
        settings = dict(
            max_new_tokens=max_new_tokens, num_return_sequences=n, use_cache=True,
            pad_token_id=self.tok.pad_token_id, eos_token_id=eos,
        )  # fmt: skip
        if temperature <= 0:
            return GenerationConfig(do_sample=False, **settings)
        cfg = copy.deepcopy(self.model.generation_config)
        cfg.update(do_sample=True, temperature=temperature, **settings)
        if top_p is not None:  # else the checkpoint's own
            cfg.update(top_p=top_p)
        return cfg

    def __call__(
        self, prompts: list[str], max_new_tokens: int, *, n: int = 1, temperature: float = 0.0,
        top_p: float | None = None,
    ) -> list[str]:  # fmt: skip
        """Completions of one batch of prompts, `n` per prompt in prompt order; top_p (when
        sampling): None keeps the checkpoint's."""
        import torch

        if self.chat_template:
            prompts = [
                self.tok.apply_chat_template(
                    [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
                )
                for p in prompts
            ]
        enc = self.tok(
            prompts, return_tensors="pt", padding=True, padding_side="left",
            add_special_tokens=not self.chat_template,
        ).to(self.device)  # fmt: skip
        cfg = self._config(max_new_tokens, n, temperature, top_p)
        with torch.inference_mode():
            out = self.model.generate(**enc, generation_config=cfg)
        # With left padding every prompt ends at the same column: the rest is generated.
        return self.tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)

    def samples(
        self, prompts: list[str], n: int, *, max_new_tokens: int, batch_size: int,
        temperature: float, top_p: float | None = None,
    ) -> list[list[str]]:  # fmt: skip
        """`n` completions per prompt, generated `batch_size` prompts at a time."""
        out = []
        for lo in range(0, len(prompts), batch_size):
            batch = prompts[lo : lo + batch_size]
            texts = self(batch, max_new_tokens, n=n, temperature=temperature, top_p=top_p)
            out.extend(texts[i : i + n] for i in range(0, len(texts), n))
        return out
