"""A launched stage for tests/test_mtl_validate.py: the validation score with scripted greedy
answers (the answer of every row whose id ends in 0, 3 or 5; a wrong one otherwise)."""

import json
import os

from ftlab.mtl import trl_validate


def scripted(rows):
    by_prompt = {}
    for item in trl_validate.validation_prompts(rows, sorted({r["task"] for r in rows})):
        r = item["row"]
        right = r["id"][-1] in "035"
        answer = r["answer"] if right else "wrong"
        by_prompt[item["prompt"]] = f"#### {answer}" if r["task"] == "arith" else answer
    return by_prompt


def score(rows_path: str, out_dir: str, formats: dict) -> None:
    rows = [json.loads(line) for line in open(rows_path)]
    answers = scripted(rows)
    seen = []

    def greedy(model, tokenizer, prompts, max_new_tokens, batch_size, temperature, top_p):
        seen.extend(prompts)
        return [answers[p] for p in prompts]

    trl_validate.completions = greedy
    tasks = sorted({r["task"] for r in rows})
    value = trl_validate.validation_score(None, None, rows, tasks, formats, max_new_tokens=4,
                                          batch_size=2)  # fmt: skip
    rank = os.environ.get("RANK", "0")
    with open(f"{out_dir}/rank{rank}.json", "w") as f:
        json.dump({"score": value, "prompts": len(seen)}, f)
