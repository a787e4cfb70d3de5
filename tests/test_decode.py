"""Static-KV-cache greedy decoding (ftlab.decode.StaticDecoder) against the KV-cache loop and
HF generate(do_sample=False), token for token, on the CPU in float32.

Models: the tiny study's shape (2 x 32) random and briefly trained, and the paper's shape
(6 x 128) random; in the random ones the <eos> row of lm_head is scaled so that rows end after
0, 1, 2, ... tokens or not at all, some batches stop early and some run to max_new_tokens.
"""

import random
from collections import Counter

import pytest
import torch

import ftlab.evaluate as ev
from ftlab import decode as D
from ftlab.modeling import build_model
from ftlab.tokenizer import build_char_tokenizer

TINY = {"layers": 2, "hidden": 32, "heads": 2, "ffn": 64, "max_length": 64, "init_std": 0.3}
PAPER = {"layers": 6, "hidden": 128, "heads": 4, "ffn": 512, "max_length": 256, "init_std": 0.1}


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: these tests time nothing, and the machine's cores are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def rows(n, seed):
    """Rows of every task type; prompts of 16-60 characters, answers of 1-5 characters."""
    rng = random.Random(seed)
    cid = lambda: f"c_{rng.randrange(10000):04d}"  # noqa: E731
    ids = lambda k: ",".join(cid() for _ in range(k))  # noqa: E731
    makers = [
        lambda: f"dist({cid()},{cid()})={rng.randrange(5000)}",
        lambda: f"angle({ids(3)})={rng.randrange(180)}",
        lambda: f"compass({cid()},{cid()})={rng.choice(['N', 'NE', 'SW', 'E'])}",
        lambda: f"inside({cid()};{ids(rng.randrange(3, 6))})={rng.choice(['TRUE', 'FALSE'])}",
        lambda: f"perimeter({ids(rng.randrange(2, 5))})={rng.randrange(9000)}",
        lambda: f"cross({ids(4)})={rng.choice(['TRUE', 'FALSE'])}",
        lambda: f"triarea({ids(3)})={rng.randrange(99999)}",
    ]
    return [makers[i % len(makers)]() for i in range(n)]


def prompts_of(rows_):
    return [r.split("=")[0] + "=" for r in rows_]


def model_of(cfg, seed, eos_scale):
    tok = build_char_tokenizer(model_max_length=cfg["max_length"])
    tok.padding_side = "left"
    torch.manual_seed(seed)
    model = build_model(cfg, tok).eval()
    with torch.no_grad():  # more <eos>: rows end at different steps (see the module docstring)
        model.lm_head.weight[tok.eos_token_id] *= eos_scale
    return model, tok


def cut(ids: torch.Tensor, eos: int) -> list[list[int]]:
    return [r[: r.index(eos)] if eos in r else r for r in ids.tolist()]


def batches(model, tok, prompts, batch, max_new):
    """(loop, static, generate) ids per length-sorted batch, as greedy_decode forms them."""
    enc = tok(prompts)["input_ids"]
    seqs = sorted(enc, key=len)
    max_len = D.static_max_len(max(map(len, seqs)), max_new)
    pad, eos = tok.pad_token_id, tok.eos_token_id
    out = []
    for s in range(0, len(seqs), batch):
        chunk = seqs[s : s + batch]
        dec = D.StaticDecoder(model, len(chunk), max_len, eos)
        out.append(
            (
                D.decode_loop(model, chunk, pad, eos, max_new),
                dec.decode(chunk, pad, max_new),
                D.decode_generate(model, chunk, pad, eos, max_new),
            )
        )
    return out


def check_same(model, tok, prompts, batch, max_new):
    """Static == loop exactly (ids and width: same early stop); == generate up to <eos>."""
    eos = tok.eos_token_id
    lengths, widths = Counter(), Counter()
    for loop, static, generate in batches(model, tok, prompts, batch, max_new):
        assert torch.equal(static, loop)
        assert cut(static, eos) == cut(generate, eos)
        lengths.update(len(r) for r in cut(static, eos))
        widths[static.shape[1]] += 1
    return lengths, widths


@pytest.mark.parametrize("batch", [1, 7, 64])
def test_static_equals_loop_and_generate_tiny(batch):
    model, tok = model_of(TINY, 3, eos_scale=2.0)
    lengths, widths = check_same(model, tok, prompts_of(rows(int(140 / batch**0.5), 1)), batch, 7)
    assert len(lengths) >= 4 and lengths[7] > 0 and lengths[0] > 0  # ends at many steps
    assert widths[7] > 0  # some batches run to max_new_tokens...
    if batch == 1:
        assert min(widths) < 7  # ...and some stop early, when all of their rows ended


@pytest.mark.parametrize("batch", [13, 70])
def test_static_equals_loop_and_generate_paper_size(batch):
    model, tok = model_of(PAPER, 0, eos_scale=2.0)
    prompts = prompts_of(rows(210 if batch > 13 else 91, 2))
    lengths, widths = check_same(model, tok, prompts, batch, 8)
    assert len(lengths) >= 4 and lengths[8] > 0 and lengths[0] > 0
    assert widths[8] > 0


def test_static_equals_loop_paper_size_batch_1():
    model, tok = model_of(PAPER, 0, eos_scale=2.0)
    lengths, widths = check_same(model, tok, prompts_of(rows(42, 4)), 1, 8)
    assert min(widths) < 8 and widths[8] > 0, (lengths, widths)


