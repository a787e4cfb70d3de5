"""The grpo objective with 2 processes (gloo on CPU) through ftlab.launch, the path of seed
000's 2-GPU job, against 1 process with the same global batch, for PCGrad and the baseline.

What can be compared exactly: TRL samples each process's completions from that process's own
torch generator, so 2 processes never draw the completions 1 process draws (their streams
start alike and cover other rows). The test therefore fixes the completions by (step, row of
the global batch) and the reward by (completion, task) (tests/mtl_grpo_fixed.py); everything
the process count touches stays real: TRL's reward gathering and group advantages, its loss
normalized by the global token count, the split by task, the cross-rank weighting of the task
gradients, the projection, clipping and Adam. Then the 2-process weights equal the 1-process
weights within float summation order (1e-5, as tests/test_mtl_ddp.py), at every kept
checkpoint. The batches make the weighting matter: in some steps a task has rows on one
process only, and replacing the weighting by one where such a process does not count
(`absent_zero`) moves the weights far beyond the tolerance.

With TRL's own sampling (`rollouts="sampled"`) what holds is weaker: 2-process runs repeat
exactly (the same completions, bitwise the same weights), and they differ from 1 process from
the first batch on - even rank 0's rows, which the 1-process run draws in a batch of twice the
size from the same seed.
"""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_mtl_trl_train import FORMATS, TASKS, TRAINING, TRL, row

from ftlab import launch
from ftlab.io import read_jsonl, write_jsonl
from ftlab.llm import tiny

pytestmark = pytest.mark.slow
ATOL = 1e-5
TESTS = Path(__file__).resolve().parent
N_ROWS = 8  # prompts per task: 16 prompts, 4 per step (2 per process), 4 steps per epoch


def write_rows(root: Path) -> tuple[str, str]:
    train = [row(i, t) for i in range(N_ROWS) for t in TASKS]
    val = [row(i, t) for i in range(20, 22) for t in TASKS]
    write_jsonl(root / "train.jsonl", train)
    write_jsonl(root / "val.jsonl", val)
    return str(root / "train.jsonl"), str(root / "val.jsonl")


