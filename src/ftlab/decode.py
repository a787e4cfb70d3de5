"""Greedy decoding for the evaluator: the KV-cache loop and a static-KV-cache decoder whose
per-token step can be captured as one CUDA graph.

- `decode_loop`: prefill, then one `model(...)` call per new token on HF's DynamicCache (the
  cache grows by concatenation; the 2-D mask is rebuilt into a 4-D one every step).
- `StaticDecoder`: the same prefill call (so the first token is bit-identical), whose keys and
  values are copied into preallocated buffers [batch, kv_heads, max_len, head_dim] per layer;
  every later step feeds one token with fixed shapes: the write column and the RoPE positions
  are device tensors advanced in place, the attention mask is a static additive bias
  [batch, 1, 1, max_len] (0 on the prompt's real tokens and the columns written so far, the
  float minimum elsewhere), the argmax, <eos> handling and the output column are part of the
  step. Nothing in a step depends on the host, so on CUDA
  (`graph=True`) the step is captured once (warm-up on a side stream, as ftlab.train_graph
  does for training) and replayed per token. On the CPU it runs eagerly.

Both stop when every row has produced <eos> (one host check per token) or after
max_new_tokens, and give [rows, steps] token ids with <eos> repeated after a row's end.
"""

from __future__ import annotations

import itertools
import logging

import numpy as np
import torch

log = logging.getLogger("ftlab.evaluate")


def left_pad(seqs: list[list[int]], pad_id: int, dev) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask) [rows, longest]: every sequence right-aligned, padding on the left."""
    # Vectorized in numpy (one array of all ids, one masked assignment): a Python loop over
    # rows cost ~20 us a row here (40 ms per batch of 2,048), a cap on a GPU evaluator.
    lengths = np.fromiter(map(len, seqs), dtype=np.int64, count=len(seqs))
    width = int(lengths.max())
    mask = np.arange(width)[None, :] >= (width - lengths)[:, None]
    ids = np.full((len(seqs), width), pad_id, dtype=np.int64)
    flat = itertools.chain.from_iterable(seqs)
    ids[mask] = np.fromiter(flat, dtype=np.int64, count=int(lengths.sum()))
    return torch.from_numpy(ids).to(dev), torch.from_numpy(mask.astype(np.int64)).to(dev)


def _prefill(model, seqs, pad_id: int):
    """The prompt forward of both decoders: (model output, 2-D mask, positions, padded)."""
    input_ids, mask = left_pad(seqs, pad_id, model.device)
    # Left padding: positions count real tokens only, so a row's result ignores its padding.
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    # Batches are length-sorted, so most have no padding: then no mask is needed at all (the
    # causal fast path gives the same result and skips building a 4-D mask every step).
    padded = not bool(mask.all())
    out = model(
        input_ids=input_ids,
        attention_mask=mask if padded else None,
        position_ids=pos,
        logits_to_keep=1,
        use_cache=True,
    )
    return out, mask, pos, padded


@torch.inference_mode()
def decode_loop(model, seqs, pad_id: int, eos_id: int, max_new_tokens: int) -> torch.Tensor:
    """Greedy decoding with the KV cache; [B, <=max_new_tokens] generated ids.

    Why not generate(): for 5-10 new tokens its per-step overhead (logits processors, stopping
    criteria, cache bookkeeping) dominates a tiny model; this loop does the same arithmetic.
    """
    out, mask, pos, padded = _prefill(model, seqs, pad_id)
    done = torch.zeros(len(seqs), dtype=torch.bool, device=model.device)
    steps = []
    for t in range(max_new_tokens):
        nxt = out.logits[:, -1].argmax(-1)
        nxt = nxt.masked_fill(done, eos_id)
        steps.append(nxt)
        done |= nxt == eos_id
        if done.all() or t == max_new_tokens - 1:
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        pos = pos[:, -1:] + 1
        out = model(
            input_ids=nxt[:, None],
            attention_mask=mask if padded else None,
            position_ids=pos,
            past_key_values=out.past_key_values,
            use_cache=True,
        )
    return torch.stack(steps, dim=1)


@torch.inference_mode()
def decode_generate(model, seqs, pad_id: int, eos_id: int, max_new_tokens: int) -> torch.Tensor:
    """The same greedy decoding through HF generate() (the reference; benchmarks)."""
    input_ids, mask = left_pad(seqs, pad_id, model.device)
    out = model.generate(
        input_ids=input_ids,
        attention_mask=mask,
        do_sample=False,
        max_new_tokens=max_new_tokens,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
    )
    return out[:, input_ids.shape[1] :]


def supports_static(model) -> bool:
    """The static decoder handles full-attention decoders (every layer `full_attention`)."""
    return set(getattr(model.config, "layer_types", None) or ["full_attention"]) == {
        "full_attention"
    }


class StaticKV:
    """Keys/values [batch, kv_heads, max_len, head_dim] per layer, preallocated.

    Duck-types the one Cache method HF attention calls on decode steps, update(), which writes
    the step's keys/values at column `col` (a 1-element device tensor) and returns the whole
    buffers: fixed shapes and addresses, as a CUDA graph needs. Unwritten columns hold stale
    values that the decoder's mask excludes.
    """

    def __init__(self, config, batch: int, max_len: int, device, dtype):
        heads = config.num_key_value_heads
        head_dim = getattr(config, "head_dim", None) or (
            config.hidden_size // config.num_attention_heads
        )
        shape = (batch, heads, max_len, head_dim)
        n = config.num_hidden_layers
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n)]
        self.col = torch.zeros(1, dtype=torch.long, device=device)

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        self.keys[layer_idx].index_copy_(2, self.col, key_states)
        self.values[layer_idx].index_copy_(2, self.col, value_states)
        return self.keys[layer_idx], self.values[layer_idx]

    def load_prompt(self, cache) -> None:
        """Copy a prefill's DynamicCache into columns [0, its width)."""
        for i, layer in enumerate(cache.layers):
            width = layer.keys.shape[2]
            self.keys[i][:, :, :width].copy_(layer.keys)
            self.values[i][:, :, :width].copy_(layer.values)