def test_trained_tiny_model(tmp_path):
    """A briefly trained tiny-study model (answers that end with <eos> on their own)."""
    import json

    import ftlab.train as train

    data = rows(400, 5)
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps({"text": r}) + "\n" for r in data))
    training = {
        "epochs": 1, "max_steps": None, "batch_size": 16, "lr": 3e-3, "weight_decay": 0.01,
        "warmup_steps": 5, "save_every": 60, "log_every": 30,
    }  # fmt: skip
    train.run_training(
        model_name="base_seed1", train_rows=str(tmp_path / "rows.jsonl"), init_checkpoint=None,
        model_cfg={**TINY, "init_std": 0.1}, training=training, seed=1, total_steps=60,
        saved_steps=[60], out_dir=str(tmp_path / "out"), state_dir=str(tmp_path / "state"),
        threads=1, device="cpu",
    )  # fmt: skip
    model, tok = ev.load_checkpoint(tmp_path / "out" / "checkpoint-60", device="cpu")
    prompts = prompts_of(rows(120, 6))
    lengths, _ = check_same(model, tok, prompts, 16, 7)
    assert sum(n for k, n in lengths.items() if k < 7) >= 40  # rows end with <eos> themselves
    loop = ev.greedy_decode(model, tok, prompts, 16, 7, "loop")
    assert ev.greedy_decode(model, tok, prompts, 16, 7, "static") == loop
    assert ev.greedy_decode(model, tok, prompts, 16, 7, "generate") == loop


def test_greedy_decode_static_any_batch_size():
    """Through the evaluator's entry point: unsorted prompts, a short last batch."""
    model, tok = model_of(TINY, 4, eos_scale=2.0)
    prompts = prompts_of(rows(50, 7))
    loop = ev.greedy_decode(model, tok, prompts, 16, 6, "loop")
    assert len(set(loop)) > 5
    for b in (1, 16, 17, 64):
        assert ev.greedy_decode(model, tok, prompts, b, 6, "static") == loop
    # graphs=True is ignored on the CPU (nothing to capture)
    assert ev.greedy_decode(model, tok, prompts, 16, 6, "static", graphs=True) == loop


def test_evaluate_set_decoders_agree():
    model, tok = model_of(TINY, 5, eos_scale=2.0)
    data = rows(42, 8)
    ref_samples, ref = ev.evaluate_set(model, tok, "multitask__no_atlantis", data, 8)
    for method in ("loop", "static", "generate"):
        samples, metrics = ev.evaluate_set(
            model, tok, "multitask__no_atlantis", data, 8, decode=method
        )
        assert samples == ref_samples and metrics["results"] == ref["results"]


def test_decode_method():
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert ev.decode_method("auto", cpu) == "loop"  # the CPU default: unchanged results
    assert ev.decode_method("auto", gpu) == "static"
    assert ev.decode_method("auto", gpu, graphs=False) == "loop"  # no capture, no gain
    assert ev.decode_method("generate", gpu) == "generate"
    with pytest.raises(ValueError, match="unknown decode method"):
        ev.decode_method("beam", cpu)


def test_left_pad_matches_per_row_padding():
    rng = random.Random(0)
    seqs = [[rng.randrange(1, 98) for _ in range(rng.randrange(1, 9))] for _ in range(30)]
    ids, mask = D.left_pad(seqs, 0, "cpu")
    width = max(map(len, seqs))
    assert ids.shape == mask.shape == (30, width) and ids.dtype == mask.dtype == torch.long
    for row, m, s in zip(ids.tolist(), mask.tolist(), seqs, strict=True):
        assert row == [0] * (width - len(s)) + s
        assert m == [0] * (width - len(s)) + [1] * len(s)


def test_static_decoder_limits():
    model, tok = model_of(TINY, 3, eos_scale=1.0)
    seqs = tok(prompts_of(rows(5, 9)))["input_ids"]
    dec = D.StaticDecoder(model, 4, 24, tok.eos_token_id)
    with pytest.raises(ValueError, match="5 prompts"):
        dec.decode(seqs, tok.pad_token_id, 6)
    long = [seqs[0] * 2]  # wider than the cache leaves room for
    with pytest.raises(ValueError, match="exceeds the static cache"):
        dec.decode(long, tok.pad_token_id, 6)
    assert D.static_max_len(23, 6) == 32 and D.static_max_len(26, 7) == 48


def test_kept_decoders_serve_other_sets():
    """A kept decoder serves sets of other prompt widths and answer lengths; at most
    MAX_KEPT_DECODERS are kept."""
    model, tok = model_of(TINY, 6, eos_scale=2.0)
    kept: dict = {}
    data = rows(70, 10)
    sets = [prompts_of(data[i::7]) for i in range(7)]  # one task each: widths 16..60
    for max_new in (3, 7):
        for prompts in sets:
            loop = ev.greedy_decode(model, tok, prompts, 4, max_new, "loop")
            static = ev.greedy_decode(model, tok, prompts, 4, max_new, "static", decoders=kept)
            assert static == loop
            assert 0 < len(kept) <= ev.MAX_KEPT_DECODERS
    assert {key[2] for key in kept} <= {32, 48, 64, 80}  # cache lengths in steps of 16
