"""ftlab.mtl.guru: LiveBench (ood__livebench) graders.

Expected scores are derived by reading Reasoning360-MTL @6133d10 verl/utils/reward_score/
livebench/ (__init__.py, util.py and each task's utils.py); the reason is given with each case.
"""

import json

import pytest

from ftlab.mtl import guru


def score(task, answer, truth):
    result = guru.compute_score("ood__livebench", answer, truth, {"task": task})
    assert list(result) == ["score", "acc"] and result["score"] == result["acc"]
    return result["score"]


CASES = [
    # cta: letters/digits only, the answer may end with the truth; boxes and \text are unwrapped
    ("cta", "the class is Revenue", "Revenue", 1),
    ("cta", r"\boxed{\text{Revenue}}", "Revenue", 1),
    ("cta", "Revenue is not it, nope", "Revenue", 0),
    # tablejoin: F1 of the mapping, rounded to 2 places
    ("tablejoin", "{'a': 'x', 'b': 'z'}", "{'a': 'x', 'b': 'y'}", 0.5),
    ("tablejoin", "```python\n{'a': 'x', 'c': None}\n```", "{'a': 'x', 'b': 'y'}", 0.67),
    ("tablejoin", '```json\n{"a": "x", "b": null}\n```', "{'a': 'x', 'b': 'y'}", 0.67),
    ("tablejoin", "no", "{'a': 'x'}", 0.0),
    # web_of_lies_v2: solution tags, bold words, \textbf as a box, or the last plain triple
    ("web_of_lies_v2", "<solution>yes, no, unknown</solution>", "yes, no, unknown", 1),
    ("web_of_lies_v2", "**yes** then **no** and **unknown**", "yes, no, unknown", 1),
    ("web_of_lies_v2", r"\textbf{yes, no, unknown}", "yes, no, unknown", 1),
    ("web_of_lies_v2", "so yes, no, unknown.", "yes, no, unknown", 1),
    # a three-word answer that contains the (one-word) truth counts
    ("web_of_lies_v2", "<solution>yes, no, yes</solution>", "no", 1),
    # ... but "unknown" also counts as a "no", so this one has four and does not
    ("web_of_lies_v2", "<solution>unknown, yes, yes</solution>", "yes", 0),
    # web_of_lies_v3: (all right + fraction right) / 2, words compared as split by ","
    ("web_of_lies_v3", "<solution>yes,no,no</solution>", "yes,no,yes", 1 / 3),
    ("web_of_lies_v3", "<solution>yes, no, yes</solution>", "yes, no, yes", 1.0),
    # house_traversal: the names in the last bold parts, or in order in the last one
    ("house_traversal", "**alice** then **bob**", "alice bob", 1),
    ("house_traversal", "**alice and bob**", "alice bob", 1),
    ("house_traversal", "**bob alice**", "alice bob", 0),
    # the per-part test is equality (a (stars, text) pair), so "bob x" is not "bob"
    ("house_traversal", "**alice** **bob x**", "alice bob", 0),
    # zebra_puzzle (the seed's _old grader): the last ***word***, digits as words
    ("zebra_puzzle", "***3***", "three", 1),
    ("zebra_puzzle", "***comedy***", "comedy movies", 1),
    ("zebra_puzzle", "the answer is fish.", "fish", 1),
    ("zebra_puzzle", "***4*** then 3", "3", 0),
    # spatial: the last three bold parts, spelled numbers, short shape phrases, boxes
    ("spatial", "**three**", "3", 1),
    ("spatial", "**equilateral triangle**", "triangle", 1),
    ("spatial", "**circle square triangle**", "triangle", 0),
    ("spatial", r"\boxed{\textbf{3}}", "3", 1),
    ("spatial", "**3** **x** **y** **z**", "3", 0),
    # plot_unscrambling: 1 - edit distance of the sentence order / sentences
    ("plot_unscrambling", "<PLOT_SUMMARY>A b. C d. E f.</PLOT_SUMMARY>", "A b. C d. E f.", 1.0),
    ("plot_unscrambling", "E f. C d. A b.", "A b. C d. E f.", 1 - 2 / 3),
    # typos: the corrected text must appear (between --- markers when there are some)
    ("typos", "blah --- The quick brown fox --- end", "The quick brown fox", 1),
    ("typos", "The quik brown fox", "The quick brown fox", 0),
    # connections (the seed's _old grader): groups of four in any bold part
    ("connections", "**e, f, g, h, a, b, c, d**", "a,b,c,d,e,f,g,h", 1.0),
    ("connections", "**a,b,c,d** and **x**", "a,b,c,d,e,f,g,h", 0.5),
    ("connections", "**a, b, c, e, d, f, g, h**", "a,b,c,d,e,f,g,h", 0),
    # LiveBench's "tablereformat" is not a task the seed's dispatch names ("tableformat")
    ("tablereformat", "anything", "anything", 0),
    ("no_such_task", "x", "x", 0),
]


@pytest.mark.parametrize(("task", "answer", "truth", "expected"), CASES)
def test_livebench(task, answer, truth, expected):
    assert score(task, answer, truth) == pytest.approx(expected)


def test_livebench_errors_as_the_seed():
    with pytest.raises(TypeError, match="tableformat"):
        score("tableformat", "x", "x")
    with pytest.raises(TypeError):  # "\boxed{" without a closing brace: remove_boxed(None)
        score("cta", r"\boxed{Revenue", "Revenue")
    with pytest.raises(KeyError):
        guru.compute_score("ood__livebench", "x", "x", {})
    with pytest.raises(ZeroDivisionError):  # a truth without sentences
        score("plot_unscrambling", "x", "...")


def test_tablejoin_truth_as_dict():
    truth = {"a": "x", "b": "y"}
    assert score("tablejoin", json.dumps({"a": "x", "b": "y"}), truth) == 1.0
