"""SFT and GRPO training with TRL, with the same checkpoint contract as ftlab.train.

While training (state_dir is the HF Trainer's output_dir):
  checkpoint-<step>/    Trainer files (model, tokenizer, optimizer, scheduler, rng, trainer
                        state) + ftlab_checkpoint.json, written LAST by a callback after the
                        Trainer finished the folder: a checkpoint is complete iff it has both
                        ftlab_checkpoint.json and trainer_state.json.
A re-run resumes from the newest complete checkpoint when its fingerprint (everything that
determines the result: method, base model + hash, data hash, seed, hyperparameters) matches,
and otherwise starts over. When done, out_dir is assembled in a temp sibling and renamed:
  checkpoint-<step>/    model + tokenizer files + ftlab_checkpoint.json (no optimizer state)
  training_log.csv      the Trainer's log history (step, epoch, loss, lr, rewards, ...)
and state_dir is deleted.

Resume uses the Trainer's own mechanism (optimizer, scheduler, RNG and data position are
restored), which continues the run but is not guaranteed bit-identical like ftlab.train.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from datetime import UTC, datetime
from pathlib import Path

import torch
import transformers

from ftlab import checkpointing
from ftlab.checkpointing import CKPT_RE, META_FILE, checkpoint_step, fsync_files
from ftlab.io import (
    atomic_write_text,
    checkpoint_sha256,
    read_json,
    read_jsonl,
    sha256_file,
    sha256_json,
)
from ftlab.llm.data import PROMPT_FORMATS, prompt_for
from ftlab.llm.recipes import GRPORecipe, SFTRecipe
from ftlab.llm.rewards import correctness_reward, format_reward, seed003_reward
from ftlab.llm.weights import cast_checkpoint

log = logging.getLogger("ftlab.llm.train")

FORMAT_VERSION = 1  # bump when the meaning of a checkpoint changes (invalidates old state)
TRAINER_STATE = "trainer_state.json"
LOG_NAME = "training_log.csv"
# Trainer files that describe the optimisation, not the model: never published.
STATE_FILES = frozenset(
    {
        "optimizer.pt",
        "scheduler.pt",
        "scaler.pt",
        "rng_state.pth",
        TRAINER_STATE,
        "training_args.bin",
        "entropy_ctrl_state.json",
        "README.md",  # TRL's model card: carries dates, so it would break checkpoint hashes
    }
)
# Per-process RNG files of multi-GPU runs; DeepSpeed's checkpoint pointer and converter (its
# shards are folders, never published).
_STATE_RE = re.compile(r"rng_state_\d+\.pth|latest|zero_to_fp32\.py")


# -- checkpoint bookkeeping ---------------------------------------------------------------------
def _is_state_file(name: str) -> bool:
    return name in STATE_FILES or _STATE_RE.fullmatch(name) is not None


def complete_checkpoints(state_dir: Path) -> dict[int, Path]:
    """step -> dir of every checkpoint the Trainer finished and we stamped."""
    return checkpointing.complete_checkpoints(state_dir, (META_FILE, TRAINER_STATE))


def find_resume_point(state_dir: Path, fingerprint: str) -> Path | None:
    """Newest checkpoint of this exact run, or None; stale, foreign or partial state is deleted."""
    return checkpointing.find_resume_point(
        state_dir,
        fingerprint,
        markers=(META_FILE, TRAINER_STATE),
        is_partial=lambda d, complete: CKPT_RE.fullmatch(d.name) is not None and d not in complete,
        log=log,
    )


def _log_csv(history: list[dict]) -> str:
    """CSV of the Trainer's log history: step, epoch, then every other key in sorted order."""
    rows = [{("step" if k == "global_step" else k): v for k, v in h.items()} for h in history]
    keys = sorted({k for r in rows for k in r} - {"step", "epoch"})
    buf = io.StringIO()
    writer = csv.DictWriter(
        buf, fieldnames=["step", "epoch", *keys], lineterminator="\n", restval=""
    )
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def publish(out_dir: Path, state_dir: Path) -> list[int]:
    """Assemble out_dir from state_dir's complete checkpoints (hardlinks), rename, drop state."""
    ckpts = complete_checkpoints(state_dir)
    if not ckpts:
        raise RuntimeError(f"nothing to publish: no complete checkpoint in {state_dir}")
    history = read_json(ckpts[max(ckpts)] / TRAINER_STATE).get("log_history", [])
    checkpointing.publish_checkpoints(
        out_dir,
        state_dir,
        ckpts.values(),
        is_state_file=_is_state_file,
        extra_files={LOG_NAME: _log_csv(history)},
    )
    log.info("published %s (checkpoints %s)", out_dir, list(ckpts))
    return list(ckpts)


