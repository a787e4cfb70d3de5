"""Training rows of the world-model trainer (ftlab.train): reading, encoding, the batch of
every step (Batches) and its fixed-shape device buffers for the captured step (StaticBatches).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ftlab.io import read_jsonl_texts


def read_rows(path: str | Path) -> list[str]:
    """Training rows (the "text" field of each jsonl line)."""
    return read_jsonl_texts(path)


def encode_rows(
    rows: list[str], tokenizer, max_length: int, chunk: int = 1 << 20
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids [N, L] (uint8) of `<bos> + row + <eos>`, and the true lengths [N].

    Vectorised through a character lookup table instead of calling the tokenizer per row:
    at paper scale (7M rows) Python lists of ids would need ~10 GB. A sample of rows is
    checked against the tokenizer itself, and every character must be in the vocabulary.
    """
    vocab = tokenizer.get_vocab()
    lut = np.full(256, -1, dtype=np.int16)
    for tok, i in vocab.items():
        if len(tok) == 1 and ord(tok) < 128:
            lut[ord(tok)] = i
    bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    if max(vocab.values()) > 255:
        raise ValueError("encode_rows stores ids as uint8; this vocabulary is too large")
    n = len(rows)
    lengths = np.fromiter(map(len, rows), dtype=np.int64, count=n) + 2
    longest = int(lengths.max()) if n else 2
    if longest > max_length:
        i = int(lengths.argmax())
        raise ValueError(f"row {i} is {longest} tokens, over max_length {max_length}: {rows[i]!r}")
    ids = np.full((n, longest), pad, dtype=np.uint8)
    ids[:, 0] = bos
    ids[np.arange(n), lengths - 1] = eos
    for lo in range(0, n, chunk):
        part, lens = rows[lo : lo + chunk], lengths[lo : lo + chunk] - 2
        try:
            codes = lut[np.frombuffer("".join(part).encode("ascii"), dtype=np.uint8)]
        except UnicodeEncodeError:
            codes = None
        row_of = np.repeat(np.arange(len(part)), lens)
        if codes is None or (codes < 0).any():
            bad = next(r for r in part if any(ord(c) > 127 or lut[ord(c)] < 0 for c in r))
            raise ValueError(f"row has characters outside the tokenizer's vocabulary: {bad!r}")
        starts = np.repeat(np.cumsum(lens) - lens, lens)
        ids[lo + row_of, np.arange(len(codes)) - starts + 1] = codes
    for i in range(min(n, 64)):  # the lookup table must agree with the real tokenizer
        expected = tokenizer(rows[i])["input_ids"] + [eos]
        if ids[i, : lengths[i]].tolist() != expected:
            raise ValueError(f"tokenizer does not map row {i} to one token per character")
    return torch.from_numpy(ids), torch.from_numpy(lengths)


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """Row order of one epoch; depends only on (seed, epoch), so resume needs no data state."""
    return np.random.default_rng([seed, epoch]).permutation(n)


class Batches:
    """Batch of any step: epoch = (step-1) // steps_per_epoch, consecutive slices of its order."""

    def __init__(self, ids: torch.Tensor, lengths: torch.Tensor, batch_size: int, seed: int):
        self.ids, self.lengths, self.batch_size, self.seed = ids, lengths, batch_size, seed
        self.steps_per_epoch = math.ceil(len(ids) / batch_size)
        self._perm: tuple[int, np.ndarray] | None = None

    def epoch_of(self, step: int) -> int:
        return (step - 1) // self.steps_per_epoch

    def indices(self, step: int) -> torch.Tensor:
        """Row indices of the batch of `step` (multi-task training looks up their tasks)."""
        epoch, b = divmod(step - 1, self.steps_per_epoch)
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, epoch_permutation(self.seed, epoch, len(self.ids)))
        return torch.from_numpy(self._perm[1][b * self.batch_size : (b + 1) * self.batch_size])

    def get(self, step: int) -> dict[str, torch.Tensor]:
        return self.collate(self.indices(step))

    def collate(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """The batch of rows `idx` (a data-parallel rank collates its slice of a step's rows)."""
        lengths = self.lengths[idx]
        width = int(lengths.max())
        input_ids = self.ids[idx, :width].long()
        attention_mask = torch.arange(width)[None, :] < lengths[:, None]
        labels = input_ids.masked_fill(~attention_mask, -100)  # loss on every real token
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask.long(),
            "labels": labels,
        }


class StaticBatches:
    """The batches of `Batches` in fixed-shape buffers on `device` (the fast GPU path).

    All rows and lengths live on the device; `load(step)` copies the row indices of step s
    (the same per-epoch permutation as Batches, so the same rows) into a static index buffer,
    and `tensors()` gathers them at the full static width. A short last batch of an epoch is
    filled up to batch_size with row 0 marked invalid: its labels are all -100, so the loss
    (a mean over real tokens) and the gradients are those of the short batch. Right padding
    carries label -100 too and, the model being causal, no real token attends to it, so no
    attention mask is needed. Runs on any device; only the graph capture needs CUDA.
    """

    def __init__(self, ids, lengths, batch_size: int, seed: int, device):
        self.device = torch.device(device)
        self.ids = ids.to(self.device)  # uint8 [N, W]: ids.long() happens per batch
        self.lengths = lengths.to(self.device)
        self.width = int(ids.shape[1])
        self.batch_size, self.seed = batch_size, seed
        self.steps_per_epoch = math.ceil(len(ids) / batch_size)
        self.positions = torch.arange(self.width, device=self.device)
        self.idx = torch.zeros(batch_size, dtype=torch.long, device=self.device)
        self.valid = torch.ones(batch_size, dtype=torch.bool, device=self.device)
        self._n_valid = batch_size
        self._perm: tuple[int, torch.Tensor] | None = None

    def epoch_of(self, step: int) -> int:
        return (step - 1) // self.steps_per_epoch

    def load(self, step: int) -> None:
        """Fill the static buffers with the batch of `step` (device copies, no host sync)."""
        epoch, b = divmod(step - 1, self.steps_per_epoch)
        if self._perm is None or self._perm[0] != epoch:
            perm = epoch_permutation(self.seed, epoch, len(self.ids))
            self._perm = (epoch, torch.from_numpy(perm).to(self.device))
        part = self._perm[1][b * self.batch_size : (b + 1) * self.batch_size]
        n = len(part)
        self.idx[:n].copy_(part, non_blocking=True)
        if n != self._n_valid:
            self.idx[n:].zero_()
            self.valid[:n].fill_(True)
            self.valid[n:].fill_(False)
            self._n_valid = n

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, labels) [batch_size, width] of the loaded batch, from the buffers."""
        input_ids = self.ids[self.idx].long()
        real = self.positions[None, :] < self.lengths[self.idx][:, None]
        labels = input_ids.masked_fill(~(real & self.valid[:, None]), -100)
        return input_ids, labels


def make_batches(rows: list[str], tokenizer, model, batch_size: int, seed: int) -> Batches:
    """The encoded rows as the batches of every step."""
    ids, lengths = encode_rows(rows, tokenizer, model.config.max_position_embeddings)
    return Batches(ids, lengths, batch_size, seed)
