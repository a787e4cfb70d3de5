"""The default TIR grader, SimpleTIR's (ltzheng/SimpleTIR e7b5b44,
recipe/simpletir/utils/reward_score/hf_math_verify.py compute_score with the Qwen math
toolkit's extract_answer, qwen_math_eval_toolkit/parser.py), against verdicts of the reference
code itself: each row is (model text, gold answer, the reference's verdict), computed by
running the reference compute_score (math-verify 0.9.0) on the row."""

import pytest

from ftlab.tir.qwen_answer import extract_answer
from ftlab.tir.scoring import Scorer, simpletir_extract

REFERENCE_VERDICTS = [
    ('so \\boxed{\\frac{\\sqrt{2}}{2}}', '\\frac{\\sqrt2}{2}', True),
    ('so \\boxed{\\frac{\\sqrt{2}}{2}}', '\\frac{1}{\\sqrt{2}}', True),
    ('\\boxed{\\frac{1}{2}}', '0.5', True),
    ('\\boxed{x=3}', '3', True),
    ('\\boxed{(1,2)}', '(1, 2)', True),
    ('\\boxed{2\\pi}', '2 \\pi', True),
    ('\\boxed{\\pi/2}', '\\frac{\\pi}{2}', True),
    ('\\boxed{3, 5}', '5, 3', True),
    ('\\boxed{10\\sqrt{3}}', '10 \\sqrt 3', True),
    ('\\boxed{[2,5)}', '[2, 5)', True),
    ('\\boxed{033}', '33', True),
    ('\\boxed{70^\\circ}', '70', True),
    ('\\boxed{\\text{B}}', 'B', True),
    ('The answer is 42.', '42', True),
    ('we get 17 and then 42', '42', True),
    ('\\boxed{1.0000001}', '1', False),
    ('\\boxed{\\$18.90}', '18.90', True),
    ('\\boxed{5\\text{ cm}}', '5', True),
    ('\\boxed{x^2+2x+1}', '(x+1)^2', True),
    ('\\boxed{\\dfrac{14}{3}}', '\\frac{14}{3}', True),
    ('\\boxed{2+\\sqrt{3}}', '\\sqrt3+2', True),
    ('\\boxed{1/3}', '0.333333333', True),
    ('\\boxed{3\\sqrt13}', '3\\sqrt{13}', True),
    ('\\boxed{\\sqrt51}', '\\sqrt{51}', True),
    ('\\boxed{70 \\sqrt2}', '70 \\sqrt{2}', True),
    ('\\boxed{\\frac{3\\sqrt3}{4}}', '\\frac{3\\sqrt{3}}{4}', True),
    ('\\boxed{\\sqrt5}', '\\sqrt{5}', True),
    ('\\boxed{1 \\pm \\sqrt19}', '1 \\pm \\sqrt{19}', False),
    ('\\boxed{3 \\sqrt5}', '3 \\sqrt{5}', True),
    ('\\boxed{\\frac{\\sqrt3}{3}}', '\\frac{\\sqrt{3}}{3}', True),
    ('\\boxed{2\\sqrt113}', '2\\sqrt{113}', True),
    ('\\boxed{-\\sqrt3}', '-\\sqrt{3}', True),
    ('\\boxed{\\frac{\\sqrt3}{3}}', '\\frac{\\sqrt{3}}{3}', True),
    ('\\boxed{\\sqrt53}', '\\sqrt{53}', True),
    ('\\boxed{3 \\pm 2 \\sqrt2}', '3 \\pm 2 \\sqrt{2}', False),
    ('\\boxed{1+2\\sqrt3}', '1+2\\sqrt{3}', True),
    ('\\boxed{11 \\sqrt5 + 11}', '11 \\sqrt{5} + 11', True),
    ('\\boxed{(-\\sqrt3, \\sqrt3)}', '(-\\sqrt{3}, \\sqrt{3})', True),
    ('\\boxed{16 \\sqrt3}', '16 \\sqrt{3}', True),
    ('\\boxed{\\frac{\\sqrt21}{5}}', '\\frac{\\sqrt{21}}{5}', True),
    ('\\boxed{\\sqrt66}', '\\sqrt{66}', True),
    ('\\boxed{2 \\sqrt5}', '2 \\sqrt{5}', True),
    ('\\boxed{2\\sqrt5}', '2\\sqrt{5}', True),
    ('\\boxed{\\{1\\pm\\sqrt5,-2\\}}', '\\{1\\pm\\sqrt{5},-2\\}', False),
    ('\\boxed{6\\sqrt2}', '6\\sqrt{2}', True),
]  # fmt: skip


@pytest.mark.parametrize(("text", "gold", "verdict"), REFERENCE_VERDICTS)
def test_simpletir_grader_gives_the_reference_verdicts(text, gold, verdict):
    scorer = Scorer()  # grader simpletir is the default
    assert scorer.correct(scorer.extract({"transcript": text}), gold) is verdict


def test_extract_answer_hand_worked():
    # parser.py extract_answer(data_name="math"), step by step
    assert extract_answer("so \\boxed{\\frac{\\sqrt{2}}{2}} done") == "\\frac{\\sqrt{2}}{2}"
    assert extract_answer("The answer is 42.") == "42"  # after "he answer is", "." dropped
    assert extract_answer("we get 17 and then 42") == "42"  # the last number
    assert extract_answer("\\boxed{033}") == "33"  # word2number reads digit strings
    assert extract_answer("\\boxed{70^\\circ}") == "70"
    assert extract_answer("\\boxed{5\\text{ cm}}") == "5"  # a trailing \text{} unit
    assert extract_answer("\\boxed{1/3}") == "\\frac{1}{3}"  # a/b -> \frac{a}{b}
    assert extract_answer("\\boxed{\\dfrac12}") == "\\frac{1}{2}"
    assert extract_answer("\\boxed{k=3}") == "3"
    assert extract_answer("no number here") == ""


def test_simpletir_extract_stops_at_the_first_stop_word():
    text = "\\boxed{1}<|im_end|>\n\\boxed{2}"
    assert simpletir_extract(text) == "1"
    assert Scorer().extract({"transcript": "nothing"}) is None  # "" -> no answer


def test_ftlab_grader_is_kept_as_an_option():
    ftlab = Scorer(grader="ftlab")
    # the last-number fallback is SimpleTIR's, not the ftlab grader's default extraction
    assert Scorer().correct(Scorer().extract({"transcript": "so 42"}), "42")
    assert ftlab.extract({"transcript": "so 42"}) is None
    assert ftlab.correct("1.0000001", "1")  # within abs_tol 1e-6; SimpleTIR's rounding not
    assert not Scorer().correct("1.0000001", "1")
    with pytest.raises(ValueError, match="scoring.grader"):
        Scorer(grader="exact")
