"""lm_eval_runner._metric_row on planted lm-eval-shaped results: a task, a group (mmlu: the
group's own aggregated row, n summed over its subtasks) and the filter choice."""

from types import SimpleNamespace

import pytest

from ftlab.llm.lm_eval_runner import _metric_row


class Group:
    """What lm-eval's task manager gives for a group: get_all_tasks() -> its leaf tasks."""

    def __init__(self, *names):
        self.names = names

    def get_all_tasks(self):
        return [SimpleNamespace(task_name=n) for n in self.names]


RES = {
    "results": {
        # a group row as lm-eval aggregates it (sample-size weighted mean over the subtasks)
        "mmlu": {"alias": "mmlu", "acc,none": 0.625, "acc_stderr,none": 0.0125},
        "mmlu_anatomy": {"alias": " - anatomy", "acc,none": 0.5, "acc_stderr,none": 0.02},
        "mmlu_virology": {"alias": " - virology", "acc,none": 0.75, "acc_stderr,none": 0.03},
        "gsm8k": {
            "exact_match,strict-match": 0.25,
            "exact_match_stderr,strict-match": 0.05,
            "exact_match,flexible-extract": 0.5,
            "exact_match_stderr,flexible-extract": "N/A",
        },
        "arc_challenge": {"acc,none": 0.4, "acc_norm,none": 0.45, "acc_norm_stderr,none": 0.01},
    },  # fmt: skip
    "n-samples": {
        "mmlu_anatomy": {"original": 135, "effective": 135},
        "mmlu_virology": {"original": 166, "effective": 100},  # limited
        "gsm8k": {"original": 1319, "effective": 1319},
        "arc_challenge": {"original": 1172, "effective": 1172},
    },
}


def test_group_row_is_the_groups_own_and_counts_every_subtask():
    row = _metric_row(RES, "mmlu", "acc", Group("mmlu_anatomy", "mmlu_virology"))
    assert row == {"task": "mmlu", "metric": "acc", "value": 0.625, "stderr": 0.0125,
                   "n": 135 + 100}  # fmt: skip


def test_task_rows_filters_and_errors():
    task = SimpleNamespace(task_name="arc_challenge")
    assert _metric_row(RES, "arc_challenge", "acc_norm", task) == {
        "task": "arc_challenge", "metric": "acc_norm", "value": 0.45, "stderr": 0.01,
        "n": 1172}  # fmt: skip
    gsm = SimpleNamespace(task_name="gsm8k")
    with pytest.raises(ValueError, match="several filters"):
        _metric_row(RES, "gsm8k", "exact_match", gsm)
    row = _metric_row(RES, "gsm8k", "exact_match,flexible-extract", gsm)
    assert (row["metric"], row["value"], row["stderr"]) == (
        "exact_match,flexible-extract", 0.5, None)  # fmt: skip
    with pytest.raises(ValueError, match=r"no result 'f1'.*acc,none"):
        _metric_row(RES, "arc_challenge", "f1", task)
