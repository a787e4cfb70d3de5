"""Multi-task training of a causal LM through TRL (objectives sft and grpo) with early stopping.

The llm kind supplies the recipes (ftlab.llm.recipes: TrainingArguments, SFT/GRPO configs), the
tokenizer and GRPO prompt rows, the rewards, and the checkpoint contract (ftlab.llm.train:
checkpoint folders stamped last, fingerprinted resume through the Trainer's
resume_from_checkpoint, rank 0 publishes); ftlab.mtl adds the surgery step (ftlab.mtl.trl),
the epoch schedule (ftlab.mtl.trl_schedule) and the manifest (ftlab.mtl.manifest).

Rows per step: SFT records, batch_size x grad_accum x processes; GRPO prompts, that over
num_generations. Steps per epoch as ftlab.mtl.study plans them (epoch_steps): with
mtl.trl.batch_composition per_task (seed 000's) every step holds rows per step / T rows of each
task (ftlab.mtl.trl_data.PerTaskSampler) and an epoch is the shortest task's pass, min over
tasks of its rows // that; shuffled: ceil(training rows / rows per step). The learning rate
warms up for warmup_steps, then stays constant (mtl.trl.lr_scheduler constant, seed 000's) or
decays linearly to 0 at the maximum epochs (linear). Published (out_dir): the kept checkpoints
in HF layout (model, tokenizer, ftlab_checkpoint.json; no optimizer state), training_log.csv
(the Trainer's log history), mtl_manifest.json. Resume continues the run through the Trainer
(optimizer, scheduler, RNG, data position) plus the early-stopping state and PCGrad's
generator; it is not guaranteed bit-identical (as ftlab.llm.train).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import transformers

from ftlab.checkpointing import publish_checkpoints
from ftlab.io import read_json, read_jsonl, sha256_file, sha256_json
from ftlab.llm import train as llm_train
from ftlab.mtl.manifest import MANIFEST, build_manifest, manifest_text
from ftlab.mtl.surgery import make_combiner
from ftlab.mtl.trl_schedule import STATE_FILES, EpochSchedule

log = logging.getLogger("ftlab.mtl.train")

FORMAT_VERSION = 1


def steps_per_epoch(objective: str, task_rows: list[int], training: dict, trl: dict,
                    processes: int) -> int:  # fmt: skip
    """ftlab.mtl.study.epoch_steps on the dataset's rows of each task (what ftlab plan prints
    when no prompt is left out for its length)."""
    from ftlab.mtl.study import epoch_steps

    mtl = {"objective": objective, "training": training, "trl": trl}
    return max(1, epoch_steps(mtl, processes, task_rows))


def per_task_rows(objective: str, task_rows: list[int], training: dict, trl: dict,
                  processes: int) -> int | None:  # fmt: skip
    """Rows (GRPO: prompts) of each task per step with batch_composition per_task, else None;
    the config check's rules (ftlab.mtl.study), again on the rows the dataset kept."""
    from ftlab.mtl.study import per_task_batches, rows_per_step

    mtl = {"objective": objective, "training": training, "trl": trl}
    if not per_task_batches(mtl):
        return None
    per_step = rows_per_step(mtl, processes)
    if per_step % len(task_rows):
        grpo = objective == "grpo"  # GRPO counts prompts
        what, per = ("prompts", " / mtl.trl.num_generations") if grpo else ("rows", "")
        raise ValueError(
            f"mtl.trl.batch_composition per_task: {per_step} {what} per step (mtl.training."
            f"batch_size x mtl.trl.grad_accum x {processes} processes{per}) is not a multiple "
            f"of the {len(task_rows)} tasks"
        )
    per_task = per_step // len(task_rows)
    if min(task_rows) < per_task:
        raise ValueError(
            f"mtl.trl.batch_composition per_task: {per_task} rows of each task per step, but the "
            f"tasks have {task_rows} training rows (prompts over mtl.trl.max_prompt_length are "
            "left out)"
        )
    return per_task


def _task_rows(objective: str, data: list[dict], tasks: list[str]) -> list[int]:
    """Training rows of each task in the dataset (task order)."""
    if objective == "sft":
        ids = [r["task_ids"] for r in data]
    else:
        ids = [tasks.index(r["task"]) for r in data]
    return [ids.count(t) for t in range(len(tasks))]


