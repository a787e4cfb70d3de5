r"""Answer checking follows lm-eval's checkers (ftlab.llm.rewards): a table of completions
scored by rewards and, independently, by the installed lm-eval's own functions
(hendrycks_math is_equiv / last_boxed_only_string / remove_boxed; gsm8k's flexible-extract
RegexFilter and exact_match with the task YAML's options), plus hand-worked expectations."""

from pathlib import Path

import pytest
import yaml

from ftlab.llm import rewards

lm_eval = pytest.importorskip("lm_eval")
from lm_eval.api.metrics import exact_match_hf_evaluate  # noqa: E402
from lm_eval.filters.extraction import RegexFilter  # noqa: E402
from lm_eval.tasks.hendrycks_math import utils as math_utils  # noqa: E402

GSM8K_YAML = Path(lm_eval.__file__).parent / "tasks" / "gsm8k" / "gsm8k.yaml"


def gsm8k_task() -> dict:
    return yaml.safe_load(GSM8K_YAML.read_text())


def lm_eval_gsm8k(answer_text: str, gold: str) -> bool:
    """lm-eval's gsm8k flexible-extract + exact_match, configured from the installed YAML."""
    task = gsm8k_task()
    (flex,) = [f for f in task["filter_list"] if f["name"] == "flexible-extract"]
    regex = flex["filter"][0]
    filt = RegexFilter(regex["regex_pattern"], group_select=regex["group_select"])
    (pred,) = filt.apply([[answer_text]], [{}])[0]
    (metric,) = task["metric_list"]
    score = exact_match_hf_evaluate(
        [pred], [gold], regexes_to_ignore=metric["regexes_to_ignore"],
        ignore_case=metric["ignore_case"], ignore_punctuation=metric["ignore_punctuation"],
    )  # fmt: skip
    return bool(score["exact_match"] == 1.0)


def test_gsm8k_constants_are_the_installed_tasks():
    task = gsm8k_task()
    (flex,) = [f for f in task["filter_list"] if f["name"] == "flexible-extract"]
    assert flex["filter"][0]["regex_pattern"] == rewards.GSM8K_FLEXIBLE_REGEX
    assert flex["filter"][0]["group_select"] == -1
    assert tuple(task["metric_list"][0]["regexes_to_ignore"]) == rewards.GSM8K_IGNORE


# (completion, gold, the answer text lm-eval should see, hand-worked verdict)
GSM8K = [
    ("<reasoning>r</reasoning><answer>42</answer>", "42", "42", True),
    ("<reasoning>r</reasoning><answer>\\boxed{42}</answer>", "42", "42", True),
    ("<reasoning>r</reasoning><answer>x = 18</answer>", "18", "x = 18", True),
    ("<reasoning>r</reasoning><answer>The answer is 18</answer>", "18", "The answer is 18", True),
    ("<reasoning>r</reasoning><answer>$1,000.</answer>", "1000", "$1,000.", True),
    ("<reasoning>r</reasoning><answer>18 dollars</answer>", "18", "18 dollars", True),
    ("<reasoning>r</reasoning><answer>-5</answer>", "-5", "-5", True),
    ("<reasoning>r</reasoning><answer>18.00</answer>", "18", "18.00", False),  # string match
    ("<reasoning>r</reasoning><answer>17</answer>", "18", "17", False),
    ("<reasoning>r</reasoning><answer>none</answer>", "18", "none", False),
    ("so 3 + 4\n#### 7\nbye 10", "7", "7", True),  # untagged: strict "#### N" first
    ("first 12, then 1,500 apples", "1500", "first 12, then 1,500 apples", True),  # last number
]


@pytest.mark.parametrize(("completion", "gold", "seen", "verdict"), GSM8K)
def test_gsm8k_agrees_with_lm_eval(completion, gold, seen, verdict):
    assert lm_eval_gsm8k(seen, gold) is verdict
    pred = rewards.extract_answer(completion, "gsm8k")
    assert rewards.is_correct(pred, {"answer": gold}, "gsm8k") is verdict


