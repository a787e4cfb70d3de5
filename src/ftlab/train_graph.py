"""The CUDA-graph fast path of the world-model trainer (ftlab.train): the captured step."""

from __future__ import annotations

import copy
import logging

import torch

from ftlab.batches import StaticBatches
from ftlab.device import MASTER_WEIGHTS, autocast

log = logging.getLogger("ftlab.train")


class CapturedStep:
    """The whole optimizer step on static buffers, captured as one CUDA graph (gpu-notes.md).

    Forward (attention_mask=None, use_cache=False), backward (into fresh gradients),
    gradient clipping (foreach, no host sync), optional fp16 loss scaling and the fused
    capturable AdamW step (the model optionally compiled by torch.compile first) are recorded
    once and replayed per step; between replays only the batch indices (`data.load`) and the
    learning rate tensor change. Warm-up iterations on a side stream precede the capture;
    they run with lr 0, and the parameters, optimizer state and loss scaler are restored
    afterwards, so they leave no trace in the training.

    `graph=False` (or a capture that fails) runs the same body eagerly each step: same
    static shapes and arithmetic, no graph (this path also runs on the CPU, which the tests
    use to check it against the plain eager step).

    `compute_model` (precision bf16_weights): a bfloat16 copy of `model` runs the forward and
    backward passes; its gradients are copied (as float32) into `model`'s, which are clipped
    and stepped by the optimizer (float32 master weights and state), and the updated weights
    are copied back into the copy. `model` stays the one that is saved.
    """

    WARMUP = 3

    def __init__(self, model, optimizer, data: StaticBatches, max_grad_norm, *, lr: torch.Tensor,
                 precision: str = "fp32", scaler=None, graph: bool = True,
                 compute_model=None, compile_model: bool = False):  # fmt: skip
        self.model, self.optimizer, self.data = model, optimizer, data
        self.max_grad_norm, self.lr, self.scaler = max_grad_norm, lr, scaler
        self.precision, self.device = precision, data.device
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.master = compute_model is not None  # bf16_weights: model holds the masters
        self.compute = compute_model if self.master else model
        self.compute_params = [p for p in self.compute.parameters() if p.requires_grad]
        # torch_compile: the forward (and, through it, the backward) compiled by inductor;
        # fixed shapes, so it compiles once, in the first warm-up step or the first step.
        self.forward = torch.compile(self.compute, dynamic=False) if compile_model else self.compute
        if self.master:
            shapes = [p.shape for p in self.params]
            if [p.shape for p in self.compute_params] != shapes:
                raise ValueError("compute_model must have the parameters of model")
            # Flat buffers for the copy's weights and the master gradients, so each copy
            # between the two models is a concatenation and one cast, not a kernel per tensor.
            # The master weights stay separate tensors (they are what the checkpoints save).
            self._flat_weights = _flatten(self.compute_params)
            self._flat_master_grads = _flat_grads(self.params)
        self.graph = None
        # Autocast without its cast cache where a graph is captured, in the warm-up steps
        # too: a compiled model then sees the same autocast state in both (no recompile
        # inside the capture).
        self.graph_safe = graph
        self.loss = None  # the last step's loss (a device tensor)
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        if graph:
            self._capture()

    def _body(self) -> torch.Tensor:
        opt, scaler, master = self.optimizer, self.scaler, self.master
        # No zeroing kernel and no accumulation: backward writes fresh gradients. In the
        # capture they come from the graph's memory pool, so every replay rewrites the same
        # tensors, which p.grad keeps (the whole-network capture of torch's CUDA graph docs);
        # only this Python-level reset is not replayed. (The master gradients are a fixed
        # buffer, overwritten below.)
        (self.compute if master else opt).zero_grad(set_to_none=True)
        input_ids, labels = self.data.tensors()
        with autocast(self.device, self.precision, graph_safe=self.graph_safe):
            loss = self.forward(input_ids=input_ids, labels=labels, use_cache=False).loss
        if scaler is None:
            loss.backward()
        else:
            scaler.scale(loss).backward()
            if self.max_grad_norm:
                scaler.unscale_(opt)
        if master:  # bf16 gradients into the float32 master gradients
            self._flat_master_grads.copy_(torch.cat([_grad(p).reshape(-1)
                                                     for p in self.compute_params]))  # fmt: skip
        if self.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm, foreach=True)
        if scaler is None:
            opt.step()
        else:
            scaler.step(opt)
            scaler.update()
        if master:
            self._copy_weights()
        return loss.detach()

    @torch.no_grad()
    def _copy_weights(self) -> None:
        """The master weights into the compute copy (cast to its dtype)."""
        self._flat_weights.copy_(torch.cat([p.reshape(-1) for p in self.params]))

    def _snapshot(self) -> dict:
        state = {id(p): {k: v.clone() for k, v in s.items() if torch.is_tensor(v)}
                 for p, s in self.optimizer.state.items()}  # fmt: skip
        scaler = None
        if self.scaler is not None and self.scaler._scale is not None:
            scaler = (self.scaler._scale.clone(), self.scaler._growth_tracker.clone())
        return {
            "params": [p.detach().clone() for p in self.params],
            "state": state,
            "scaler": scaler,
            "lr": self.lr.clone(),
        }

    @torch.no_grad()
    def _restore(self, snap: dict) -> None:
        for p, saved in zip(self.params, snap["params"], strict=True):
            p.copy_(saved)
        for p, s in self.optimizer.state.items():  # created by the warm-up: back to fresh
            saved = snap["state"].get(id(p), {})
            for k, v in s.items():
                if not torch.is_tensor(v):
                    continue
                if k in saved:
                    v.copy_(saved[k])
                else:
                    v.zero_()
        if self.scaler is not None and self.scaler._scale is not None:
            if snap["scaler"] is None:  # not used before: its initial (or loaded) state
                self.scaler._scale.fill_(self.scaler._init_scale)
                self.scaler._growth_tracker.fill_(self.scaler._init_growth_tracker)
            else:
                self.scaler._scale.copy_(snap["scaler"][0])
                self.scaler._growth_tracker.copy_(snap["scaler"][1])
        self.lr.copy_(snap["lr"])
        for p in self.params:
            if p.grad is not None:
                p.grad.zero_()
        if self.master:
            self._copy_weights()
            for p in self.compute_params:
                if p.grad is not None:
                    p.grad.zero_()

    def _capture(self) -> None:
        snap = self._snapshot()
        self.lr.zero_()  # warm-up steps must not move the weights
        self.data.load(1)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        try:
            with torch.cuda.stream(side):
                for _ in range(self.WARMUP):
                    self._body()
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            self.graph = graph
            with torch.cuda.graph(graph):
                self.loss = self._body()
        except Exception as err:  # noqa: BLE001 - any capture failure: run the same step eagerly
            self.graph = None
            log.warning("CUDA graph capture failed (%s: %s); running the step eagerly",
                        type(err).__name__, err)  # fmt: skip
        torch.cuda.synchronize(self.device)
        self._restore(snap)

    def run(self, step: int, lr: float) -> None:
        """Optimizer step `step` at learning rate lr; its loss is added to loss_sum."""
        self.data.load(step)
        self.lr.fill_(lr)
        if self.graph is not None:
            self.graph.replay()
        else:
            self.loss = self._body()
        self.loss_sum += self.loss

    def take_loss_sum(self) -> float:
        """Sum of the losses since the last call (one host sync), then reset."""
        value = self.loss_sum.item()
        self.loss_sum.zero_()
        return value


