"""GRPO for tool-integrated reasoning: TRL's GRPOTrainer with a multi-turn `rollout_func`.

Each rollout is SimpleTIR's loop (ftlab.tir.rollout) with the same sandbox as evaluation. The
completion handed to TRL is the whole transcript after the prompt - the model's turns and the
sandbox observations between them - with `env_mask` (TRL's mask for tokens the model did not
generate) 0 on observations, so only the model's own tokens enter the loss. With
`mask_void_turns`, a trajectory that has a void turn (no code, no answer) is masked out
entirely (env_mask all 0), as SimpleTIR drops it from the policy update. Single-turn baseline:
the same rule with tools off (one reply, nothing runs).

Generation: HF generate on the policy in the trainer (CPU or GPU), or TRL's colocated vLLM
engine (`trainer.vllm_generation`, weights synced by TRL before each rollout) when vLLM is
installed and a GPU is present. Reward: 1 when the transcript's last \\boxed{} matches the gold
answer under `tir.reward` (its own answer check, so a change of the evaluation scorer never
retrains), else 0. Resume and publishing are ftlab.llm.train's.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import torch

from ftlab.io import read_jsonl, sha256_file
from ftlab.llm.train import FORMAT_VERSION, _base_model_identity, _load_tokenizer, _run
from ftlab.tir.generation import hf_generate
from ftlab.tir.rollout import Generated, run_rollouts
from ftlab.tir.sandbox import Sandbox, SandboxLimits
from ftlab.tir.scoring import Scorer

log = logging.getLogger("ftlab.tir.train")
LR_SCHEDULERS = ("constant", "linear", "cosine")


@dataclass(frozen=True)
class TIRRecipe:
    tools: bool
    mask_void_turns: bool
    max_turns: int
    lr: float
    max_steps: int
    save_steps: int
    batch_size: int
    grad_accum: int
    num_generations: int
    max_new_tokens: int  # per model turn
    max_completion_length: int  # the whole transcript after the prompt
    temperature: float
    top_p: float
    beta: float
    warmup_steps: float
    use_vllm: bool
    # a turn's model input keeps the context's last N tokens (SimpleTIR max_prompt_length)
    max_prompt_tokens: int | None
    # SimpleTIR train.sh: CLIP_RATIO=0.2_0.28 (clip-higher), LR_DECAY=1.0 (a constant rate)
    epsilon: float = 0.2
    epsilon_high: float = 0.28
    lr_scheduler: str = "constant"  # constant | linear | cosine

    def __post_init__(self):
        if (self.batch_size * self.grad_accum) % self.num_generations:
            raise ValueError(
                f"tir.grpo: batch_size*grad_accum ({self.batch_size}*{self.grad_accum}) must be "
                f"a multiple of num_generations ({self.num_generations})"
            )
        if self.max_turns < 1:
            raise ValueError("max_turns must be at least 1")
        if self.lr_scheduler not in LR_SCHEDULERS:
            raise ValueError(
                f"tir.grpo.lr_scheduler must be one of {', '.join(LR_SCHEDULERS)}, not "
                f"{self.lr_scheduler!r}"
            )
        if self.epsilon_high < self.epsilon:
            raise ValueError(
                f"tir.grpo.epsilon_high ({self.epsilon_high}) must be at least tir.grpo.epsilon "
                f"({self.epsilon})"
            )

    @property
    def trl_lr_scheduler(self) -> str:
        """The transformers scheduler name (a constant rate after warmup: constant_with_warmup)."""
        if self.lr_scheduler == "constant" and self.warmup_steps:
            return "constant_with_warmup"
        return self.lr_scheduler

    def hyperparameters(self) -> dict:
        hp = asdict(self)
        del hp["use_vllm"]  # the generation backend does not define the run
        return hp

    def trl_config(self, state_dir: str, seed: int, vllm: bool):
        from trl import GRPOConfig

        on_gpu = torch.cuda.is_available()
        return GRPOConfig(
            output_dir=str(state_dir), learning_rate=self.lr, max_steps=self.max_steps,
            per_device_train_batch_size=self.batch_size,
            gradient_accumulation_steps=self.grad_accum, warmup_steps=self.warmup_steps,
            seed=seed, data_seed=seed, save_strategy="steps", save_steps=self.save_steps,
            save_total_limit=None, save_only_model=False, logging_steps=1, report_to="none",
            disable_tqdm=True, use_cpu=not on_gpu, bf16=on_gpu, dataloader_num_workers=0,
            num_generations=self.num_generations,
            max_completion_length=self.max_completion_length, temperature=self.temperature,
            top_p=self.top_p, beta=self.beta, remove_unused_columns=False, use_vllm=vllm,
            vllm_mode="colocate", log_completions=False, epsilon=self.epsilon,
            epsilon_high=self.epsilon_high, lr_scheduler_type=self.trl_lr_scheduler,
        )  # fmt: skip


def _policy_generator(trainer, recipe: TIRRecipe):
    """A turn generator on the trainer's current policy (vLLM engine or HF generate)."""
    tok = trainer.processing_class

    def generate(contexts: list[str]) -> list[Generated]:
        if trainer.use_vllm:
            ids = [tok(c, add_special_tokens=False)["input_ids"] for c in contexts]
            if recipe.max_prompt_tokens is not None:  # the context's end, as HF generate
                ids = [i[-recipe.max_prompt_tokens :] for i in ids]
            engine = trainer.vllm_generation
            # TRL's engine generates max_completion_length tokens (the whole transcript's cap);
            # one turn's budget is max_new_tokens, as with HF generate
            whole, engine.max_completion_length = (
                engine.max_completion_length,
                recipe.max_new_tokens,
            )
            try:
                _, replies, _, _ = engine.generate(ids, None, 1)
            finally:
                engine.max_completion_length = whole
        else:
            model = trainer.accelerator.unwrap_model(trainer.model)
            was_training = model.training
            model.eval()
            _, replies = hf_generate(
                model, tok, contexts, max_new_tokens=recipe.max_new_tokens,
                temperature=recipe.temperature, top_p=recipe.top_p, add_special_tokens=False,
                stop_at_code=recipe.tools, max_prompt_tokens=recipe.max_prompt_tokens,
            )  # fmt: skip
            model.train(was_training)
        texts = tok.batch_decode(replies, skip_special_tokens=True)
        return [Generated(t, len(r)) for t, r in zip(texts, replies, strict=True)]

    return generate


