"""Character tokenizer and the Qwen2 model builder."""

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ftlab.modeling import build_model
from ftlab.tokenizer import CHARS, VOCAB_SIZE, build_char_tokenizer, load_tokenizer

TINY = {"layers": 2, "hidden": 32, "heads": 2, "ffn": 64, "max_length": 64, "init_std": 0.1}
ROW = "inside(c_0042;c_9999,c_1000,c_0001)=TRUE"


def test_vocab_and_round_trip():
    tok = build_char_tokenizer()
    assert len(tok) == VOCAB_SIZE == 98
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    assert tok.convert_tokens_to_ids(list(CHARS)) == list(range(4, 98))
    ids = tok(ROW)["input_ids"]
    assert ids[0] == tok.bos_token_id and tok.eos_token_id not in ids  # bos added, eos not
    assert len(ids) == len(ROW) + 1  # one token per character
    assert tok.decode(ids, skip_special_tokens=True) == ROW
    assert tok.decode(ids) == "<bos>" + ROW
    assert tok("a b")["input_ids"] == [1, tok.convert_tokens_to_ids("a"), 3, 69]  # space: unk


def test_padding_side_and_batch():
    left = build_char_tokenizer(padding_side="left")(["ab", "abcd"], padding=True)
    right = build_char_tokenizer()(["ab", "abcd"], padding=True)
    assert left["input_ids"][0][:2] == [0, 0] and right["input_ids"][0][-2:] == [0, 0]
    assert left["attention_mask"][0] == [0, 0, 1, 1, 1]


def test_saved_checkpoint_loads_with_auto_classes(tmp_path):
    tok = build_char_tokenizer()
    torch.manual_seed(0)
    model = build_model(TINY, tok)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()

    # ftlab's loader keeps the saved tokenizer exactly.
    exact = load_tokenizer(tmp_path)
    assert exact.backend_tokenizer.to_str() == tok.backend_tokenizer.to_str()
    assert (exact.bos_token, exact.eos_token, exact.pad_token) == ("<bos>", "<eos>", "<pad>")
    # AutoTokenizer (no custom code) rebuilds it as Qwen2Tokenizer in transformers 5; on the
    # study's alphabet it must agree token for token, in both directions.
    tok2 = AutoTokenizer.from_pretrained(tmp_path)
    alphabet = "".join(CHARS)
    for text in (ROW, alphabet, "dist(c_0001,c_0002)=5", "compass(c_1,c_2)=NW"):
        assert tok2(text)["input_ids"] == tok(text)["input_ids"], text
    assert [tok2(c)["input_ids"] for c in CHARS] == [tok(c)["input_ids"] for c in CHARS]
    assert tok2.decode(list(range(98))) == tok.decode(list(range(98)))
    assert len(tok2) == 98 and tok2.decode(tok2(ROW)["input_ids"], skip_special_tokens=True) == ROW
    model2 = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    cfg = model2.config
    assert type(model2).__name__ == "Qwen2ForCausalLM"
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads) == (2, 32, 2)
    assert (cfg.num_key_value_heads, cfg.intermediate_size, cfg.vocab_size) == (2, 64, 98)
    assert (cfg.max_position_embeddings, cfg.tie_word_embeddings) == (64, False)
    assert (cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id) == (1, 2, 0)
    ids = torch.tensor([tok(ROW)["input_ids"]])
    with torch.no_grad():
        assert torch.equal(model.eval()(ids).logits, model2(ids).logits)


def test_init_is_normal_with_init_std():
    tok = build_char_tokenizer()
    cfg = {**TINY, "hidden": 64, "ffn": 256, "init_std": 0.1}
    torch.manual_seed(1)
    model = build_model(cfg, tok)
    for name, p in model.named_parameters():
        if p.ndim == 2:  # embeddings, projections, lm_head
            assert abs(p.std().item() - 0.1) < 0.01, name
            assert abs(p.mean().item()) < 0.01, name
        elif name.endswith("bias"):
            assert torch.all(p == 0), name
        else:  # RMSNorm gains
            assert torch.all(p == 1), name
    # The pad row is drawn too (transformers' own init would zero it).
    assert model.model.embed_tokens.weight[tok.pad_token_id].abs().sum() > 0
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
    torch.manual_seed(1)
    again = build_model(cfg, tok)
    assert all(
        torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters(), strict=True)
    )
