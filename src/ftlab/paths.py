"""The file contract: every path the workflow reads or writes, in one place.

Patterns are relative to the working directory (the repository root when Snakemake runs) and
keep Snakemake-style ``{wildcards}``. ``Layout(study).X`` is the pattern with the study filled
in; ``Layout(study).path("X", **wildcards)`` formats it fully. Rules, scripts and tests use
these names, never hand-built strings, so a moved file moves everywhere at once.

results/<study>/
  data/cities.csv                                  city table used (city_id,name,x,y,is_atlantis)
  data/<task>/<variant>/<split>.jsonl              one {"text": row} per line, no bos/eos
  data/mixtures/<mixture>/train.jsonl              fine-tuning mix (ftwb1-<i> / ftwb2-<k>)
  models/<model>/checkpoint-<step>/                HF layout: config, weights, tokenizer,
                                                   ftlab_checkpoint.json (self-description)
  models/<model>/training_log.csv                  step, loss, lr per logged step
  train_state/<model>/                             resumable state of an unfinished training
  evals/<model>/checkpoint-<step>/world_eval.json  metrics of every eval set of the
                                                   checkpoint: one results row per (eval_set,
                                                   task), per-set timing under "sets"
  evals/<model>/checkpoint-<step>/world_eval.samples.jsonl  per-sample eval_set, prompt,
                                                   target, output, task, score
  representations/<model>/checkpoint-<step>/features.npz   probe features per city
  representations/<model>/checkpoint-<step>/probe.json     probe R^2 / errors
  tables/metrics.csv, tables/normalized.csv, tables/probes.csv, tables/summary.csv
  plots/seed<S>_ftwb1_heatmap.png, plots/seed<S>_ftwb2_heatmap.png,
  plots/seed<S>_ftwb2_actual_minus_expected.png, plots/probes.png
  logs/<rule>/<...>.log, benchmarks/<rule>/<...>.tsv
  models/<model>/provenance.json                   git, host, versions, hashes of the training
  evals/<model>/checkpoint-<step>/provenance.json  ... and of each evaluation (ftlab.provenance)
  index.sqlite                                     results index, rebuildable (ftlab.registry)

LLM studies (kind: llm) use the same models/, evals/, tables/, plots/ folders:
  data/<dataset>/{train,test}.jsonl                normalized rows (question, answer, solution)
  data/<dataset>/data_report.json                  rows read, kept, dropped (and why) per source
  data/<dataset>/sft_{gt,teacher,cf_teacher}.jsonl SFT records (prompt, completion)
  data/<dataset>/{teacher,cf_teacher}_report.json  teacher pass rate (SF-SFT, CF-SFT)
  data/<dataset>/{teacher,cf_teacher}_shards/      finished teacher shards (resume after a kill)
  preflight.json                                   what the LLM preflight checked
  models/base/checkpoint-0/                        the tiny base model (base_model: tiny only)
  models/<method>-<dataset>_seed<S>/checkpoint-<step>/
  evals/<model>/checkpoint-<step>/lm_eval.json (+ .samples.jsonl), in_domain.json (+ samples)
  evals/<model>/checkpoint-<step>/vs_base.json     paired bootstrap vs the base, per benchmark
  eval_cache/<model>/checkpoint-<step>.sqlite      per-sample cache, one file per checkpoint
  tables/forgetting.csv, tables/forgetting_summary.csv, tables/in_domain.csv
  plots/forgetting_<dataset>.png, plots/forgetting_summary.png, plots/in_domain_<dataset>.png

Tool-integrated reasoning studies (kind: tir); <eval_set> = <dataset>__<sampling>:
  data/<dataset>/rows.jsonl                        problems {id, question, answer}
  models/base/checkpoint-0/                        the tiny base model (base_model: tiny only)
  models/<run>_seed<S>/checkpoint-<step>/          GRPO checkpoints (+ training_log.csv)
  evals/<model>/checkpoint-<step>/<eval_set>/generations.jsonl   every sample: each turn's
                                                   text, code, sandbox result, observation,
                                                   tokens, seconds; stop reason
  evals/<model>/checkpoint-<step>/<eval_set>/generation_info.json  model, sampling, sandbox
                                                   isolation, samples/s (written with the above)
  evals/<model>/checkpoint-<step>/<eval_set>/scores.json   pass@k (every k <= n), turns, tool
                                                   usage, void turns, timing (scoring rule)
  evals/<model>/checkpoint-<step>/<eval_set>/scored.jsonl  per-sample prediction and verdict
  evals/<model>/checkpoint-<step>/<eval_set>/provenance.json  of that eval set's generation
                                                   job (each eval set is its own job)
  tables/tir_scores.csv                            one row per point x eval set x k

Multi-task studies (kind: mtl); runs <method>_seed<S> (baseline, pcgrad):
  data/mtl/train.jsonl, data/mtl/validation.jsonl  the task mix (world rows / LLM rows with
                                                   their "task") and its held-out validation
  data/<task>/no_atlantis/{train,test}.jsonl       world: geometry splits (as kind worldmodel)
  data/mtl/<task>.jsonl                            sft/grpo: one training dataset, normalized
  models/base/checkpoint-0/                        sft/grpo: the tiny base model (tiny only)
  models/<run>/checkpoint-<step>/                  the KEPT checkpoints (early stopping)
  models/<run>/mtl_manifest.json                   kept checkpoints (step, epoch, validation),
                                                   the selected one, stop reason, validations
  evals/<run>/checkpoint-<step>/mtl_eval.json      per task: domain, metric, value, n, reward
  evals/<run>/checkpoint-<step>/mtl_eval.samples.jsonl   per sample: task, domain, reward
  evals/<run>/checkpoint-<step>/mtl_eval.json.generations/<task>.jsonl   engine guru: a
                                                   finished task's outputs (resume; the job's
                                                   own, ftlab.mtl.guru_eval.generations_dir)
  tables/mtl_scores.csv, tables/mtl_comparison.csv, tables/mtl_evolution.csv
  plots/mtl_evolution.png, reports/mtl_report.md
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

RESULTS_ROOT = "results"

# name -> pattern below results/<study>/
PATTERNS: dict[str, str] = {
    "cities": "data/cities.csv",
    "task_split": "data/{task}/{variant}/{split}.jsonl",
    "mixture": "data/mixtures/{mixture}/train.jsonl",
    # the eval sets (name, path, rows, sha256): an evaluation job's one input for all of them
    "eval_sets": "data/eval_sets.json",
    "model_dir": "models/{model}",
    "checkpoint": "models/{model}/checkpoint-{step}",
    "training_log": "models/{model}/training_log.csv",
    "train_state": "train_state/{model}",
    # one evaluation job writes two files whatever the number of eval sets: each file is
    # one more for Snakemake to track per job (a 100x paper dry run: 8,700 jobs)
    "eval_metrics": "evals/{model}/checkpoint-{step}/world_eval.json",
    "eval_samples": "evals/{model}/checkpoint-{step}/world_eval.samples.jsonl",
    "features": "representations/{model}/checkpoint-{step}/features.npz",
    "probe": "representations/{model}/checkpoint-{step}/probe.json",
    "metrics_table": "tables/metrics.csv",
    "normalized_table": "tables/normalized.csv",
    "probes_table": "tables/probes.csv",
    "summary_table": "tables/summary.csv",
    "plot": "plots/{plot}.png",
    # LLM studies (kind: llm)
    "llm_rows": "data/{dataset}/{split}.jsonl",
    "sft_records": "data/{dataset}/sft_{source}.jsonl",
    "llm_data_report": "data/{dataset}/data_report.json",
    "teacher_report": "data/{dataset}/{source}_report.json",
    "teacher_shards": "data/{dataset}/{source}_shards",
    "llm_preflight": "preflight.json",
    "lm_eval_metrics": "evals/{model}/checkpoint-{step}/lm_eval.json",
    "lm_eval_samples": "evals/{model}/checkpoint-{step}/lm_eval.samples.jsonl",
    "in_domain_metrics": "evals/{model}/checkpoint-{step}/in_domain.json",
    "in_domain_samples": "evals/{model}/checkpoint-{step}/in_domain.samples.jsonl",
    "lm_eval_vs_base": "evals/{model}/checkpoint-{step}/vs_base.json",
    "eval_cache": "eval_cache/{model}/checkpoint-{step}.sqlite",
    "forgetting_table": "tables/forgetting.csv",
    "forgetting_summary": "tables/forgetting_summary.csv",
    "in_domain_table": "tables/in_domain.csv",
    # Provenance beside each job's outputs and the results index (ftlab.provenance, registry)
    "train_provenance": "models/{model}/provenance.json",
    "eval_provenance": "evals/{model}/checkpoint-{step}/provenance.json",
    "index": "index.sqlite",
    # tool-integrated reasoning studies (kind: tir)
    "tir_rows": "data/{dataset}/rows.jsonl",
    "tir_generations": "evals/{model}/checkpoint-{step}/{eval_set}/generations.jsonl",
    "tir_generation_info": "evals/{model}/checkpoint-{step}/{eval_set}/generation_info.json",
    "tir_scores": "evals/{model}/checkpoint-{step}/{eval_set}/scores.json",
    "tir_scored": "evals/{model}/checkpoint-{step}/{eval_set}/scored.jsonl",
    "tir_eval_provenance": "evals/{model}/checkpoint-{step}/{eval_set}/provenance.json",
    "tir_table": "tables/tir_scores.csv",
    # multi-task studies (kind: mtl)
    "mtl_train_rows": "data/mtl/train.jsonl",
    "mtl_validation_rows": "data/mtl/validation.jsonl",
    "mtl_task_rows": "data/mtl/{task}.jsonl",
    "mtl_manifest": "models/{model}/mtl_manifest.json",
    "mtl_eval": "evals/{model}/checkpoint-{step}/mtl_eval.json",
    "mtl_eval_samples": "evals/{model}/checkpoint-{step}/mtl_eval.samples.jsonl",
    "mtl_scores_table": "tables/mtl_scores.csv",
    "mtl_comparison_table": "tables/mtl_comparison.csv",
    "mtl_evolution_table": "tables/mtl_evolution.csv",
    "mtl_report": "reports/mtl_report.md",
    "log": "logs/{job}.log",
    "benchmark": "benchmarks/{job}.tsv",
}

# Eval-set names: "<task>__<variant>" and the mixed set "multitask__no_atlantis".
EVAL_SET_SEP = "__"


def eval_set_name(task: str, variant: str) -> str:
    return f"{task}{EVAL_SET_SEP}{variant}"


def split_eval_set(eval_set: str) -> tuple[str, str]:
    task, variant = eval_set.split(EVAL_SET_SEP)
    return task, variant


def checkpoint_dirname(step: int) -> str:
    return f"checkpoint-{step}"


@dataclass(frozen=True)
class Layout:
    study: str
    root: str = RESULTS_ROOT

    @property
    def study_dir(self) -> str:
        return f"{self.root}/{self.study}"

    def pattern(self, name: str) -> str:
        return f"{self.study_dir}/{PATTERNS[name]}"

    def path(self, name: str, **wildcards) -> str:
        return self.pattern(name).format(**wildcards)

    def __getattr__(self, name: str) -> str:
        if name in PATTERNS:
            return self.pattern(name)
        raise AttributeError(name)


def atomic_target(path: str | Path) -> Path:
    """Temporary sibling of `path`; write there, then os.replace() it into place."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp")


def export_package_path() -> None:
    """Put this package's src/ on PYTHONPATH so every job's Python (a conda env, a SLURM
    node with the exported environment) imports the same ftlab as the Snakefile."""
    src = str(Path(__file__).resolve().parents[1])
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if src not in parts:
        os.environ["PYTHONPATH"] = os.pathsep.join([src, *parts])