class _StampCheckpoints(transformers.TrainerCallback):
    """Writes ftlab_checkpoint.json into each checkpoint after the Trainer has finished it."""

    def __init__(self, info: dict):
        self.info = info

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        fsync_files(ckpt)  # the stamp must never vouch for data still in flight
        info = {
            **self.info,
            "step": state.global_step,
            "epoch": state.epoch,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        atomic_write_text(ckpt / META_FILE, json.dumps(info, indent=2) + "\n")
        log.info("saved %s", ckpt)


class _LogToLogger(transformers.TrainerCallback):
    """Trainer metrics to the "ftlab.llm.train" logger (progress bars are off in job logs)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and state.is_world_process_zero:
            items = " ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in logs.items()
            )
            log.info("step %d/%d %s", state.global_step, state.max_steps, items)


# -- shared setup -------------------------------------------------------------------------------
def _base_model_identity(base_model: str) -> dict:
    """The base model's name and, for a local checkpoint, a hash of its model files."""
    path = Path(base_model)
    return {
        "base_model": base_model,
        "base_model_sha256": checkpoint_sha256(path) if path.is_dir() else None,
    }


def _run(*, trainer_factory, inputs: dict, out_dir: str, state_dir: str, meta: dict | None,
         callbacks: list | None, checkpoint_dtype: str | None = None,
         report: dict | None = None) -> None:  # fmt: skip
    """Resume-or-start, train, publish: the part SFT and GRPO share. report: facts recorded
    in each checkpoint's ftlab_checkpoint.json but not in the resume fingerprint (they follow
    from the inputs)."""
    import datasets

    # No progress bars in job logs: metrics go to our logger (_LogToLogger) instead.
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    state_path, out_path = Path(state_dir), Path(out_dir)
    state = _distributed_state()
    if state is not None:  # the global batch is per-device batch x processes
        inputs = {**inputs, "processes": state.num_processes}
    fingerprint = sha256_json(inputs)
    # rank 0 alone may delete stale state; every rank resumes from what it found
    resume = _main_first(state, lambda: find_resume_point(state_path, fingerprint))
    info = {
        **inputs,
        "fingerprint": fingerprint,
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "trl_version": _trl_version(),
        "meta": meta or {},
        **(report or {}),
    }
    resume_step = checkpoint_step(resume) if resume is not None else 0
    if resume is not None:
        log.info("resuming from step %d (%s)", resume_step, resume)
    else:
        log.info("starting %s from scratch (step 0 of %d)", inputs["method"], inputs["max_steps"])
    # Killed after the last checkpoint: only publishing is left. (The Trainer, resumed at
    # max_steps, would run one extra step and save checkpoint-<max_steps + 1>.)
    if resume_step < inputs["max_steps"]:
        trainer = trainer_factory([_StampCheckpoints(info), _LogToLogger(), *(callbacks or [])])
        trainer.remove_callback(transformers.trainer_callback.PrinterCallback)  # raw dicts
        trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
    if state is not None:
        state.wait_for_everyone()
        if not state.is_main_process:  # rank 0 publishes (the Trainer saved on rank 0 too)
            return
    if checkpoint_dtype:  # after training (resume needs full precision); idempotent if killed
        for ckpt in complete_checkpoints(state_path).values():
            cast_checkpoint(ckpt, checkpoint_dtype)
    publish(out_path, state_path)


def _distributed_state():
    """accelerate's process state when launched with several processes (ftlab.launch), else
    None. Created with the same `cpu` flag the Trainer will use (TrainingArguments.use_cpu is
    set off-GPU), so the Trainer finds this state rather than a conflicting one."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def _main_first(state, fn):
    """fn() on the main process, its (picklable) result on every process."""
    if state is None:
        return fn()
    from accelerate.utils import broadcast_object_list

    box = [fn() if state.is_main_process else None]
    broadcast_object_list(box, from_process=0)
    return box[0]


def _trl_version() -> str:
    import trl

    return trl.__version__


def _load_tokenizer(base_model: str, padding_side: str):
    tok = transformers.AutoTokenizer.from_pretrained(base_model, padding_side=padding_side)
    if tok.pad_token is None:  # batching needs one; eos is the usual stand-in
        tok.pad_token = tok.eos_token
    return tok


# -- SFT ----------------------------------------------------------------------------------------
def read_sft_records(path: str | Path) -> list[dict]:
    records = read_jsonl(path)
    if not records:
        raise ValueError(f"{path}: no SFT records")
    for i, r in enumerate(records):
        for key in ("prompt", "completion"):
            if not isinstance(r.get(key), str):
                raise ValueError(f"{path}: record {i} has no string {key!r} field")
    # chat_template: the record's prompt is a user turn for the chat template (seed 003)
    return [
        {"prompt": r["prompt"], "completion": r["completion"]}
        | ({"chat_template": True} if r.get("chat_template") else {})
        for r in records
    ]


def chat_prompt(tokenizer, text: str, what: str) -> str:
    """`text` as one user turn of the tokenizer's chat template, ready for the assistant's
    reply (add_generation_prompt), as a string - what VeRL's SFT and RL datasets feed the
    model under seed 003. `what` names the setting that asked for it in the error."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            f"{what} needs the base model's chat template, but its tokenizer "
            f"({getattr(tokenizer, 'name_or_path', '?')}) has none"
        )
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
    )


