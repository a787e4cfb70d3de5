"""Plan the paper's exp1 matrix through the Snakemake API (dry run) and count its jobs."""

import logging
from collections import Counter
from pathlib import Path

import pytest
from snakemake.api import SnakemakeApi
from snakemake.settings.types import (
    ConfigSettings,
    DAGSettings,
    OutputSettings,
    ResourceSettings,
    StorageSettings,
)

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "config/experiments/paper_exp1.yaml"


class _JobCollector(logging.Handler):
    """Keeps Snakemake's per-job records (rule name, wildcards, outputs) of a dry run."""

    def __init__(self):
        super().__init__()
        self.jobs: list[dict] = []

    def emit(self, record):
        if str(getattr(record, "event", "")).endswith("job_info"):
            self.jobs.append(
                {
                    "rule": record.rule_name,
                    "output": list(record.output),
                    "wildcards": dict(record.wildcards or {}),
                }
            )


def dry_run(configfile: Path, workdir: Path, targets=()) -> list[dict]:
    collector = _JobCollector()
    logger = logging.getLogger("snakemake")
    logger.addHandler(collector)
    try:
        with SnakemakeApi(OutputSettings()) as api:
            wf = api.workflow(
                snakefile=REPO / "Snakefile",
                resource_settings=ResourceSettings(cores=1),
                config_settings=ConfigSettings(configfiles=[configfile]),
                storage_settings=StorageSettings(),
                workdir=workdir,
            )
            wf.dag(DAGSettings(targets=set(targets))).execute_workflow(executor="dryrun")
    finally:
        logger.removeHandler(collector)
    return collector.jobs


def rule_counts(jobs) -> Counter:
    return Counter(job["rule"] for job in jobs)


@pytest.fixture(scope="module")
def paper_jobs(tmp_path_factory):
    return dry_run(PAPER, tmp_path_factory.mktemp("wd"))


def test_paper_exp1_training_jobs(paper_jobs):
    train = {r: n for r, n in rule_counts(paper_jobs).items() if r.startswith("train")}
    assert train == {"train_base": 3, "train_finetune": 84}  # 3 x (1 + 7 + 21)
    models = {j["wildcards"]["model"] for j in paper_jobs if j["rule"].startswith("train")}
    assert len(models) == 87
    assert {"base_seed1", "ftwb1-7_seed2", "ftwb2-21_seed3"} <= models


def test_paper_exp1_evaluations_and_extractions(paper_jobs):
    counts = rule_counts(paper_jobs)
    assert counts["evaluate"] == 87  # one job (one model load) per model's last checkpoint
    assert counts["represent"] == 87
    outputs = [f for j in paper_jobs if j["rule"] == "evaluate" for f in j["output"]]
    # every eval set of a checkpoint in one metrics and one samples file
    assert len(set(outputs)) == len(outputs) == 87 * 2
    assert sum(f.endswith("/world_eval.json") for f in outputs) == 87


def test_paper_exp1_one_heatmap_set_per_seed(paper_jobs):
    plots = sorted(f for j in paper_jobs if j["rule"].startswith("plot") for f in j["output"])
    for seed in (1, 2, 3):
        for name in ("ftwb1_heatmap", "ftwb2_heatmap", "ftwb2_actual_minus_expected"):
            assert f"results/paper_exp1/plots/seed{seed}_{name}.png" in plots
    assert len(plots) == 3 * 3 + 1  # + the probe figure


def test_single_plot_target_needs_only_its_models(tmp_path):
    target = "results/paper_exp1/plots/seed1_ftwb2_heatmap.png"
    jobs = dry_run(PAPER, tmp_path, [target])
    counts = rule_counts(jobs)
    # the seed-1 base model and its 21 two-task fine-tunes; no ftwb1, no other seed, no probes
    assert counts["train_base"] == 1 and counts["train_finetune"] == 21
    assert counts["evaluate"] == 22
    assert {"represent", "tables", "plot_probes"}.isdisjoint(counts)
    models = {j["wildcards"].get("model") for j in jobs} - {None}
    assert all(m.endswith("_seed1") and not m.startswith("ftwb1") for m in models)


def test_forgetting_study_plans_every_checkpoint(tmp_path):
    """Seed 003's matrix: 3 methods x 3 datasets, every checkpoint and the base evaluated, the
    preflight before any GPU job."""
    jobs = dry_run(REPO / "config/experiments/forgetting_qwen3_1.7b.yaml", tmp_path)
    counts = rule_counts(jobs)
    assert counts["train_llm"] == 9 and counts["llm_preflight"] == 1
    assert counts["teacher_trajectories"] == 3
    # base + GT-SFT 15/14/15 + SF-SFT 14/6/13 (declared teacher records) + GRPO 6/4/5
    assert counts["evaluate_llm"] == 1 + (15 + 14 + 15) + (14 + 6 + 13) + (6 + 4 + 5)
    runs = {j["wildcards"]["model"] for j in jobs if j["rule"] == "train_llm"}
    assert "teacher_sft-math_seed1" in runs and "grpo-triviaqa_seed1" in runs
    last = {(j["wildcards"]["model"], int(j["wildcards"]["step"])) for j in jobs
            if j["rule"] == "evaluate_llm"}  # fmt: skip
    for point in [("gt_sft-gsm8k_seed1", 1401), ("gt_sft-math_seed1", 1386),
                  ("gt_sft-triviaqa_seed1", 1404), ("grpo-math_seed1", 800)]:  # fmt: skip
        assert point in last


def test_one_metrics_and_one_samples_file_per_evaluation_job():
    """An evaluation job writes two files whatever the number of eval sets (each file is
    Snakemake work in every DAG of a 100x matrix); tables and plots read one per job, and rule
    all requests both, so a deleted one is rebuilt."""
    from ftlab.config import load_config
    from ftlab.paths import Layout
    from ftlab.study import Study

    study = Study(load_config(PAPER))
    layout = Layout(study.cfg["study"])
    n_jobs = sum(len(m.eval_steps) for m in study.models.values())
    metrics = [f for m in study.models for f in study.eval_outputs(layout, m)]
    assert len(metrics) == len(set(metrics)) == n_jobs == 87
    targets = set(study.targets(layout))
    for m in study.models:
        for step in study.model(m).eval_steps:
            assert layout.path("eval_metrics", model=m, step=step) in targets
            assert layout.path("eval_samples", model=m, step=step) in targets


def test_plot_targets_outside_the_study_are_refused(tmp_path):
    """A seed or a dataset the study does not have is an error, not an empty placeholder plot
    (world model) nor most of the study planned for a plot no rule can draw (LLM)."""
    from snakemake.exceptions import MissingRuleException, WorkflowError

    with pytest.raises(WorkflowError, match=r"seed 4: the study's seeds are \[1, 2, 3\]"):
        dry_run(PAPER, tmp_path / "w", ["results/paper_exp1/plots/seed4_ftwb1_heatmap.png"])
    forgetting = REPO / "config/experiments/forgetting_qwen3_1.7b.yaml"
    with pytest.raises(MissingRuleException):
        dry_run(forgetting, tmp_path / "l",
                ["results/forgetting_qwen3_1.7b/plots/forgetting_nosuch.png"])  # fmt: skip
    jobs = dry_run(
        forgetting, tmp_path / "l", ["results/forgetting_qwen3_1.7b/plots/forgetting_math.png"]
    )
    assert rule_counts(jobs)["plot_llm"] == 1
