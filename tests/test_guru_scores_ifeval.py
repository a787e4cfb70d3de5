"""ftlab.mtl.guru: instruction following (ifeval) with lm-eval's IFEval checks.

Expected scores are derived by reading Reasoning360-MTL @6133d10 verl/utils/reward_score/
ifeval/__init__.py and instructions.py; the reason is given with each case.
"""

import numpy as np
import pytest

from ftlab.mtl import guru

pytest.importorskip("lm_eval.tasks.ifeval.instructions_registry")

KEYS = ("keywords", "keyword", "frequency", "relation", "num_words", "postscript_marker",
        "end_phrase", "num_bullets", "num_sentences", "prompt_to_repeat")  # fmt: skip


def truth(*kwargs):
    # as the dataset stores them: every key, None where an instruction has no such argument
    return np.array([{k: kw.get(k) for k in KEYS} for kw in kwargs], dtype=object)


def score(answer, ids, *kwargs):
    extra = {"instruction_id_list": np.array(ids), "prompt": "Write about cats"}
    result = guru.compute_score("ood__ifeval", answer, truth(*kwargs), extra)
    assert set(result) == {"score", "acc"} and result["score"] == result["acc"]
    return result["score"]


def test_no_comma_and_blank_answers():
    assert score("Hello world", ["punctuation:no_comma"], {}) is True
    assert score("Hello, world", ["punctuation:no_comma"], {}) is False
    # a blank answer follows nothing
    assert score("   \n", ["punctuation:no_comma"], {}) is False


def test_answer_is_after_the_first_think():
    # split("</think>")[1]: the part between the first and the second </think>
    assert score("a, b</think>clean</think>, more", ["punctuation:no_comma"], {}) is True
    assert score("clean</think>, dirty", ["punctuation:no_comma"], {}) is False


def test_every_instruction_must_pass():
    ids = ["keywords:existence", "detectable_content:postscript"]
    kws = ({"keywords": np.array(["cat", "sun"])}, {"postscript_marker": "P.S."})
    assert score("The cat and the sun.\nP.S. bye", ids, *kws) is True
    assert score("The cat and the sun.", ids, *kws) is False
    assert score("The cat.\nP.S. bye", ids, *kws) is False


@pytest.mark.parametrize(
    ("answer", "relation", "expected"),
    [("cat Cat CAT", "at least", True), ("cat", "at least", False), ("cat", "less than", True)],
)
def test_keyword_frequency_float_becomes_int(answer, relation, expected):
    # frequency arrives as 2.0 and is made int; matches ignore case
    kw = {"keyword": "cat", "frequency": 2.0, "relation": relation}
    assert score(answer, ["keywords:frequency"], kw) is expected


def test_words_bullets_end_phrase():
    kw = {"num_words": 3, "relation": "less than"}
    assert score("one two", ["length_constraints:number_words"], kw) is True
    assert score("one two three", ["length_constraints:number_words"], kw) is False
    bullets = "* a\n* b"
    assert score(bullets, ["detectable_format:number_bullet_lists"], {"num_bullets": 2}) is True
    assert score(bullets, ["detectable_format:number_bullet_lists"], {"num_bullets": 3}) is False
    end = {"end_phrase": "Is there anything else?"}
    assert score("Done. Is there anything else?", ["startend:end_checker"], end) is True
    assert score("Is there anything else? Done.", ["startend:end_checker"], end) is False


def test_repeat_prompt_and_json():
    kw = {"prompt_to_repeat": "Write about cats"}
    assert score("write about cats. Cats purr.", ["combination:repeat_prompt"], kw) is True
    assert score("Cats purr.", ["combination:repeat_prompt"], kw) is False
    assert score('```json\n{"a": 1}\n```', ["detectable_format:json_format"], {}) is True
    assert score("{a: 1}", ["detectable_format:json_format"], {}) is False


def test_unknown_instruction_raises():
    with pytest.raises(KeyError):
        score("x", ["no:such_instruction"], {})


def test_sentence_count_needs_punkt_tab():
    import nltk

    kw = {"num_sentences": 2, "relation": "at least"}
    try:
        nltk.data.find("tokenizers/punkt_tab")
    except LookupError:
        with pytest.raises(LookupError, match="length_constraints:number_sentences"):
            score("One. Two.", ["length_constraints:number_sentences"], kw)
    else:
        assert score("One. Two.", ["length_constraints:number_sentences"], kw) is True
