"""The TRL path of the multi-task kind (objectives sft and grpo) on a tiny causal LM, CPU:
one surgery step against per-task gradients computed and projected by hand, early stopping of
a TRL run, and resume after a kill."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers
from test_mtl_surgery import reference_projection

from ftlab.io import read_json, write_jsonl
from ftlab.llm.rewards import format_reward
from ftlab.llm.tiny import build_tiny_causal_lm
from ftlab.mtl import trl_train
from ftlab.mtl.surgery import make_combiner

TASKS = ["arith", "trivia"]
FORMATS = {"arith": "gsm8k", "trivia": "triviaqa"}
TRAINING = {"epochs": 6, "batch_size": 4, "lr": 0.003, "weight_decay": 0.0, "warmup_steps": 0,
            "max_grad_norm": 1.0, "log_every": 1}  # fmt: skip
TRL = {"grad_accum": 1, "max_length": 256, "num_generations": 2, "max_prompt_length": 256,
       "max_completion_length": 6, "beta": 0.0, "temperature": 1.0, "format_weight": 0.0,
       "use_vllm": False, "bf16": None, "lr_scheduler": "linear",
       "task_loss": "batch_share", "batch_composition": "shuffled"}  # fmt: skip


def row(i: int, task: str) -> dict:
    a, b = i % 7 + 1, i % 5 + 2
    if task == "arith":
        return {"id": f"a{i}", "question": f"{a}+{b}?", "answer": str(a + b), "aliases": [],
                "solution": f"{a}+{b}={a + b}\n#### {a + b}", "task": task}  # fmt: skip
    name = ["Paris", "Rome", "Oslo", "Lima"][i % 4]
    return {"id": f"t{i}", "question": f"City {i}?", "answer": name, "aliases": [name],
            "solution": name, "task": task}  # fmt: skip


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny") / "base"
    return build_tiny_causal_lm(out, seed=0, layers=1, hidden=32, heads=2, max_length=512)


PROMPTS = ["Question 0: ", "Question 1: "]


@pytest.fixture(scope="module")
def az_base(base, tmp_path_factory):
    """The tiny model taught that after each of PROMPTS comes a run of "a" or of "z" (half
    each): two tasks that want one of them each then pull in opposite directions."""
    tok = transformers.AutoTokenizer.from_pretrained(base)
    model = transformers.AutoModelForCausalLM.from_pretrained(base)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    texts = [p + c * 12 for p in PROMPTS for c in "az"]
    enc = tok(texts, return_tensors="pt", padding=True)
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    for _ in range(60):
        loss = model(**enc, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    out = tmp_path_factory.mktemp("tiny") / "az"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


def trainer_for(objective, method, base, data, tmp_path, trl=TRL, **kwargs):
    """A trainer of the run; data: its dataset rows (SFT records, GRPO prompt rows)."""
    tok = trl_train.llm_train._load_tokenizer(base, "right" if objective == "sft" else "left")
    recipe = trl_train.make_recipe(objective, TRAINING, trl, max_steps=4)
    combiner = make_combiner(method, seed=5)
    trainer = trl_train._trainer(objective, recipe, TRAINING, base, tok, data, TASKS, 0,
                                 str(tmp_path / "state"), combiner, [], **kwargs)  # fmt: skip
    return trainer, tok


def flat_grads(model) -> np.ndarray:
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()]).double().numpy()


def task_gradient(model, loss) -> np.ndarray:
    model.zero_grad()
    loss.backward()
    return flat_grads(model)


def expected_update(method: str, grads: list[np.ndarray]) -> np.ndarray:
    g = np.stack(grads)
    if method == "baseline":
        return g.sum(0)
    gen = torch.Generator().manual_seed(5)  # the combiner's seed: the same random orders
    orders = [torch.randperm(len(g), generator=gen).tolist() for _ in range(len(g))]
    return reference_projection(g, orders).sum(0)


def assert_close_update(got: np.ndarray, method: str, grads: list[np.ndarray]):
    """got = the method's update of the per-task gradients, within float32 noise; for pcgrad
    the tasks conflict and the projection moves the update far beyond that noise."""
    expected, plain = expected_update(method, grads), np.sum(grads, 0)
    tol = 1e-5 * np.abs(expected).max()
    np.testing.assert_allclose(got, expected, atol=tol, rtol=1e-3)
    if method == "pcgrad":
        assert float(grads[0] @ grads[1]) < 0
        assert np.abs(expected - plain).max() > 1000 * tol


@pytest.mark.parametrize("method", ["baseline", "pcgrad"])
def test_sft_step_is_the_surgery_of_per_task_mean_token_losses(method, az_base, tmp_path):
    base = az_base
    # the same prompts, opposite completions: the tasks' gradients conflict
    data = [{"prompt": f"Question {i}: ", "completion": c * 12, "task_ids": t}
            for i in range(2) for t, c in enumerate("az")]  # fmt: skip
    trainer, _ = trainer_for("sft", method, base, data, tmp_path)
    batch = next(iter(trainer.get_train_dataloader()))
    task_ids = batch["task_ids"].clone()
    assert sorted(task_ids.tolist()) == [0, 0, 1, 1]
    trainer.model.zero_grad()
    trainer.training_step(trainer.model, dict(batch))
    got = flat_grads(trainer.model)

    # independent: each task's mean next-token cross-entropy over its completion tokens
    ref = transformers.AutoModelForCausalLM.from_pretrained(base)
    grads = []
    for t in (0, 1):
        m = task_ids == t
        logits = ref(
            input_ids=batch["input_ids"][m], attention_mask=batch["attention_mask"][m]
        ).logits
        labels = batch["labels"][m][:, 1:]
        loss = F.cross_entropy(logits[:, :-1].transpose(1, 2), labels, ignore_index=-100)
        grads.append(task_gradient(ref, loss))
    assert_close_update(got, method, grads)


def test_sft_with_grad_accum_2_projects_the_steps_task_gradients_once(az_base, tmp_path):
    """grad_accum 2 through the real SFT trainer: after the first micro-step no gradient is
    set; after the second (the Trainer's sync step) the gradient is PCGrad of each task's
    mean token loss / 2 summed over the two micro-batches, projected once."""
    data = [{"prompt": f"Question {i % 2}: ", "completion": c * (6 + i), "task_ids": t}
            for i in range(4) for t, c in enumerate("az")]  # fmt: skip
    trainer, _ = trainer_for("sft", "pcgrad", az_base, data, tmp_path,
                             trl={**TRL, "grad_accum": 2})  # fmt: skip
    loader = iter(trainer.get_train_dataloader())
    micro = [next(loader), next(loader)]
    trainer.model.zero_grad()
    for k, batch in enumerate(micro):
        trainer.accelerator.gradient_state._set_sync_gradients(k == 1)  # as Trainer's loop
        trainer.training_step(trainer.model, dict(batch))
        if k == 0:
            assert all(p.grad is None for p in trainer.model.parameters())
    got = flat_grads(trainer.model)

    ref = transformers.AutoModelForCausalLM.from_pretrained(az_base)
    per_micro = []
    for batch in micro:
        grads = []
        for t in (0, 1):
            m = batch["task_ids"] == t
            logits = ref(input_ids=batch["input_ids"][m],
                         attention_mask=batch["attention_mask"][m]).logits  # fmt: skip
            labels = batch["labels"][m][:, 1:]
            loss = F.cross_entropy(logits[:, :-1].transpose(1, 2), labels, ignore_index=-100)
            grads.append(task_gradient(ref, loss / 2))
        per_micro.append(grads)
    summed = [per_micro[0][t] + per_micro[1][t] for t in (0, 1)]
    assert_close_update(got, "pcgrad", summed)
    # projecting each micro-batch apart is another update
    apart = sum(expected_update("pcgrad", grads) for grads in per_micro)
    once = expected_update("pcgrad", summed)
    assert np.abs(apart - once).max() > 1e-3 * np.abs(got).max()


@pytest.mark.parametrize(("model_dtype", "expected"),
                         [("float32", torch.float32), ("bfloat16", torch.bfloat16)])  # fmt: skip
def test_model_dtype_sets_the_dtype_trl_loads_the_base_model_in(model_dtype, expected, az_base,
                                                                tmp_path):  # fmt: skip
    """mtl.trl.model_dtype: TRL loads a model given by path in float32 unless told; the
    option's bfloat16 loads (and trains) the weights in bfloat16."""
    data = [{"prompt": "Q: ", "completion": "a", "task_ids": 0}]
    trainer, _ = trainer_for("sft", "baseline", az_base, data, tmp_path, model_dtype=model_dtype)
    assert {p.dtype for p in trainer.model.parameters()} == {expected}


def task_reward(completions, task, **kwargs):
    """Conflicting tasks: arith rewards high character codes, trivia low ones."""
    sign = {"arith": 1.0, "trivia": -1.0}
    pairs = zip(completions, task, strict=True)
    return [sign[t] * sum(map(ord, text)) / 100 for text, t in pairs]


REWARDS = [task_reward, format_reward]  # the recipe weighs them 1 and format_weight (0 here)


@pytest.mark.parametrize("task_loss", ["batch_share", "task_mean"])
@pytest.mark.parametrize("method", ["baseline", "pcgrad"])
def test_grpo_step_is_the_surgery_of_per_task_policy_gradients(method, task_loss, az_base,
                                                               tmp_path):  # fmt: skip
    """task_loss batch_share: each task's policy loss over the batch's completion tokens;
    task_mean (seed 000's PCGrad path): over the task's own completion tokens."""
    base = az_base
    torch.manual_seed(0)
    # a prompt per task, opposite rewards
    data = [{"prompt": f"Question {i}: ", "answer": "", "aliases": [], "fmt": "gsm8k",
             "task": t} for i, t in enumerate(TASKS)]  # fmt: skip
    trainer, _ = trainer_for("grpo", method, base, data, tmp_path, reward_funcs=REWARDS,
                             task_loss=task_loss)  # fmt: skip
    trainer.current_gradient_accumulation_steps = 1  # set by train(), which is not called here
    score = trainer._generate_and_score_completions

    def shorter(inputs):  # the tiny model never stops: end task 0's first completion early
        out = score(inputs)
        first = int((out["task_ids"] == 0).nonzero()[0])
        out["completion_mask"][first, -2:] = 0
        out["num_items_in_batch"] = out["completion_mask"].sum()  # TRL's count, 1 process
        return out

    trainer._generate_and_score_completions = shorter
    scored = {}
    prepare = trainer._prepare_inputs
    trainer._prepare_inputs = lambda batch: scored.update(prepare(batch)) or dict(scored)
    generation_batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.zero_grad()
    trainer.training_step(trainer.model, generation_batch)
    got = flat_grads(trainer.model)
    assert trainer._step == 1  # GRPO's micro-step count still advances

    # independent: with beta 0 and one iteration the ratio is 1, so TRL's dapo loss has the
    # gradient of -sum(A_i * log p(completion tokens)) / (completion tokens in the batch)
    ref = transformers.AutoModelForCausalLM.from_pretrained(base)
    ids = torch.cat([scored["prompt_ids"], scored["completion_ids"]], 1)
    mask = torch.cat([scored["prompt_mask"], scored["completion_mask"]], 1)
    n_comp = scored["completion_ids"].shape[1]
    adv, cmask = scored["advantages"], scored["completion_mask"]
    assert adv.abs().sum() > 0
    grads = []
    for t in (0, 1):
        m = scored["task_ids"] == t
        logits = ref(input_ids=ids[m], attention_mask=mask[m]).logits[:, -n_comp - 1 : -1]
        logp = logits.log_softmax(-1).gather(-1, scored["completion_ids"][m][..., None])[..., 0]
        tokens = cmask.sum() if task_loss == "batch_share" else cmask[m].sum()
        loss = -(adv[m][:, None] * logp * cmask[m]).sum() / tokens
        grads.append(task_gradient(ref, loss))
    assert_close_update(got, method, grads)
    shares = [float(cmask[scored["task_ids"] == t].sum() / cmask.sum()) for t in (0, 1)]
    assert shares[0] != shares[1]  # unequal token shares: the two task losses differ


# -- whole runs -------------------------------------------------------------------------------
def write_rows(tmp_path: Path):
    train = [row(i, t) for i in range(4) for t in TASKS]
    val = [row(i, t) for i in range(10, 12) for t in TASKS]
    write_jsonl(tmp_path / "train.jsonl", train)
    write_jsonl(tmp_path / "val.jsonl", val)
    return str(tmp_path / "train.jsonl"), str(tmp_path / "val.jsonl")


def run_sft(tmp_path, base, name, values, *, callbacks=None, method="pcgrad", epochs=6,
            trl=TRL):  # fmt: skip
    """A TRL SFT run whose validation values are scripted (value at each validation)."""
    train, val = write_rows(tmp_path)
    calls = []

    def validator(*args, **kwargs):
        def validate(model):
            calls.append(model.training)
            return values[len(calls) - 1]

        return validate

    trl_train._validator, orig = validator, trl_train._validator
    try:
        return trl_train.run_trl_training(
            objective="sft", model_name=name, train_rows=train, validation_rows=val,
            tasks=TASKS, method=method, reduction="sum", base_model=base, trl=trl,
            formats=FORMATS, training={**TRAINING, "epochs": epochs},
            validation={"every_epochs": 1, "before_training": True, "metric": "loss",
                        "batch_size": 8, "max_new_tokens": None, "temperature": 0.0, "top_p": 1.0},
            early_stopping={"enabled": True, "min_epochs": 3, "patience": 2, "min_delta": 0.01,
                            "mode": "min"},
            checkpoints={"save_every_epochs": 2, "keep_last": 1}, seed=3,
            out_dir=str(tmp_path / f"{name}_out"), state_dir=str(tmp_path / f"{name}_state"),
            callbacks=callbacks,
        )  # fmt: skip
    finally:
        trl_train._validator = orig


# validations at epochs 0..6: best 0.8 at epoch 2; epochs 3 and 4 do not improve by > 0.01
# (patience 2, min epochs 3): the run stops after epoch 4. Saved: epoch 2 (every 2) and 4
# (save_every, the stop); keep_last 1 keeps epoch 4 and the best saved one, epoch 2.
VALUES = [1.0, 0.9, 0.8, 0.795, 0.85, 0.7, 0.6]


def test_early_stopping_ends_a_trl_run_and_only_kept_checkpoints_are_published(base, tmp_path):
    m = run_sft(tmp_path, base, "pcgrad_seed3", VALUES)
    assert m["stop_reason"] == "early_stopping" and m["last_epoch"] == 4
    assert [v["value"] for v in m["validations"]] == VALUES[:5]
    spe = m["steps_per_epoch"]
    assert spe == 2  # 8 rows, 4 per step
    assert m["checkpoints"] == [
        {"step": 2 * spe, "epoch": 2, "validation": 0.8, "selected": True},
        {"step": 4 * spe, "epoch": 4, "validation": 0.85, "selected": False},
    ]
    out = tmp_path / "pcgrad_seed3_out"
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoint-4", "checkpoint-8", "mtl_manifest.json", "training_log.csv"]  # fmt: skip
    assert json.loads((out / "mtl_manifest.json").read_text()) == m
    info = read_json(out / "checkpoint-4" / "ftlab_checkpoint.json")
    assert (info["epoch"], info["step"], info["validation_value"]) == (2, 4, 0.8)
    assert not (out / "checkpoint-8" / "optimizer.pt").exists()
    assert not (tmp_path / "pcgrad_seed3_state").exists()
    log_steps = (out / "training_log.csv").read_text().splitlines()[1:]
    assert int(log_steps[-1].split(",")[0]) == 4 * spe  # no step after the stop


class Kill(transformers.TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        raise KeyboardInterrupt(f"killed after step {state.global_step}")


@pytest.mark.parametrize("composition", ["shuffled", "per_task"])
def test_resume_after_a_kill_ends_as_an_uninterrupted_run(base, tmp_path, composition):
    """per_task: the sampler's epochs are a function of (seed, epoch), so the resumed run
    draws the batches the uninterrupted run drew."""
    trl = {**TRL, "batch_composition": composition}
    whole = run_sft(tmp_path / "a", base, "pcgrad_seed3", VALUES, trl=trl)
    with pytest.raises(KeyboardInterrupt):
        run_sft(tmp_path / "b", base, "pcgrad_seed3", VALUES, callbacks=[Kill()], trl=trl)
    state = tmp_path / "b" / "pcgrad_seed3_state"
    assert (state / "checkpoint-4" / "mtl_state.json").is_file()
    # the re-run resumes at epoch 2: its validations continue the scripted sequence there
    resumed = run_sft(tmp_path / "b", base, "pcgrad_seed3", VALUES[3:], trl=trl)
    assert resumed == whole
    for step in (4, 8):
        a = tmp_path / "a" / "pcgrad_seed3_out" / f"checkpoint-{step}" / "model.safetensors"
        b = tmp_path / "b" / "pcgrad_seed3_out" / f"checkpoint-{step}" / "model.safetensors"
        from safetensors.torch import load_file

        wa, wb = load_file(a), load_file(b)
        for k in wa:
            torch.testing.assert_close(wb[k], wa[k], atol=1e-6, rtol=1e-5)
