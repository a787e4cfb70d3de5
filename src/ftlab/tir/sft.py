"""Supervised warm start on tool-call traces, for models too small to discover tool use by RL
alone (the tiny CPU model). A plain loop: AdamW, loss on the model's own tokens only (prompt
and sandbox output are context, never targets), eos after each trace.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

log = logging.getLogger("ftlab.tir.sft")


def encode_trace(tok, prompt: str, segments: list[tuple[str, bool]]) -> tuple[list[int], list[int]]:
    """Token ids and labels (-100 where not trained) of prompt + segments + eos."""
    ids = tok(prompt)["input_ids"]  # with the tokenizer's bos
    labels = [-100] * len(ids)
    for text, trained in segments:
        seg = tok(text, add_special_tokens=False)["input_ids"]
        ids += seg
        labels += seg if trained else [-100] * len(seg)
    ids.append(tok.eos_token_id)
    labels.append(tok.eos_token_id)
    return ids, labels


def sft_on_traces(
    model_path: str, examples: list[tuple[str, list[tuple[str, bool]]]], out_dir: str, *,
    steps: int, batch_size: int = 32, lr: float = 3e-3, seed: int = 0, device: str = "cpu",
) -> list[float]:  # fmt: skip
    """Train on (prompt, segments) examples; save model + tokenizer to out_dir; losses."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not examples:
        raise ValueError("no SFT examples")
    torch.manual_seed(seed)
    rng = random.Random(seed)
    tok = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).to(device)
    model.train()
    encoded = [encode_trace(tok, p, s) for p, s in examples]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / 20) * (1 - i / steps)
    )
    losses = []
    for step in range(steps):
        batch = [encoded[rng.randrange(len(encoded))] for _ in range(batch_size)]
        width = max(len(ids) for ids, _ in batch)
        pad = tok.pad_token_id
        ids = torch.tensor([i + [pad] * (width - len(i)) for i, _ in batch], device=device)
        labels = torch.tensor([lb + [-100] * (width - len(lb)) for _, lb in batch], device=device)
        mask = torch.tensor(
            [[1] * len(i) + [0] * (width - len(i)) for i, _ in batch], device=device
        )
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % 50 == 0 or step == steps - 1:
            log.info("sft step %d/%d loss %.4f", step + 1, steps, loss.item())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return losses