# (answer inside the tag, gold \boxed content, hand-worked verdict)
MATH = [
    ("\\frac12", "\\frac{1}{2}", True),
    ("\\dfrac{1}{2}", "\\frac{1}{2}", True),
    ("0.5", "\\frac{1}{2}", True),
    ("1/2", "\\frac{1}{2}", True),
    ("\\sqrt2", "\\sqrt{2}", True),
    ("x = 5", "5", True),
    ("5 \\text{ cm}", "5", True),
    ("$\\frac{3}{4}$", "\\frac{3}{4}", True),  # process_results: between the first and last $
    ("\\boxed{\\frac{3}{4}}", "\\frac{3}{4}", True),
    ("10^\\circ", "10", True),
    ("1,2", "12", False),  # a list, not twelve (the old checker stripped the comma)
    ("2x", "2", False),
    ("\\frac{1}{3}", "\\frac{1}{2}", False),
    ("(1, 2)", "(1,2)", True),
]


@pytest.mark.parametrize(("answer", "gold", "verdict"), MATH)
def test_math_agrees_with_lm_eval(answer, gold, verdict):
    seen = answer
    if "\\boxed" in seen:
        seen = math_utils.remove_boxed(math_utils.last_boxed_only_string(seen))
    dollars = [i for i, c in enumerate(seen) if c == "$"]
    if len(dollars) > 1:
        seen = seen[dollars[0] + 1 : dollars[-1]]
    assert math_utils.is_equiv(seen, gold) is verdict
    completion = f"<reasoning>r</reasoning><answer>{answer}</answer>"
    pred = rewards.extract_answer(completion, "math")
    assert rewards.is_correct(pred, {"answer": gold}, "math") is verdict
    # untagged, boxed: the same answer
    untagged = f"so \\boxed{{{answer}}}" if "\\boxed" not in answer else f"so {answer}"
    if "$" not in answer:
        assert rewards.is_correct(rewards.extract_answer(untagged, "math"), {"answer": gold},
                                  "math") is verdict  # fmt: skip


def test_unbox_matches_lm_eval():
    for text in ("so \\boxed{\\frac{1}{2}} done", "a \\boxed{1} b \\boxed{{2}}", "\\boxed 5$"):
        expect = math_utils.remove_boxed(math_utils.last_boxed_only_string(text))
        assert rewards.unbox(text) == expect
    assert rewards.unbox("\\fbox{7}") == "7" and rewards.unbox("no box") is None


def test_partial_reads_the_checked_number():
    hundred = {"answer": "100"}
    assert rewards.is_partial("The answer is 105", hundred, "gsm8k")
    assert rewards.is_partial("x = 95", hundred, "gsm8k")
    assert not rewards.is_partial("111", hundred, "gsm8k")
    assert not rewards.is_partial("1,2", {"answer": "12"}, "math")  # no comma stripping
    assert rewards.is_partial("1,050", {"answer": "1000"}, "math")  # thousands separator


def test_reward_needs_a_closed_answer_tag():
    cut = "<reasoning>3 + 4 = 7, then multiply by 2 to get"  # cut off at the length limit
    kw = {"answer": ["2"], "fmt": ["gsm8k"]}
    assert rewards.correctness_reward([cut], **kw) == [0.0]
    assert rewards.extract_answer(cut, "gsm8k") == "2"  # in-domain scoring still reads it
    assert rewards.extract_answer(cut, "gsm8k", require_tag=True) is None
    assert rewards.correctness_reward(["#### 2"], **kw) == [0.0]
    assert rewards.correctness_reward(["<answer>\\boxed{2}</answer>"], **kw) == [1.0]
    assert rewards.correctness_reward(["<answer>2"], **kw) == [0.0]  # unclosed


def test_has_format_one_reasoning_one_answer():
    good = "<reasoning>a</reasoning><answer>1</answer>"
    assert rewards.has_format(good) and rewards.has_format(" " + good.replace("><a", ">\n<a"))
    for bad in (
        "<reasoning>a</reasoning><answer>1</answer> ignore this <answer>2</answer>",
        "<reasoning>a</reasoning><answer>1</answer><answer>2</answer>",
        "<reasoning>a</reasoning><reasoning>b</reasoning><answer>1</answer>",
        "<reasoning>a <answer>0</answer></reasoning><answer>1</answer>",
        "<reasoning>a</reasoning><answer>1 <reasoning>b</reasoning></answer>",
        "<reasoning>a</reasoning> x <answer>1</answer>",
        "<reasoning>a</reasoning><answer>1",
    ):
        assert not rewards.has_format(bad), bad