class StaticDecoder:
    """Greedy decoding of up to `batch` prompts with a static KV cache of `max_len` columns
    (prompt width + max_new_tokens - 1 must fit). `graph=True` (CUDA only): the per-token step
    is captured as one CUDA graph; a capture that fails falls back to the eager step. One
    decoder serves any prompt width and number of new tokens that fit: the evaluator keeps it
    for every eval set of a checkpoint, so a capture is paid once, not per set."""

    WARMUP = 3

    @torch.inference_mode()
    def __init__(self, model, batch: int, max_len: int, eos_id: int, *, graph: bool = False):
        if not supports_static(model):
            raise ValueError("the static decoder needs full attention in every layer")
        dev, dtype = model.device, next(model.parameters()).dtype
        self.model, self.batch, self.max_len = model, batch, max_len
        self.eos_id = eos_id
        self.kv = StaticKV(model.config, batch, max_len, dev, dtype)
        # The step's static state: the token fed, its RoPE positions [B, 1], which key columns
        # a row may attend to, which rows ended, and the output ids with their next column.
        self.tok = torch.zeros(batch, dtype=torch.long, device=dev)
        self.pos = torch.zeros((batch, 1), dtype=torch.long, device=dev)
        self.bias = torch.zeros((batch, 1, 1, max_len), dtype=dtype, device=dev)
        self.done = torch.zeros(batch, dtype=torch.bool, device=dev)
        self.out = torch.zeros((batch, max_len), dtype=torch.long, device=dev)
        self.out_col = torch.zeros(1, dtype=torch.long, device=dev)
        self.graph = None
        if graph:
            self._capture()

    def _emit(self, logits: torch.Tensor) -> None:
        """The greedy choice from last-position logits [B, vocab], as decode_loop makes it."""
        nxt = logits.argmax(-1).masked_fill(self.done, self.eos_id)
        self.out.index_copy_(1, self.out_col, nxt[:, None])
        self.done |= nxt == self.eos_id
        self.tok.copy_(nxt)
        self.out_col += 1

    def _step(self) -> None:
        """Feed `tok` at column kv.col, emit the next token, advance the columns/positions."""
        self.bias.index_fill_(3, self.kv.col, 0.0)
        logits = self.model(
            input_ids=self.tok[:, None],
            # A ready mask per layer type skips HF's mask construction (host work that
            # depends on shapes); every layer is full attention (supports_static).
            attention_mask={"full_attention": self.bias},
            position_ids=self.pos,
            past_key_values=self.kv,
            use_cache=True,
        ).logits
        self._emit(logits[:, -1])
        self.kv.col += 1
        self.pos += 1

    def _capture(self) -> None:
        dev = self.model.device
        # Warm-up and capture run the step on whatever the buffers hold; column 0 keeps every
        # write in range, and decode() resets all of the state before real use.
        self.kv.col.zero_()
        self.out_col.zero_()
        side = torch.cuda.Stream(dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        try:
            with torch.cuda.stream(side):
                for _ in range(self.WARMUP):
                    self.kv.col.zero_()
                    self.out_col.zero_()
                    self._step()
            torch.cuda.current_stream(dev).wait_stream(side)
            self.kv.col.zero_()
            self.out_col.zero_()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self._step()
            self.graph = graph
        except Exception as err:  # noqa: BLE001 - any capture failure: run the step eagerly
            self.graph = None
            log.warning("CUDA graph capture of the decode step failed (%s: %s); decoding "
                        "eagerly", type(err).__name__, err)  # fmt: skip
        torch.cuda.synchronize(dev)

    @torch.inference_mode()
    def decode(self, seqs: list[list[int]], pad_id: int, max_new_tokens: int) -> torch.Tensor:
        """[len(seqs), <=max_new_tokens] greedy ids for up to `batch` prompts. Fewer prompts
        than `batch` are completed with copies of the last one (outputs dropped), so the
        captured shapes hold."""
        n = len(seqs)
        if not 0 < n <= self.batch:
            raise ValueError(f"{n} prompts for a decoder of batch {self.batch}")
        width = max(len(s) for s in seqs)
        if width + max_new_tokens - 1 > self.max_len:
            raise ValueError(f"prompt width {width} + {max_new_tokens} new tokens - 1 "
                             f"exceeds the static cache ({self.max_len})")  # fmt: skip
        rows = list(seqs) + [seqs[-1]] * (self.batch - n)
        out, mask, pos, _ = _prefill(self.model, rows, pad_id)
        self.kv.load_prompt(out.past_key_values)
        first = out.logits[:, -1]
        del out  # the prefill cache is copied: free it before decoding
        self.kv.col.fill_(width)
        self.bias.fill_(torch.finfo(self.bias.dtype).min)
        self.bias[:, 0, 0, :width].masked_fill_(mask.bool(), 0.0)
        self.pos.copy_(pos[:, -1:] + 1)
        self.done.zero_()
        self.out_col.zero_()
        self._emit(first)
        steps = 1
        while steps < max_new_tokens and not bool(self.done.all()):
            if self.graph is not None:
                self.graph.replay()
            else:
                self._step()
            steps += 1
        return self.out[:n, :steps].clone()


def static_max_len(longest_prompt: int, max_new_tokens: int, multiple: int = 16) -> int:
    """Cache columns for a set: its longest prompt + the new tokens, rounded up to `multiple`
    (few distinct lengths, so eval sets share a captured decoder; aligned mask rows; the
    attention of every step reads all columns, so not much more)."""
    need = longest_prompt + max_new_tokens
    return -(-need // multiple) * multiple
