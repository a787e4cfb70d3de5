"""Set-up of one run of the world-model trainer (ftlab.train): device and processes (ftlab.ddp),
model, data, optimizer and schedule, resumed progress, and the step (eager or captured)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch

from ftlab import ddp
from ftlab.batches import Batches, StaticBatches, make_batches, read_rows
from ftlab.device import (
    MASTER_WEIGHTS,
    autocast,
    check_precision,
    device_info,
    grad_scaler,
    resolve_device,
)
from ftlab.modeling import n_params
from ftlab.train_checkpoints import (
    _set_rng_state,
    load_or_build_model,
    load_trainer_state,
    seed_everything,
)
from ftlab.train_eager import lr_multiplier
from ftlab.train_graph import CapturedStep, compute_copy

log = logging.getLogger("ftlab.train")


@dataclass
class _Run:
    """What one run of the world-model trainer trains with (filled in by the set-up)."""

    model_name: str
    training: dict
    total_steps: int
    dev: torch.device
    world: ddp.World
    precision: str
    fast: bool  # the static step (CapturedStep), else the eager one
    graphs: bool = False  # the static step captured as a CUDA graph
    compiled: bool = False  # the static step's model compiled by torch.compile
    model: Any = None
    net: Any = None  # DDP around the model with several processes, the model itself otherwise
    tokenizer: Any = None
    batches: Batches | None = None
    rows: int = 0
    optimizer: Any = None
    scheduler: Any = None  # None on the captured path, which applies lr_multiplier itself
    lr_tensor: torch.Tensor | None = None  # the captured path's lr (a device tensor)
    scaler: Any = None  # the fp16 GradScaler, or None
    multiplier: Callable[[int], float] | None = None
    captured: CapturedStep | None = None  # the fast path's step
    amp: Callable | None = None  # the eager paths' autocast factory

    @property
    def max_grad_norm(self):
        return self.training.get("max_grad_norm", 1.0)


@dataclass
class _Progress:
    """Where a run stands after `step` optimizer steps (what trainer_state.pt stores)."""

    step: int = 0
    log_rows: list[dict] = field(default_factory=list)
    loss_sum: float = 0.0  # since the last log row (the fast path sums on the device)
    loss_n: int = 0
    elapsed0: float = 0.0  # elapsed_s of the steps before this process (a resume)


def _set_up_device(device: str, precision: str, cuda_graphs: bool, torch_compile: bool = False):
    """(device, world, precision, whether the static step runs, whether it is captured)."""
    dev = resolve_device(device)
    world = ddp.World.from_env(dev)  # several processes when launched (ftlab.launch)
    dev = world.device(dev)
    precision = check_precision(precision)
    # The captured step has no gradient all-reduce: data-parallel runs take the eager step.
    graphs = bool(cuda_graphs) and dev.type == "cuda" and world.size == 1
    # Master weights and the compiled model live in the static step (any device).
    static = graphs or precision in MASTER_WEIGHTS or bool(torch_compile)
    if precision in MASTER_WEIGHTS and world.size > 1:
        raise ValueError(
            f"precision {precision} trains in one process (the static step); with "
            f"{world.size} processes use precision bf16 (autocast) instead"
        )
    if torch_compile and world.size > 1:
        raise ValueError(f"torch_compile trains in one process (the static step), not {world.size}")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)  # graph capture and streams use the current device
    return dev, world, precision, static, graphs


def _set_up(run: _Run, resume, init_checkpoint, model_cfg, train_rows, seed) -> _Progress:
    """Model, data, optimizer and schedule of the run; the progress resumed, or step 0."""
    training, dev = run.training, run.dev
    run.model, run.tokenizer = load_or_build_model(resume, init_checkpoint, model_cfg, seed, dev)
    run.net = ddp.wrap(run.model, run.world, dev)  # the model itself in a single process

    rows = read_rows(train_rows)
    if not rows:
        raise ValueError(f"no training rows in {train_rows}")
    run.rows = len(rows)
    run.batches = make_batches(rows, run.tokenizer, run.model, training["batch_size"], seed)
    run.multiplier = partial(lr_multiplier, warmup=training["warmup_steps"], total=run.total_steps)
    _make_optimizer(run)
    run.scaler = grad_scaler(dev, run.precision)
    if resume is None:
        seed_everything(seed)
        log.info("starting %s from scratch (step 0 of %d)", run.model_name, run.total_steps)
        return _Progress()
    # CPU: loaded as saved; GPU: via the CPU, so a resume on another GPU index works
    # (load_state_dict moves the optimizer state onto the parameters' device).
    where = None if dev.type == "cpu" else "cpu"
    state = load_trainer_state(resume, run.optimizer, run.scheduler, map_location=where)
    if run.lr_tensor is not None:  # the saved group holds a copy of the lr tensor: use ours
        for group in run.optimizer.param_groups:
            group["lr"] = run.lr_tensor
    if run.scaler is not None and state.get("scaler"):
        run.scaler.load_state_dict(state["scaler"])
    _set_rng_state(state["rng"])
    progress = _Progress(state["step"], state["log_rows"], state["loss_sum"], state["loss_n"],
                         state["elapsed_s"])  # fmt: skip
    log.info("resuming from step %d of %d (%s)", progress.step, run.total_steps, resume)
    return progress


DECAYED_MODULES = (torch.nn.Linear, torch.nn.Embedding)


def decay_param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW parameter groups as the paper's HF Trainer forms them: weight decay only on the
    weights of linear and embedding layers; biases and normalization weights (LayerNorm,
    RMSNorm) get none. On Qwen2 this equals Trainer.get_decay_parameter_names (its rule: no
    decay for nn.LayerNorm children and names matching bias/layernorm/rmsnorm/norm;
    tests/test_train_groups.py checks it on the paper model). Parameters keep the
    model's order within each group; a tied parameter counts once."""
    decay_ids = {
        id(m.weight)
        for m in model.modules()
        if isinstance(m, DECAYED_MODULES) and isinstance(getattr(m, "weight", None), torch.Tensor)
    }
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if id(p) in decay_ids], "weight_decay": weight_decay},
        {"params": [p for p in params if id(p) not in decay_ids], "weight_decay": 0.0},
    ]


