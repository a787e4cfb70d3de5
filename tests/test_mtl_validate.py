"""Validation of a multi-task TRL run split over processes (ftlab.mtl.trl_validate): with 2
processes each scores every other row and the counts are summed, so every rank gets the
1-process score, here with scripted greedy answers on an odd number of rows (uneven shards).
The loss path is compared 1 vs 2 processes in tests/test_mtl_ddp.py."""

import json
from pathlib import Path

import pytest
from mtl_validate_stage import scripted
from test_mtl_trl_train import FORMATS, TASKS, row

from ftlab import launch
from ftlab.io import write_jsonl
from ftlab.llm.rewards import extract_answer, is_correct

TESTS = Path(__file__).resolve().parent
ROWS = [row(i, t) for i in range(6) for t in TASKS][:11]  # 11 rows: shards of 6 and 5


def expected_score() -> float:
    """Independently: the scripted answers scored one by one."""
    answers = scripted(ROWS)
    from ftlab.mtl.trl_data import validation_prompts

    items = validation_prompts(ROWS, TASKS)
    right = [is_correct(extract_answer(answers[i["prompt"]], FORMATS[i["task"]]), i["row"],
                        FORMATS[i["task"]]) for i in items]  # fmt: skip
    assert 0 < sum(right) < len(right)  # some right, some wrong
    return sum(right) / len(right)


@pytest.mark.parametrize("processes", [1, 2])
def test_every_rank_gets_the_score_of_all_rows(processes, tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(TESTS))
    write_jsonl(tmp_path / "val.jsonl", ROWS)
    plan = launch.plan_for("train", {"processes": processes}, threads=1)
    kwargs = {"rows_path": str(tmp_path / "val.jsonl"), "out_dir": str(tmp_path),
              "formats": FORMATS}  # fmt: skip
    if processes == 1:
        import mtl_validate_stage

        from ftlab.mtl import trl_validate

        # the stage replaces trl_validate.completions: restored after this test, so later
        # tests in this process see the real one
        monkeypatch.setattr(trl_validate, "completions", trl_validate.completions)
        mtl_validate_stage.score(**kwargs)
    else:
        launch.run_stage(plan, "mtl_validate_stage:score", kwargs=kwargs,
                         payload_path=tmp_path / "launch.json")  # fmt: skip
    got = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(processes)]
    assert [g["score"] for g in got] == [expected_score()] * processes
    assert [g["prompts"] for g in got] == ([11] if processes == 1 else [6, 5])
