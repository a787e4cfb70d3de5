"""Recipes of the TRL trainers: the validated `llm.sft` / `llm.grpo` config sections as frozen
dataclasses.

A recipe's fields are exactly its config section's keys (config/schema.yaml documents them and
holds their defaults), so each hyperparameter is named once here and every knob the schema
documents reaches the trainer through ``trl_config``; tests/test_llm_train.py checks that the
fields and the schema keys agree.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

log = logging.getLogger("ftlab.llm.train")


def resolve_bf16(bf16: bool | None) -> bool:
    """None: bf16 exactly when the GPU supports it; True without a GPU: float32 (warned)."""
    import torch

    if bf16 is None:
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if bf16 and not torch.cuda.is_available():
        log.warning("bf16 requested but no GPU: training in float32 on CPU")
        return False
    return bf16


@dataclass(frozen=True)
class _Recipe:
    """What SFT and GRPO share: the optimisation schedule and the checkpoint grid."""

    section: ClassVar[str]  # the config section under `llm:`
    method: ClassVar[str]  # the trainer's name in checkpoint metadata

    lr: float
    max_steps: int
    save_steps: int
    batch_size: int
    grad_accum: int
    warmup_steps: float
    warmup_rounding: str
    lr_scheduler_type: str
    weight_decay: float
    bf16: bool | None

    @classmethod
    def from_config(cls, section: Mapping[str, Any]):
        """The recipe of a validated config section (every key present: defaults filled)."""
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(section) - set(names))
        missing = [n for n in names if n not in section]
        if unknown or missing:
            raise ValueError(
                f"config section 'llm.{cls.section}': unknown keys {unknown}, missing {missing}"
            )
        return cls(**{n: section[n] for n in names})

    def hyperparameters(self) -> dict:
        """Everything that defines the training run (recorded in each checkpoint and hashed
        into the resume fingerprint); bf16 as it will be used."""
        return {**asdict(self), "bf16": resolve_bf16(self.bf16)}

    def warmup(self) -> float:
        """The warmup handed to the trainer: whole steps as given; a fraction of max_steps
        turned into steps by warmup_rounding - ceil is transformers' own rule
        (TrainingArguments.get_warmup_steps), floor VeRL's int(ratio x total steps)."""
        if 0 < self.warmup_steps < 1:
            steps = self.max_steps * self.warmup_steps
            return math.ceil(steps) if self.warmup_rounding == "ceil" else math.floor(steps)
        return self.warmup_steps

    def _training_args(self, state_dir: str, seed: int) -> dict:
        """TrainingArguments shared by SFT and GRPO."""
        import torch

        on_gpu = torch.cuda.is_available()
        return {
            "output_dir": str(state_dir),
            "learning_rate": self.lr,
            "max_steps": self.max_steps,
            "per_device_train_batch_size": self.batch_size,
            "gradient_accumulation_steps": self.grad_accum,
            "lr_scheduler_type": self.lr_scheduler_type,
            "warmup_steps": self.warmup(),
            # AdamW's decoupled decay; HF's Trainer skips biases and norm weights
            "weight_decay": self.weight_decay,
            "seed": seed,
            "data_seed": seed,
            "save_strategy": "steps",
            "save_steps": self.save_steps,
            "save_total_limit": None,  # every checkpoint is published
            "save_only_model": False,  # optimizer etc. are needed to resume
            "logging_steps": 1,
            "report_to": "none",
            "disable_tqdm": True,
            "use_cpu": not on_gpu,
            "bf16": resolve_bf16(self.bf16),
            "fp16": False,
            # Recompute activations only where memory matters; on CPU (tests, demo) it only costs.
            "activation_checkpointing": on_gpu,
            "dataloader_num_workers": 0,
        }


@dataclass(frozen=True)
class SFTRecipe(_Recipe):
    """Supervised fine-tuning on prompt/completion records, loss on the completion only."""

    section: ClassVar[str] = "sft"
    method: ClassVar[str] = "sft"

    max_length: int
    # The length as configured, recorded with the run; the trainer always gets max_steps,
    # which the study computed from it (ftlab.llm.study.epoch_steps), so the checkpoint grid
    # is fixed before training.
    epochs: float | None = None

    def trl_config(self, state_dir: str, seed: int):
        from trl import SFTConfig

        return SFTConfig(
            **self._training_args(state_dir, seed),
            max_length=self.max_length,
            completion_only_loss=True,
            packing=False,
            dataset_num_proc=None,
        )


@dataclass(frozen=True)
class GRPORecipe(_Recipe):
    """GRPO with verifiable rewards: correctness + format_weight * format.

    batch_size counts completions per device and step (TRL's convention), so batch_size *
    grad_accum must be a multiple of num_generations.
    """

    section: ClassVar[str] = "grpo"
    method: ClassVar[str] = "grpo"

    num_generations: int
    max_prompt_length: int
    max_completion_length: int
    beta: float
    temperature: float
    format_weight: float
    use_vllm: bool

    def __post_init__(self):
        if (self.batch_size * self.grad_accum) % self.num_generations:
            raise ValueError(
                f"batch_size*grad_accum ({self.batch_size}*{self.grad_accum}) must be a multiple "
                f"of num_generations ({self.num_generations})"
            )

    def hyperparameters(self) -> dict:
        hp = super().hyperparameters()
        del hp["use_vllm"]  # the generation backend does not define the run
        return hp

    def trl_config(self, state_dir: str, seed: int, *, vllm: bool):
        """`vllm`: whether vLLM is used (use_vllm, when vLLM and a GPU are there)."""
        from trl import GRPOConfig

        return GRPOConfig(
            **self._training_args(state_dir, seed),
            num_generations=self.num_generations,
            max_completion_length=self.max_completion_length,
            temperature=self.temperature,
            beta=self.beta,
            reward_weights=[1.0, self.format_weight],  # correctness_reward, format_reward
            remove_unused_columns=False,  # the reward functions read answer/aliases/fmt
            use_vllm=vllm,
            vllm_mode="colocate",
            log_completions=False,
        )


RECIPES: dict[str, type[_Recipe]] = {"sft": SFTRecipe, "grpo": GRPORecipe}


def recipe_for(trainer: str, section: Mapping[str, Any]) -> SFTRecipe | GRPORecipe:
    """The recipe of `trainer` ("sft" or "grpo") from its validated config section."""
    return RECIPES[trainer].from_config(section)
