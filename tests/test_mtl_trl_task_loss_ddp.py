"""mtl.trl.task_loss task_mean (seed 000's PCGrad path: each task's loss is its token mean over
its rows of the step) under gradient accumulation and 2 processes (gloo on CPU, through
ftlab.launch): the per-task token counts are the step's, over all micro-steps and processes,
so every job shape gives the update of 1 process holding the whole batch. The runs draw their
batches as seed 000 (batch_composition per_task): every step the same rows for every shape.

tests/test_mtl_trl_train.py checks one step against hand-built per-task token means; here the
runs use fixed completions and rewards (tests/mtl_grpo_fixed.py) so that the global batch does
not depend on the job shape, and the weights of 2-epoch runs (8 steps) are compared. Negative
controls: batch_share (task t weighted by N_t/N) and counts left per process (no all-reduce)
each move the weights far beyond the tolerance.
"""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_mtl_grpo_ddp import max_diff
from test_mtl_grpo_ddp import train as grpo_train
from test_mtl_trl_train import TRAINING, TRL

from ftlab.io import read_jsonl
from ftlab.llm import tiny

pytestmark = pytest.mark.slow
ATOL = 1e-5
TESTS = Path(__file__).resolve().parent


def train(root: Path, base: str, method: str, processes: int, grad_accum: int,
          task_loss: str = "task_mean", counts=None) -> Path:  # fmt: skip
    """A 2-epoch GRPO run; the global batch is 8 completions (4 prompts x 2) for every job
    shape (batch_size is per process and micro-step)."""
    return grpo_train(
        root, base, method, processes, reduction="mean",
        trl={**TRL, "max_completion_length": 6, "grad_accum": grad_accum,
             "task_loss": task_loss, "batch_composition": "per_task"},
        training={**TRAINING, "epochs": 2, "batch_size": 8 // processes // grad_accum},
        checkpoints={"save_every_epochs": 2, "keep_last": 1}, counts=counts,
    )  # fmt: skip


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("task_loss_base")
    return tiny.build_tiny_causal_lm(root / "tiny", seed=0, layers=1, hidden=32, heads=2,
                                     max_length=512)  # fmt: skip


SHAPES = [(1, 1), (1, 2), (2, 2)]  # (processes, grad_accum)


@pytest.fixture(scope="module")
def runs(base, tmp_path_factory):
    root = tmp_path_factory.mktemp("task_loss_ddp")
    with pytest.MonkeyPatch.context() as mp:  # the launched workers import the test double
        mp.syspath_prepend(str(TESTS))
        mp.setenv("PYTHONPATH", str(TESTS))
        out = {(m, p, a): train(root / f"{m}{p}{a}", base, m, p, a)
               for m in ("pcgrad", "baseline") for p, a in SHAPES}  # fmt: skip
        out["batch_share"] = train(root / "share", base, "pcgrad", 1, 1, "batch_share")
        out["local"] = train(root / "local", base, "pcgrad", 2, 2, counts="local")
    return out


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "model/checkpoint-8/model.safetensors")


@pytest.mark.parametrize("method", ["pcgrad", "baseline"])
@pytest.mark.parametrize(("processes", "grad_accum"), SHAPES[1:])
def test_task_mean_is_the_same_update_for_every_job_shape(runs, base, method, processes,
                                                          grad_accum):  # fmt: skip
    one = weights(runs[method, 1, 1])
    other = weights(runs[method, processes, grad_accum])
    for k in one:
        torch.testing.assert_close(other[k], one[k], rtol=0, atol=ATOL, msg=k)
    assert max_diff(one, load_file(f"{base}/model.safetensors")) > 100 * ATOL


def test_every_step_holds_each_tasks_share_for_every_job_shape(runs):
    """batch_composition per_task (the seed's, with task_mean): each step's global batch is 2
    prompts x 2 completions of each task, the same rows whatever the job shape."""
    logged = {}
    for (method, processes, accum), run in ((k, v) for k, v in runs.items() if len(k) == 3):
        steps: dict[int, list] = {}
        for r in range(processes):  # rank order = the global batch's order
            for line in read_jsonl(run / "batches" / f"rank{r}.jsonl"):
                steps.setdefault(line["step"], []).extend(line["tasks"])
        assert sorted(steps) == list(range(8))
        assert all(sorted(tasks) == [0, 0, 0, 0, 1, 1, 1, 1] for tasks in steps.values())
        logged[method, processes, accum] = steps
    assert len({str(v) for k, v in logged.items() if k[0] == "pcgrad"}) == 1


def test_the_task_loss_and_the_token_all_reduce_matter(runs):
    """batch_share weighs the tasks by their token shares (unequal here: the completions'
    lengths differ), and per-process counts normalize by the wrong tokens: both move the
    weights far beyond the tolerance of the comparisons above."""
    one = weights(runs["pcgrad", 1, 1])
    assert max_diff(weights(runs["batch_share"]), one) > 100 * ATOL
    assert max_diff(weights(runs["local"]), one) > 100 * ATOL