def train(root: Path, base: str, method: str, processes: int, weighting=None,
          rollouts="fixed", **settings) -> Path:  # fmt: skip
    """A 2-epoch GRPO run; the global batch is 8 completions (4 prompts x 2) whatever the
    process count (batch_size is per process). settings: run_trl_training arguments that
    replace these (tests/test_mtl_trl_task_loss_ddp.py)."""
    root.mkdir(parents=True)
    train_rows, val_rows = write_rows(root)
    kwargs = dict(
        train_rows=train_rows, validation_rows=val_rows, out_dir=str(root / "model"),
        state_dir=str(root / "state"), threads=1, objective="grpo", model_name=f"{method}_seed3",
        tasks=TASKS, method=method, reduction="sum", base_model=base,
        trl={**TRL, "max_completion_length": 6}, formats=FORMATS,
        training={**TRAINING, "epochs": 2, "batch_size": 8 // processes},
        validation={"every_epochs": 1, "before_training": False, "metric": "loss",
                    "batch_size": 8, "max_new_tokens": None, "temperature": 0.0, "top_p": 1.0},
        early_stopping={"enabled": False, "min_epochs": 0, "patience": 1, "min_delta": 0.0,
                        "mode": "max"},
        checkpoints={"save_every_epochs": 1, "keep_last": 2}, seed=3, device="cpu",
        log_dir=str(root / "batches"), weighting=weighting, rollouts=rollouts,
    )  # fmt: skip
    kwargs.update(settings)
    plan = launch.plan_for("train", {"processes": processes}, threads=1)
    launch.run_stage(plan, "mtl_grpo_fixed:train", kwargs=kwargs,
                     payload_path=root / "launch.json")  # fmt: skip
    return root


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("mtl_grpo_base")
    return tiny.build_tiny_causal_lm(root / "tiny", seed=0, layers=1, hidden=32, heads=2,
                                     max_length=512)  # fmt: skip


@pytest.fixture(scope="module")
def runs(base, tmp_path_factory):
    root = tmp_path_factory.mktemp("mtl_grpo_ddp")
    with pytest.MonkeyPatch.context() as mp:  # the launched workers import the test double
        mp.syspath_prepend(str(TESTS))
        mp.setenv("PYTHONPATH", str(TESTS))
        out = {(m, p): train(root / f"{m}{p}", base, m, p)
               for m in ("pcgrad", "baseline") for p in (1, 2)}  # fmt: skip
        out["absent_zero"] = train(root / "absent_zero", base, "pcgrad", 2, "absent_zero")
    return out


def weights(run: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(run / f"model/checkpoint-{step}/model.safetensors")


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def batches(run: Path, processes: int) -> dict[int, list[list[int]]]:
    """{step: [the tasks of each process's rows]}."""
    out: dict[int, list] = {}
    for r in range(processes):
        for line in read_jsonl(run / "batches" / f"rank{r}.jsonl"):
            out.setdefault(line["step"], [None] * processes)[r] = line["tasks"]
    return out


def test_the_processes_share_the_one_process_batches(runs):
    """Step by step, the 2 processes' rows are the 1-process rows (rank 0 the first half);
    some steps have a task on one process only, some a process with both tasks."""
    for method in ("pcgrad", "baseline"):
        one, two = batches(runs[method, 1], 1), batches(runs[method, 2], 2)
        assert sorted(one) == sorted(two) == list(range(8))
        for step in one:
            assert two[step][0] + two[step][1] == one[step][0], step
    two = batches(runs["pcgrad", 2], 2)
    one_sided = [s for s, (a, b) in two.items() if set(a) ^ set(b)]
    both_here = [s for s, ranks in two.items() if any(len(set(t)) == 2 for t in ranks)]
    assert one_sided and both_here, two
    advantages = [a for line in read_jsonl(runs["pcgrad", 1] / "batches/rank0.jsonl")
                  for a in line["advantages"]]  # fmt: skip
    assert any(a != 0 for a in advantages)


@pytest.mark.parametrize("method", ["pcgrad", "baseline"])
def test_two_process_grpo_equals_one_process_with_the_same_global_batch(runs, base, method):
    one, two = runs[method, 1], runs[method, 2]
    start = load_file(f"{base}/model.safetensors")
    for step in (4, 8):
        a, b = weights(one, step), weights(two, step)
        for k in a:
            torch.testing.assert_close(b[k], a[k], rtol=0, atol=ATOL, msg=k)
    assert max_diff(weights(one, 8), start) > 100 * ATOL  # the steps moved the weights
    info = [json.loads((r / "model/checkpoint-8/ftlab_checkpoint.json").read_text())
            for r in (one, two)]  # fmt: skip
    assert [i["processes"] for i in info] == [1, 2]
    assert info[0]["steps_per_epoch"] == info[1]["steps_per_epoch"] == 4


def test_pcgrad_differs_from_the_baseline(runs):
    """The tasks' rewards conflict: the projection changes the run beyond the tolerance."""
    assert max_diff(weights(runs["pcgrad", 1], 8), weights(runs["baseline", 1], 8)) > 100 * ATOL


def test_a_wrong_cross_rank_weighting_fails_the_comparison(runs):
    """A process without rows of a task still counts in GRPO's average (its share of the
    globally normalized loss is 0, not missing): leaving it out changes the update."""
    wrong = max_diff(weights(runs["absent_zero"], 8), weights(runs["pcgrad", 1], 8))
    assert wrong > 100 * ATOL


def completions(run: Path, processes: int) -> dict[int, list]:
    """{step: the completion ids of the global batch, rank 0's rows first}."""
    out: dict[int, list] = {}
    for r in range(processes):
        for line in read_jsonl(run / "batches" / f"rank{r}.jsonl"):
            out.setdefault(line["step"], []).extend(line["completions"])
    return out


def test_with_trls_sampling_two_process_runs_repeat_but_are_not_one_process(base, tmp_path):
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(TESTS))
        mp.setenv("PYTHONPATH", str(TESTS))
        one = train(tmp_path / "one", base, "pcgrad", 1, rollouts="sampled")
        two, again = (train(tmp_path / n, base, "pcgrad", 2, rollouts="sampled")
                      for n in ("two", "again"))  # fmt: skip
    c1, c2 = completions(one, 1), completions(two, 2)
    assert completions(again, 2) == c2 and sorted(c2) == list(range(8))
    assert max_diff(weights(again, 8), weights(two, 8)) == 0.0
    assert not any(a == b for a, b in zip(c1[0], c2[0], strict=True))  # no row of the first batch
    assert max_diff(weights(one, 8), weights(two, 8)) > 100 * ATOL
