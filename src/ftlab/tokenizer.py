"""Character-level tokenizer that `AutoTokenizer.from_pretrained(dir)` loads with no custom code.

Vocabulary (98): <pad>=0, <bos>=1, <eos>=2, <unk>=3, then printable ASCII 33..126 in order.
Every character is one token; encoding prepends <bos> (post-processor) but never appends <eos>:
training appends it itself, and evaluation prompts must not end with it.

Loading: transformers 5 makes `AutoTokenizer` rebuild any tokenizer saved next to a qwen2
config.json as `Qwen2Tokenizer` (BPE + byte-level pre-tokenizer; model type "qwen2" is on its
list of hubs with a wrong tokenizer_class). For printable ASCII that rebuild gives exactly our
ids and decodings (tested), but characters outside the vocabulary are dropped instead of mapped
to <unk>. ftlab itself therefore loads with `load_tokenizer`, which keeps tokenizer.json as is.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)
CHARS = tuple(chr(c) for c in range(33, 127))
VOCAB_SIZE = len(SPECIAL_TOKENS) + len(CHARS)  # 98
_LOAD_ONLY_KWARGS = ("is_local", "local_files_only")


def char_vocab(chars: tuple[str, ...] = CHARS) -> dict[str, int]:
    """The special tokens, then one id per character of chars, in order."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for c in chars:
        vocab[c] = len(vocab)
    return vocab


def char_level_tokenizer(vocab: dict[str, int], split: str, **kwargs) -> PreTrainedTokenizerFast:
    """A fast HF tokenizer with one token per match of the regex split; <bos> prepended.

    kwargs go to PreTrainedTokenizerFast (saved in tokenizer_config.json).
    """
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(split), behavior="isolated")
    tok.decoder = decoders.Fuse()  # join tokens without separators
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A",
        pair=f"{BOS} $A {BOS} $B",
        special_tokens=[(BOS, vocab[BOS])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK, **kwargs
    )


def build_char_tokenizer(
    padding_side: str = "right", model_max_length: int | None = None
) -> PreTrainedTokenizerFast:
    """The study tokenizer, as a fast HF tokenizer (save_pretrained writes tokenizer.json)."""
    # One pre-token per character; characters outside the vocabulary (space...) become <unk>.
    kwargs = {} if model_max_length is None else {"model_max_length": model_max_length}
    return char_level_tokenizer(char_vocab(), ".", padding_side=padding_side, **kwargs)


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """The tokenizer saved in a checkpoint dir, exactly as saved (see the module docstring)."""
    tok = PreTrainedTokenizerFast.from_pretrained(path)
    # Loading-time flags would otherwise be written into the next tokenizer_config.json, so a
    # resumed run's checkpoints would differ in bytes (and content hash) from a fresh run's.
    for key in _LOAD_ONLY_KWARGS:
        tok.init_kwargs.pop(key, None)
    return tok