def make_recipe(objective: str, training: dict, trl: dict, max_steps: int):
    """The llm kind's recipe of the run; checkpoints are saved by the epoch schedule only."""
    from ftlab.llm.recipes import GRPORecipe, SFTRecipe

    # warmup_steps is a whole count here (schema), so warmup_rounding never applies
    common = dict(lr=training["lr"], max_steps=max_steps, save_steps=max_steps + 1,
                  batch_size=training["batch_size"], grad_accum=trl["grad_accum"],
                  warmup_steps=training["warmup_steps"], warmup_rounding="floor",
                  lr_scheduler_type=lr_scheduler_type(trl["lr_scheduler"]),
                  weight_decay=training["weight_decay"], bf16=trl["bf16"])  # fmt: skip
    if objective == "sft":
        return SFTRecipe(**common, max_length=trl["max_length"])
    keys = ("num_generations", "max_prompt_length", "max_completion_length", "beta",
            "temperature", "format_weight", "use_vllm")  # fmt: skip
    return GRPORecipe(**common, **{k: trl[k] for k in keys})


def lr_scheduler_type(name: str) -> str:
    """transformers' scheduler of mtl.trl.lr_scheduler: constant = linear warmup then a constant
    rate (seed 000: verl's warmup_style constant); linear = warmup, then linear decay to 0 at
    the maximum epochs."""
    return {"constant": "constant_with_warmup", "linear": "linear"}[name]


def trl_args(recipe, objective: str, training: dict, state_dir: str, seed: int):
    if objective == "sft":
        args = recipe.trl_config(state_dir, seed)
    else:
        args = recipe.trl_config(
            state_dir, seed, vllm=recipe.use_vllm and llm_train._vllm_available()
        )
    args.max_grad_norm = training["max_grad_norm"] or 0.0  # 0: no clipping
    args.logging_steps = training["log_every"]
    return args


def _is_state_file(name: str) -> bool:
    return name in STATE_FILES or llm_train._is_state_file(name)


def run_trl_training(
    *, objective: str, model_name: str, train_rows: str, validation_rows: str, tasks: list[str],
    method: str, reduction: str, base_model: str, trl: dict, formats: dict, training: dict,
    validation: dict, early_stopping: dict, checkpoints: dict, seed: int, out_dir: str,
    state_dir: str, threads: int = 1, device: str = "cpu", meta: dict | None = None,
    callbacks: list | None = None,
) -> dict | None:  # fmt: skip
    """Train (or resume) one run and publish its kept checkpoints; returns the manifest (None
    on ranks other than 0). callbacks: extra TrainerCallbacks (tests)."""
    import datasets

    torch.set_num_threads(threads)
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    dist = llm_train._distributed_state()
    processes = dist.num_processes if dist is not None else 1
    tok = llm_train._load_tokenizer(base_model, "right" if objective == "sft" else "left")
    rows, val_rows = read_jsonl(train_rows), read_jsonl(validation_rows)
    data = _dataset_rows(objective, rows, tasks, formats, tok, trl)
    task_rows = _task_rows(objective, data, tasks)
    spe = steps_per_epoch(objective, task_rows, training, trl, processes)
    per_task = per_task_rows(objective, task_rows, training, trl, processes)
    inputs = {
        "format": FORMAT_VERSION, "objective": objective, "model_name": model_name,
        "method": method, "reduction": reduction, "tasks": list(tasks), "seed": seed,
        **llm_train._base_model_identity(base_model), "formats": formats,
        "train_data_sha256": sha256_file(train_rows),
        "validation_data_sha256": sha256_file(validation_rows), "n_rows": len(data),
        "training": training, "trl": trl, "validation": validation,
        "early_stopping": early_stopping, "checkpoints": checkpoints, "processes": processes,
        "steps_per_epoch": spe,
    }  # fmt: skip
    fingerprint = sha256_json(inputs)
    state_path = Path(state_dir)
    resume = llm_train._main_first(
        dist, lambda: llm_train.find_resume_point(state_path, fingerprint)
    )
    combiner = make_combiner(method, seed=seed, reduction=reduction)
    info = {**inputs, "fingerprint": fingerprint, "meta": meta or {}}
    schedule = _schedule(inputs, info, combiner, _validator(tok, val_rows, tasks, formats,
                                                            validation, trl))  # fmt: skip
    if resume is not None:
        schedule.load(resume)
        log.info("resuming %s from %s (epoch %s)", model_name, resume, schedule.saved[-1])
    if not schedule.finished:
        recipe = make_recipe(objective, training, trl, training["epochs"] * spe)
        trainer = _trainer(objective, recipe, training, base_model, tok, data, tasks, seed,
                           state_dir, combiner, [schedule, *(callbacks or [])],
                           model_dtype=trl.get("model_dtype", "float32"),
                           task_loss=trl.get("task_loss"),  # GRPO only
                           per_task=None if per_task is None else (per_task, spe))  # fmt: skip
        log.info("%s: %s over %d tasks, %d rows, up to %d epochs x %d steps, %d process(es)",
                 model_name, method, len(tasks), len(data), training["epochs"], spe,
                 processes)  # fmt: skip
        trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
    if dist is not None:
        dist.wait_for_everyone()
        if not dist.is_main_process:
            return None
    return _publish(schedule, inputs, Path(out_dir), state_path)