def apply_chat_records(records: list[dict], tokenizer) -> list[dict]:
    """Records with their chat_template prompts wrapped (chat_prompt); plain prompt/completion."""
    what = "llm.prompt_format: seed003 (SFT records with chat_template)"
    return [
        {"prompt": chat_prompt(tokenizer, r["prompt"], what) if r.get("chat_template")
         else r["prompt"], "completion": r["completion"]}
        for r in records
    ]  # fmt: skip


def _full_batch_sft_trainer():
    """SFTTrainer whose epoch is the full effective batches of the records (study.epoch_steps:
    seed 003's n // batch steps), not transformers' count with a partial last batch.

    Each epoch samples floor(n / B) * B of the n records (B: per-device batch x accumulation
    x processes) in a fresh seeded order, so the n mod B left out change from epoch to epoch;
    the Trainer's epoch (in training_log.csv and ftlab_checkpoint.json) is then the planned
    one: 3.0 after 3 x floor(n / B) steps."""
    from torch.utils.data import RandomSampler
    from trl import SFTTrainer

    class FullBatchSFTTrainer(SFTTrainer):
        def _get_train_sampler(self, train_dataset=None):
            sampler = super()._get_train_sampler(train_dataset)
            if not isinstance(sampler, RandomSampler):
                return sampler
            ds = train_dataset if train_dataset is not None else self.train_dataset
            args = self.args
            batch = args.train_batch_size * args.gradient_accumulation_steps
            batch *= max(1, args.world_size)
            n = (len(ds) // batch) * batch
            if n < 1:
                raise ValueError(f"{len(ds)} SFT records make no full batch of {batch}")
            return RandomSampler(ds, num_samples=n)

    return FullBatchSFTTrainer


def sft_length_report(records: list[dict], tokenizer, max_length: int | None) -> dict:
    """How many records TRL's SFTTrainer will cut at max_length (prompt + completion + EOS
    tokens over it: the completion's end is lost) and how many lose their whole completion
    (the prompt alone fills max_length: no token left to learn from)."""
    truncated = no_completion = longest = 0
    eos = tokenizer.eos_token or ""
    for r in records:
        n_prompt = len(tokenizer(r["prompt"])["input_ids"])
        n_all = len(tokenizer(r["prompt"] + r["completion"] + eos)["input_ids"])
        longest = max(longest, n_all)
        if max_length is not None and n_all > max_length:
            truncated += 1
            no_completion += n_prompt >= max_length
    return {"records": len(records), "max_length": max_length, "truncated": truncated,
            "no_completion_left": no_completion, "longest_tokens": longest}  # fmt: skip


def run_sft(
    recipe: SFTRecipe,
    *,
    base_model: str,
    records_path: str,
    out_dir: str,
    state_dir: str,
    seed: int,
    meta: dict | None = None,
    callbacks: list | None = None,
    checkpoint_dtype: str | None = None,
) -> None:
    """Supervised fine-tuning on prompt/completion records (loss on the completion only).

    GT-SFT, SF-SFT and CF-SFT differ only in records_path. callbacks: extra TrainerCallbacks
    (tests). checkpoint_dtype: the published weights' dtype (None: as trained).
    """
    from datasets import Dataset
    from trl import SFTTrainer

    records = read_sft_records(records_path)
    inputs = {
        "format": FORMAT_VERSION,
        "method": recipe.method,
        **_base_model_identity(base_model),
        "data_sha256": sha256_file(records_path),
        "n_records": len(records),
        "seed": seed,
        "max_steps": recipe.max_steps,
        "hyperparameters": recipe.hyperparameters(),
    }
    config = recipe.trl_config(state_dir, seed)

    # Length in epochs: an epoch is the planned n // batch steps (study.epoch_steps).
    trainer_cls = _full_batch_sft_trainer() if recipe.epochs is not None else SFTTrainer

    tokenizer = _load_tokenizer(base_model, padding_side="right")
    records = apply_chat_records(records, tokenizer)
    lengths = sft_length_report(records, tokenizer, recipe.max_length)
    if lengths["truncated"]:
        log.warning(
            "%s: %d of %d SFT records are longer than llm.sft.max_length (%s tokens; the "
            "longest %d) and are truncated, %d of them to no completion token at all",
            records_path, lengths["truncated"], lengths["records"], recipe.max_length,
            lengths["longest_tokens"], lengths["no_completion_left"],
        )  # fmt: skip

    def factory(cbs):
        return trainer_cls(
            model=base_model,
            args=config,
            train_dataset=Dataset.from_list(records),
            processing_class=tokenizer,
            callbacks=cbs,
        )

    _run(
        trainer_factory=factory,
        inputs=inputs,
        out_dir=out_dir,
        state_dir=state_dir,
        meta=meta,
        callbacks=callbacks,
        checkpoint_dtype=checkpoint_dtype,
        report={"sft_lengths": lengths},
    )


# -- GRPO ---------------------------------------------------------------------------------------
def grpo_dataset_rows(
    rows: list[dict], fmt: str, tokenizer, max_prompt_length: int, prompt_format: str = "tags"
) -> list[dict]:
    """Rows with the prompt and the columns the rewards need; over-long prompts dropped.

    prompt_format "tags": the reasoning prompt; "seed003": seed 003's prompt inside the chat
    template (a string, as VeRL's RL dataset renders it). TRL 1.16's GRPOConfig has no
    max_prompt_length; cutting a question short would make it unanswerable, so such rows are
    left out (and counted in the log) instead, as seed 003's VeRL filter_overlong_prompts.
    """
    if prompt_format not in PROMPT_FORMATS:
        raise ValueError(f"unknown prompt format {prompt_format!r}; expected {PROMPT_FORMATS}")
    out, dropped = [], 0
    for row in rows:
        if prompt_format == "seed003":
            prompt = chat_prompt(tokenizer, prompt_for(row, "seed003", fmt),
                                 "llm.prompt_format: seed003")  # fmt: skip
        else:
            prompt = prompt_for(row, "reasoning")
        if len(tokenizer(prompt)["input_ids"]) > max_prompt_length:
            dropped += 1
            continue
        out.append(
            {
                "prompt": prompt,
                "answer": str(row["answer"]),
                "aliases": [str(a) for a in row.get("aliases") or []],
                "fmt": fmt,
            }
        )
    if dropped:
        log.warning(
            "dropped %d of %d prompts over %d tokens", dropped, len(rows), max_prompt_length
        )
    if not out:
        raise ValueError(f"no prompt fits max_prompt_length={max_prompt_length}")
    return out


def _vllm_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()


def run_grpo(
    recipe: GRPORecipe,
    *,
    base_model: str,
    rows_path: str,
    fmt: str,
    out_dir: str,
    state_dir: str,
    seed: int,
    meta: dict | None = None,
    callbacks: list | None = None,
    checkpoint_dtype: str | None = None,
    prompt_format: str = "tags",
) -> None:
    """GRPO with verifiable rewards on normalised rows (see ftlab.llm.data).

    prompt_format "tags": reward = correctness (0/1) + recipe.format_weight * format (0/1);
    "seed003": seed 003's prompts in the chat template and its reward alone
    (rewards.seed003_reward; format_weight unused). vLLM (colocated) only if recipe.use_vllm
    and it is importable.
    """
    from datasets import Dataset
    from trl import GRPOTrainer

    vllm = bool(recipe.use_vllm and _vllm_available())
    if recipe.use_vllm and not vllm:
        log.warning("use_vllm requested but vLLM or a GPU is unavailable: generating with HF")
    tokenizer = _load_tokenizer(base_model, padding_side="left")
    rows = grpo_dataset_rows(
        read_jsonl(rows_path), fmt, tokenizer, recipe.max_prompt_length, prompt_format
    )
    inputs = {
        "format": FORMAT_VERSION,
        "method": recipe.method,
        **_base_model_identity(base_model),
        "data_sha256": sha256_file(rows_path),
        "data_format": fmt,
        "n_prompts": len(rows),
        "seed": seed,
        "max_steps": recipe.max_steps,
        "hyperparameters": recipe.hyperparameters(),
        **({"prompt_format": prompt_format} if prompt_format != "tags" else {}),
    }
    config = recipe.trl_config(state_dir, seed, vllm=vllm)
    if prompt_format == "seed003":  # one reward function: its weight alone
        config.reward_weights = [1.0]
    rewards = (
        [seed003_reward] if prompt_format == "seed003" else [correctness_reward, format_reward]
    )

    def factory(cbs):
        return GRPOTrainer(
            model=base_model,
            reward_funcs=rewards,
            args=config,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            callbacks=cbs,
        )

    _run(
        trainer_factory=factory,
        inputs=inputs,
        out_dir=out_dir,
        state_dir=state_dir,
        meta=meta,
        callbacks=callbacks,
        checkpoint_dtype=checkpoint_dtype,
    )