def compute_copy(model, precision: str):
    """The compute copy of `model` for a master-weight precision (bf16_weights: a bfloat16
    copy), else None: the model computes itself."""
    if precision not in MASTER_WEIGHTS:
        return None
    return copy.deepcopy(model).to(MASTER_WEIGHTS[precision])


def _views(flat: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
    """flat cut into consecutive views shaped like params."""
    sizes = [p.numel() for p in params]
    return [v.view_as(p) for v, p in zip(flat.split(sizes), params, strict=True)]


@torch.no_grad()
def _flatten(params: list[torch.Tensor]) -> torch.Tensor:
    """The params' values in one new buffer; each param becomes a view into it."""
    flat = torch.cat([p.reshape(-1) for p in params])
    for p, view in zip(params, _views(flat, params), strict=True):
        p.data = view
    return flat


def _grad(p: torch.Tensor) -> torch.Tensor:
    if p.grad is None:
        raise RuntimeError(f"a parameter of shape {tuple(p.shape)} got no gradient: "
                           "precision bf16_weights needs every parameter in the loss")  # fmt: skip
    return p.grad


def _flat_grads(params: list[torch.Tensor]) -> torch.Tensor:
    """A zeroed buffer whose views become the params' .grad (the master gradients: written
    by one copy per step, read by clipping and the optimizer)."""
    flat = torch.zeros(sum(p.numel() for p in params), dtype=params[0].dtype,
                       device=params[0].device)  # fmt: skip
    for p, view in zip(params, _views(flat, params), strict=True):
        p.grad = view
    return flat