def completion_tokens(tok, turns: list[dict], void_masked: bool) -> tuple[list[int], list[int]]:
    """Token ids of a transcript after its prompt and env_mask: 1 on the model's turns, 0 on
    sandbox observations, 0 everywhere when the trajectory is masked for a void turn."""
    ids, mask = [], []
    for turn in turns:
        for text, own in ((turn["text"], 1), (turn["observation"], 0)):
            seg = tok(text, add_special_tokens=False)["input_ids"] if text else []
            ids += seg
            mask += [0 if void_masked else own] * len(seg)
    if not ids:  # an empty reply still needs one position (TRL pads per completion)
        ids, mask = [tok.eos_token_id], [0]
    return ids, mask


def make_rollout_func(recipe: TIRRecipe, sandbox: Sandbox | None):
    def rollout_func(prompts: list[str], trainer) -> dict:
        tok = trainer.processing_class
        problems = [{"id": str(i), "prompt": p} for i, p in enumerate(prompts)]
        trajs = run_rollouts(
            problems, 1, _policy_generator(trainer, recipe), sandbox,
            max_turns=recipe.max_turns, tools=recipe.tools,
        )  # fmt: skip
        prompt_ids, completion_ids, env_mask, transcripts = [], [], [], []
        voids = 0
        for t in trajs:
            void = any(turn["void"] for turn in t.turns)
            voids += void
            ids, mask = completion_tokens(tok, t.turns, recipe.mask_void_turns and void)
            ids, mask = ids[: recipe.max_completion_length], mask[: recipe.max_completion_length]
            prompt_ids.append(tok(t.prompt, add_special_tokens=False)["input_ids"])
            completion_ids.append(ids)
            env_mask.append(mask)
            transcripts.append(t.transcript)
        metrics = getattr(trainer, "_metrics", None)
        if metrics is not None:
            n = len(trajs)
            m = metrics["train"]
            m["tir/void_sample_rate"].append(voids / n)
            m["tir/mean_turns"].append(sum(len(t.turns) for t in trajs) / n)
            tool = sum(any(x["tool"] for x in t.turns) for t in trajs)
            m["tir/tool_usage_rate"].append(tool / n)
        return {
            "prompt_ids": prompt_ids,
            "completion_ids": completion_ids,
            "logprobs": None,
            "env_mask": env_mask,
            "transcript": transcripts,
        }

    return rollout_func


def make_reward(scorer: Scorer):
    """1.0 when the rollout's answer - extracted from its transcript by the scorer's own
    extraction (tir.reward.extraction), as evaluation extracts it - is correct, else 0.0."""

    def tir_correct(completions, transcript, answer, **kwargs) -> list[float]:
        return [
            float(scorer.correct(scorer.extract({"transcript": t}), a))
            for t, a in zip(transcript, answer, strict=True)
        ]

    return tir_correct


def _vllm_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()


def run_tir_grpo(
    recipe: TIRRecipe, *, base_model: str, rows_path: str, prompt_template: str,
    sandbox_limits: dict, scorer: dict, out_dir: str, state_dir: str, seed: int,
    callbacks: list | None = None,
) -> None:  # fmt: skip
    """Train on rows {id, question, answer}; checkpoints per save_steps under out_dir."""
    from datasets import Dataset
    from trl import GRPOTrainer

    vllm = bool(recipe.use_vllm and _vllm_available())
    if recipe.use_vllm and not vllm:
        log.warning("use_vllm requested but vLLM or a GPU is unavailable: generating with HF")
    rows = read_jsonl(rows_path)
    if not rows:
        raise ValueError(f"{rows_path}: no training rows")
    tokenizer = _load_tokenizer(base_model, padding_side="left")
    data = [{"prompt": prompt_template.format(question=r["question"]), "answer": r["answer"]}
            for r in rows]  # fmt: skip
    sandbox = Sandbox(SandboxLimits.from_config(sandbox_limits)) if recipe.tools else None
    inputs = {
        "format": FORMAT_VERSION,
        "method": "tir_grpo",
        **_base_model_identity(base_model),
        "data_sha256": sha256_file(rows_path),
        "prompt_template": prompt_template,
        "n_prompts": len(data),
        "seed": seed,
        "max_steps": recipe.max_steps,
        "hyperparameters": recipe.hyperparameters(),
        "sandbox": sandbox_limits,
        "scorer": scorer,
    }
    config = recipe.trl_config(state_dir, seed, vllm)

    def factory(cbs):
        return GRPOTrainer(
            model=base_model,
            reward_funcs=[make_reward(Scorer(**scorer))],
            args=config,
            train_dataset=Dataset.from_list(data),
            processing_class=tokenizer,
            callbacks=cbs,
            rollout_func=make_rollout_func(recipe, sandbox),
        )

    _run(trainer_factory=factory, inputs=inputs, out_dir=out_dir, state_dir=state_dir,
         meta={"sandbox_isolation": sandbox.isolation if sandbox else None},
         callbacks=callbacks)  # fmt: skip
