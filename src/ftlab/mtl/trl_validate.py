"""Validation of a model while TRL trains it (objectives sft and grpo).

- `score` (seed 000: the validation reward mean, mode max): one answer per validation prompt,
  sampled as seed 000's val_kwargs (do_sample, temperature 1.0, top_p 1.0, n 1; config
  mtl.validation.temperature / top_p; temperature 0 = greedy), each rewarded 1 when correct
  (ftlab.llm.rewards: extract, normalize, compare, by the row's format), else 0; the mean over
  all validation rows. Sampling draws from torch's global generator, which the Trainer seeds
  and checkpoints, so a run repeats its validations.
- `loss` (mode min): mean token cross-entropy of the ground-truth completions (the SFT
  records, eos included) given their prompts, over all completion tokens.
Data parallel: each process takes every world_size-th row (rank r: rows r, r + n, ...) and the
sums are combined over the processes (ftlab.llm.ranks), so every rank gets the same value and
takes the same early-stopping decision, at 1/n of the work per process. The score is a count
of exact 0/1 outcomes (greedy: the same as one process's wherever the answers are; sampled:
each process draws its own); the loss sums the same token losses in another order.
"""

from __future__ import annotations

import torch

from ftlab.mtl.trl_data import validation_prompts


def completions(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int,
                temperature: float, top_p: float) -> list[str]:  # fmt: skip
    """One completion per prompt: greedy at temperature 0, else sampled."""
    from ftlab.llm.generate import HFGenerator

    gen = HFGenerator.of(model, tokenizer)
    samples = gen.samples(prompts, 1, max_new_tokens=max_new_tokens, batch_size=batch_size,
                          temperature=temperature, top_p=top_p)  # fmt: skip
    return [texts[0] for texts in samples]


def validation_score(model, tokenizer, rows, tasks, formats, *, max_new_tokens, batch_size,
                     temperature=0.0, top_p=1.0) -> float:  # fmt: skip
    """formats: task -> answer format (mtl.datasets.<task>.format)."""
    from ftlab.llm.ranks import Ranks
    from ftlab.llm.rewards import extract_answer, is_correct

    ranks = Ranks()
    items = validation_prompts(rows, tasks)[ranks.rank :: ranks.world_size]
    texts = completions(model, tokenizer, [i["prompt"] for i in items], max_new_tokens,
                        batch_size, temperature, top_p) if items else []  # fmt: skip
    fmt = [formats[i["task"]] for i in items]
    right = [is_correct(extract_answer(t, f), i["row"], f)
             for t, f, i in zip(texts, fmt, items, strict=True)]  # fmt: skip
    return ranks.sum(sum(right)) / ranks.sum(len(right))


def completion_batch(tokenizer, records: list[dict], device) -> dict:
    """Right-padded prompt+completion ids, labels only on the completion (and eos)."""
    seqs, labels = [], []
    for r in records:
        p = tokenizer(r["prompt"])["input_ids"]
        c = tokenizer(r["completion"], add_special_tokens=False)["input_ids"]
        if tokenizer.eos_token_id is not None:
            c = [*c, tokenizer.eos_token_id]
        seqs.append(p + c)
        labels.append([-100] * len(p) + c)
    width = max(map(len, seqs))
    pad = tokenizer.pad_token_id
    ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs], device=device)
    lab = torch.tensor([s + [-100] * (width - len(s)) for s in labels], device=device)
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], device=device)
    return {"input_ids": ids, "attention_mask": mask, "labels": lab}


@torch.no_grad()
def validation_loss(model, tokenizer, rows, tasks, *, batch_size) -> float:
    from ftlab.llm.data import sft_records
    from ftlab.llm.ranks import Ranks
    from ftlab.mtl.world_train import token_losses

    ranks = Ranks()
    validation_prompts(rows, tasks)  # checks the rows' tasks
    records = sft_records(rows, "gt", "reasoning")[ranks.rank :: ranks.world_size]
    total, count = 0.0, 0
    for lo in range(0, len(records), batch_size):
        batch = completion_batch(tokenizer, records[lo : lo + batch_size], model.device)
        loss, n = token_losses(model, batch)
        total, count = total + float(loss.sum()), count + int(n.sum())
    return ranks.sum(total) / ranks.sum(count)


def validate(model, tokenizer, rows: list[dict], tasks: list[str], formats: dict, *,
             metric: str, batch_size: int, max_new_tokens: int, temperature: float = 0.0,
             top_p: float = 1.0) -> float:  # fmt: skip
    """The validation value of the current weights (the model is left in train mode)."""
    was_training = model.training
    model.eval()
    try:
        if metric == "score":
            return validation_score(model, tokenizer, rows, tasks, formats,
                                    max_new_tokens=max_new_tokens, batch_size=batch_size,
                                    temperature=temperature, top_p=top_p)  # fmt: skip
        return validation_loss(model, tokenizer, rows, tasks, batch_size=batch_size)
    finally:
        model.train(was_training)
