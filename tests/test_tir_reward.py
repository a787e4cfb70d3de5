"""The GRPO reward of TIR training (ftlab.tir.train.make_reward) extracts a rollout's answer
with tir.reward's own extraction, as evaluation scoring does with tir.scoring."""

from ftlab.tir.scoring import Scorer
from ftlab.tir.train import make_reward


def _reward(scorer, transcripts, answers):
    return make_reward(scorer)(completions=[""] * len(transcripts), transcript=transcripts,
                               answer=answers)  # fmt: skip


def test_reward_uses_the_configured_extraction():
    transcripts = ["so it is 42", "so \\boxed{42}", "so \\boxed{41}", "nothing here"]
    answers = ["42"] * 4
    boxed = Scorer(grader="ftlab", extraction="boxed")
    fallback = Scorer(grader="ftlab", extraction="boxed_or_last_number")
    # hand-worked: boxed only scores the boxed 42; the fallback also takes the last number 42
    assert _reward(boxed, transcripts, answers) == [0.0, 1.0, 0.0, 0.0]
    assert _reward(fallback, transcripts, answers) == [1.0, 1.0, 0.0, 0.0]


def test_reward_matches_evaluation_scoring():
    scorer = Scorer(grader="ftlab", extraction="boxed_or_last_number")
    transcripts = ["x = 3.5 then 7", "\\boxed{\\frac{1}{2}}", "12"]
    answers = ["7", "0.5", "13"]
    expected = [float(scorer.correct(scorer.extract({"transcript": t}), a))
                for t, a in zip(transcripts, answers, strict=True)]  # fmt: skip
    assert _reward(scorer, transcripts, answers) == expected == [1.0, 1.0, 0.0]


def test_reward_with_the_simpletir_grader():
    # SimpleTIR's grader (the default): last \\boxed{}, else "he answer is", else last number
    transcripts = ["so it is 42", "\\boxed{\\frac{84}{2}}", "The answer is 41.", ""]
    assert _reward(Scorer(), transcripts, ["42"] * 4) == [1.0, 1.0, 0.0, 0.0]