def _make_optimizer(run: _Run) -> None:
    training, model = run.training, run.model
    groups = decay_param_groups(model, training["weight_decay"])
    if run.fast:  # lr a device tensor the static step reads; on CUDA fused + capturable AdamW
        run.lr_tensor = torch.tensor(float(training["lr"]), dtype=torch.float32, device=run.dev)
        cuda = {"fused": True, "capturable": True} if run.dev.type == "cuda" else {}
        run.optimizer = torch.optim.AdamW(groups, lr=run.lr_tensor, **cuda)
    else:
        run.optimizer = torch.optim.AdamW(
            groups, lr=training["lr"], **({"fused": True} if run.dev.type == "cuda" else {})
        )
        run.scheduler = torch.optim.lr_scheduler.LambdaLR(run.optimizer, run.multiplier)


def _log_set_up(run: _Run, threads: int) -> dict:
    """Log what trains where; returns the device info the checkpoints record."""
    where_info = device_info(run.dev, run.precision)
    log.info(
        "%s: %d rows, %d params, %d steps (%d/epoch), batch %d, threads %d, on %s %s, %s",
        run.model_name, run.rows, n_params(run.model), run.total_steps,
        run.batches.steps_per_epoch, run.training["batch_size"], threads, run.dev,
        where_info["gpu_name"] or "", run.precision,
    )  # fmt: skip

    world = run.world
    if world.size > 1:
        log.info("data parallel: rank %d of %d, %d rows per rank and step", world.rank,
                 world.size, math.ceil(run.training["batch_size"] / world.size))  # fmt: skip
    return where_info


def _set_up_step(run: _Run, progress: _Progress, seed: int, where_info: dict) -> None:
    """The static (captured) step on the fast path, else the eager paths' autocast factory."""
    if run.fast:
        batches = run.batches
        static = StaticBatches(batches.ids, batches.lengths, run.training["batch_size"], seed,
                               run.dev)  # fmt: skip
        run.captured = CapturedStep(
            run.model, run.optimizer, static, run.max_grad_norm, lr=run.lr_tensor,
            precision=run.precision, scaler=run.scaler, graph=run.graphs,
            compute_model=compute_copy(run.model, run.precision),  # run.model: the masters
            compile_model=run.compiled,
        )  # fmt: skip
        run.captured.loss_sum.fill_(progress.loss_sum)  # from the checkpoint (0 when fresh)
        where_info["cuda_graphs"] = run.captured.graph is not None
    else:
        where_info["cuda_graphs"] = False
        run.amp = partial(autocast, run.dev, run.precision)