def _schedule(inputs: dict, info: dict, combiner, validate) -> EpochSchedule:
    """The run's epoch schedule; info: what each checkpoint's stamp records (with versions)."""
    versions = {"torch_version": torch.__version__, "trl_version": llm_train._trl_version(),
                "transformers_version": transformers.__version__}  # fmt: skip
    return EpochSchedule(
        spe=inputs["steps_per_epoch"], max_epochs=inputs["training"]["epochs"],
        validation=inputs["validation"], early_stopping=inputs["early_stopping"],
        checkpoints=inputs["checkpoints"], combiner=combiner, validate=validate,
        info={**info, **versions},
    )  # fmt: skip


def _dataset_rows(objective, rows, tasks, formats, tok, trl) -> list[dict]:
    from ftlab.mtl.trl_data import grpo_rows, sft_rows

    if objective == "sft":
        return sft_rows(rows, tasks)
    return grpo_rows(rows, tasks, formats, tok, trl["max_prompt_length"])


def _validator(tok, val_rows, tasks, formats, validation, trl):
    from ftlab.mtl.trl_validate import validate

    max_new = validation.get("max_new_tokens") or trl["max_completion_length"]

    def run(model) -> float:
        return validate(model, tok, val_rows, tasks, formats, metric=validation["metric"],
                        batch_size=validation["batch_size"], max_new_tokens=max_new,
                        temperature=validation["temperature"],
                        top_p=validation["top_p"])  # fmt: skip

    return run


def _trainer(objective, recipe, training, base_model, tok, data, tasks, seed, state_dir,
             combiner, callbacks, reward_funcs=None, model_dtype="float32",
             task_loss=None, per_task=None):  # fmt: skip
    """reward_funcs (GRPO): None = correctness and format (ftlab.llm.rewards). model_dtype:
    the dtype TRL loads the base model in (`mtl.trl.model_dtype`). task_loss (GRPO, required):
    the run's mtl.trl.task_loss (ftlab.mtl.settings resolves the baseline's own key).
    per_task: (rows of each task per step, steps per epoch) for batch_composition per_task
    (ftlab.mtl.trl_data.PerTaskSampler), None = the trainer's own shuffled sampler."""
    from datasets import Dataset

    from ftlab.mtl.trl import surgery_trainer_class
    from ftlab.mtl.trl_data import task_index

    kwargs = {"n_tasks": len(tasks), "per_task": per_task}
    if objective == "grpo":
        from ftlab.llm.rewards import correctness_reward, format_reward

        if task_loss is None:
            raise ValueError("objective grpo: the run's task_loss (mtl.trl.task_loss) is unset")
        kwargs = {"reward_funcs": reward_funcs or [correctness_reward, format_reward],
                  "task_index": task_index(tasks), "task_loss": task_loss,
                  "per_task": per_task}  # fmt: skip
    args = trl_args(recipe, objective, training, state_dir, seed)
    args.model_init_kwargs = {**(args.model_init_kwargs or {}), "dtype": model_dtype}
    trainer = surgery_trainer_class(objective)(
        model=base_model, args=args,
        train_dataset=Dataset.from_list(data), processing_class=tok, surgery=combiner,
        callbacks=[*callbacks, llm_train._LogToLogger()], **kwargs,
    )  # fmt: skip
    trainer.remove_callback(transformers.trainer_callback.PrinterCallback)
    return trainer


def _publish(schedule: EpochSchedule, inputs: dict, out_dir: Path, state_dir: Path) -> dict:
    manifest = build_manifest(schedule.saved, schedule.values, schedule.spe, schedule.stopper,
                              schedule.max_epochs, inputs["checkpoints"], inputs["validation"],
                              inputs)  # fmt: skip
    ckpts = llm_train.complete_checkpoints(state_dir)
    kept = [c["step"] for c in manifest["checkpoints"]]
    if sorted(ckpts) != kept:
        raise RuntimeError(f"{state_dir}: checkpoints {sorted(ckpts)} on disk, kept {kept}")
    history = read_json(ckpts[max(ckpts)] / llm_train.TRAINER_STATE).get("log_history", [])
    publish_checkpoints(
        out_dir, state_dir, ckpts.values(), is_state_file=_is_state_file,
        extra_files={llm_train.LOG_NAME: llm_train._log_csv(history),
                     MANIFEST: manifest_text(manifest)},
    )  # fmt: skip
    log.info("published %s: kept epochs %s, selected epoch %d (%s)", out_dir,
             [c["epoch"] for c in manifest["checkpoints"]], manifest["selected"]["epoch"],
             manifest["stop_reason"])  # fmt: skip
    return manifest
