"""The matrix of an LLM post-training study (kind: llm): runs = methods x datasets x seeds.

Checkpoint steps are fixed by the config (max_steps, save_steps) so the whole DAG — every
checkpoint's evaluation included — is known before anything trains, and a dry run can show it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ftlab.kinds import StudyKind, lookup_unit
from ftlab.study import saved_steps, selected_steps

METHODS = ("gt_sft", "teacher_sft", "cf_sft", "grpo")
# SFT methods -> the records they train on (data/<dataset>/sft_<source>.jsonl)
RECORDS = {"gt_sft": "gt", "teacher_sft": "teacher", "cf_sft": "cf_teacher"}
# record source -> its declared count under llm.datasets.<d>.rows (GT records = train rows)
ROWS_KEY = {"gt": "train", "teacher": "teacher", "cf_teacher": "cf_teacher"}
# teacher record source -> its config section (SF-SFT: same-family, CF-SFT: cross-family)
TEACHERS = {"teacher": "teacher", "cf_teacher": "cf_teacher"}
BASE = "base"  # the base model's name in the file contract (evaluated once, at "step" 0)
TINY = "tiny"  # base_model / teacher value that builds a tiny random model (CPU demos, tests)


@dataclass(frozen=True)
class RunSpec:
    name: str  # <method>-<dataset>_seed<S>, e.g. gt_sft-gsm8k_seed1
    method: str
    dataset: str
    fmt: str
    seed: int
    total_steps: int
    save_steps: int
    saved_steps: tuple[int, ...]
    eval_steps: tuple[int, ...]
    length: str  # where total_steps comes from, for `ftlab plan`
    epochs: float | None = None
    records: int | None = None  # declared training records (epochs-length SFT only)

    @property
    def final_step(self) -> int:
        return self.saved_steps[-1]

    @property
    def trainer(self) -> str:
        return "grpo" if self.method == "grpo" else "sft"

    @property
    def records_source(self) -> str | None:
        return RECORDS.get(self.method)


def effective_batch(section: dict, world_size: int) -> int:
    """Examples per optimizer step: per-device batch x accumulation x data-parallel GPUs."""
    return section["batch_size"] * section["grad_accum"] * max(1, world_size)


def epoch_steps(n_records: int, epochs: float, batch: int) -> int:
    """Optimizer steps of `epochs` passes over `n_records` at effective batch `batch`.

    An epoch is its full effective batches (n // batch); the partial last one is not a step.
    This is seed 003's count (transformers 4.x with per-device batch <= 4 at effective batch
    16): 3 epochs of GSM8K's 7,473 rows = 1,401 steps, MATH's 7,397 = 1,386, TriviaQA's 7,500
    = 1,404. (transformers 5 rounds each epoch up instead: 1,404 / 1,389 / 1,407.) The SFT
    trainer is made to agree (train._full_batch_sft_trainer: each epoch samples the full
    batches' n // batch * batch records afresh), so the recorded epoch is the planned one.
    """
    per_epoch = n_records // batch
    if per_epoch < 1:
        raise ValueError(f"{n_records} records make no full batch of {batch}")
    return max(1, math.ceil(epochs * per_epoch))


class LLMStudy:
    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.llm = cfg["llm"]
        self.seeds = tuple(cfg["seeds"])
        self.datasets: dict[str, dict] = dict(self.llm["datasets"])
        self.methods = tuple(m for m in METHODS if m in self.llm["methods"])
        self.world_size = max(1, cfg.get("resources", {}).get("train", {}).get("gpus", 1))
        self.runs: dict[str, RunSpec] = {}
        for seed in self.seeds:
            for dataset, spec in self.datasets.items():
                for method in self.methods:
                    run = self._run(method, dataset, spec, seed)
                    self.runs[run.name] = run

    def _run(self, method: str, dataset: str, spec: dict, seed: int) -> RunSpec:
        trainer = "grpo" if method == "grpo" else "sft"
        hp = {**self.llm[trainer], **self.llm["runs"].get(f"{method}-{dataset}", {})}
        epochs, records = hp.get("epochs"), None
        if (
            trainer == "sft"
            and epochs is not None
            and "max_steps" not in self.llm["runs"].get(f"{method}-{dataset}", {})
        ):
            records = spec["rows"][ROWS_KEY[RECORDS[method]]]
            batch = effective_batch(hp, self.world_size)
            total = epoch_steps(records, epochs, batch)
            length = f"{epochs:g} epochs x ({records} records // {batch})"
        else:
            epochs, total = None, hp["max_steps"]
            length = "max_steps" + (" (run)" if f"{method}-{dataset}" in self.llm["runs"] else "")
        saved = saved_steps(total, hp["save_steps"])
        return RunSpec(
            name=f"{method}-{dataset}_seed{seed}",
            method=method,
            dataset=dataset,
            fmt=spec["format"],
            seed=seed,
            total_steps=total,
            save_steps=hp["save_steps"],
            saved_steps=saved,
            eval_steps=selected_steps(saved, self.llm["checkpoints"]),
            length=length,
            epochs=epochs,
            records=records,
        )

    def recipe(self, name: str) -> dict:
        """The validated recipe section of a run with its own steps and save interval."""
        run = self.run(name)
        section = {
            **self.llm[run.trainer],
            **self.llm["runs"].get(f"{run.method}-{run.dataset}", {}),
        }
        out = {**section, "max_steps": run.total_steps, "save_steps": run.save_steps}
        if run.trainer == "sft":
            out["epochs"] = run.epochs  # None when the steps were given
        return out

    def run(self, name: str) -> RunSpec:
        return lookup_unit(self.runs, name, "run", self.cfg["study"])

    @property
    def tiny_base(self) -> bool:
        return self.llm["base_model"] == TINY

    def eval_points(self) -> list[tuple[str, int]]:
        """(model, step) of every evaluation: the base model once, then each run's checkpoints."""
        points = [(BASE, 0)]
        for run in self.runs.values():
            points += [(run.name, step) for step in run.eval_steps]
        return points

    def teacher_sources(self) -> list[str]:
        """Teacher record sources the methods need: "teacher" (SF-SFT), "cf_teacher" (CF-SFT)."""
        return [RECORDS[m] for m in self.methods if RECORDS.get(m) in TEACHERS]

    def needs_teacher(self) -> bool:
        return bool(self.teacher_sources())

    # -- the StudyKind interface (ftlab.kinds) ----------------------------------------------
    @property
    def units(self) -> dict[str, RunSpec]:
        return self.runs

    unit = run

    def teacher_is_tiny(self, source: str = "teacher") -> bool:
        return self.llm[TEACHERS[source]]["model"] == TINY

    def eval_outputs(self, layout, kind: str) -> list[str]:
        return [layout.path(kind, model=m, step=s) for m, s in self.eval_points()]

    def tables(self, layout) -> dict[str, str]:
        return {
            "forgetting": layout.forgetting_table,
            "summary": layout.forgetting_summary,
            "in_domain": layout.in_domain_table,
        }

    def plot_names(self) -> list[str]:
        plots = ["forgetting_summary"]
        for dataset in self.datasets:
            plots += [f"forgetting_{dataset}", f"in_domain_{dataset}"]
        return plots

    def targets(self, layout) -> list[str]:
        targets = [layout.path("model_dir", model=run) for run in self.runs]
        targets += self.eval_outputs(layout, "lm_eval_metrics")
        targets += self.eval_outputs(layout, "in_domain_metrics")
        targets += [layout.path("llm_data_report", dataset=d) for d in self.datasets]
        for source in self.teacher_sources():
            targets += [
                layout.path("teacher_report", dataset=d, source=source) for d in self.datasets
            ]
        targets += list(self.tables(layout).values())
        return targets + [layout.path("plot", plot=p) for p in self.plot_names()]

    def summary(self) -> str:
        return f"LLM study {self.cfg['study']!r}, {len(self.runs)} training runs"

    def plan(self) -> str:
        llm = self.llm
        seeds = list(self.seeds)
        lines = [f"LLM study {self.cfg['study']}: base {llm['base_model']}, seeds {seeds}"]
        lines.append(f"{'run':<28} {'trainer':<7} {'steps':>6} {'every':>5} {'ckpts':>5}  length")
        for run in self.runs.values():
            lines.append(
                f"{run.name:<28} {run.trainer:<7} {run.total_steps:>6} {run.save_steps:>5} "
                f"{len(run.saved_steps):>5}  {run.length}"
            )
        lines.append(f"\nevaluated checkpoints (checkpoints: {llm['checkpoints']}):")
        for run in self.runs.values():
            lines.append(f"  {run.name:<28} {list(run.eval_steps)}")
        points = self.eval_points()
        lines.append(
            f"\n{len(self.runs)} training jobs, {len(points)} evaluation jobs (base model "
            f"included), each scoring {len(llm['benchmarks'])} benchmarks and "
            f"{len(self.datasets)} in-domain sets"
        )
        if self.needs_teacher():
            lines.append(
                f"teacher jobs: {len(self.teacher_sources()) * len(self.datasets)} ("
                + ", ".join(
                    f"{src}: {llm[TEACHERS[src]]['model']}" for src in self.teacher_sources()
                )
                + ")"
            )
        return "\n".join(lines)


def check_config(cfg: dict) -> list[str]:
    """Cross-key rules of an LLM study config that a JSON schema cannot express."""
    from ftlab.llm.sources import parse_sources

    llm = cfg["llm"]
    problems = []
    if not llm["datasets"]:
        problems.append("'llm.datasets' is empty: name at least one training dataset")
    for name, spec in llm["datasets"].items():
        for split in ("train", "test"):
            if split not in spec:
                problems.append(f"'llm.datasets.{name}.{split}' is missing (a path or hub id)")
                continue
            try:
                parse_sources(spec[split], spec[f"{split}_split"], f"llm.datasets.{name}.{split}")
            except ValueError as e:
                problems.append(str(e).removeprefix("config key "))
    if not llm["methods"]:
        problems.append("'llm.methods' is empty")
    if not llm["benchmarks"]:
        problems.append("'llm.benchmarks' is empty")
    for source in {RECORDS[m] for m in llm["methods"] if m in RECORDS} & set(TEACHERS):
        if not llm[TEACHERS[source]]["model"]:
            method = next(m for m, s in RECORDS.items() if s == source)
            problems.append(f"'llm.{TEACHERS[source]}.model' is not set but {method} needs it")
    for section in TEACHERS.values():
        if llm[section]["parallel"] == "data" and llm[section]["backend"] == "vllm":
            problems.append(
                f"'llm.{section}.parallel' is data, which generates with HF in every process; "
                f"'llm.{section}.backend: vllm' splits one model over the GPUs instead "
                "(parallel: model)"
            )
    lm_eval = llm["lm_eval"]
    if lm_eval["generation_cache"] != "dynamic" and lm_eval["backend"] != "hf":
        problems.append(
            f"'llm.lm_eval.generation_cache: {lm_eval['generation_cache']}' needs "
            f"'llm.lm_eval.backend: hf', not {lm_eval['backend']!r} (vllm manages its own KV cache)"
        )
    for key, over in llm["runs"].items():
        method, _, dataset = key.partition("-")
        if method not in llm["methods"] or dataset not in llm["datasets"]:
            problems.append(
                f"'llm.runs.{key}': not a <method>-<dataset> of this study (methods "
                f"{llm['methods']}, datasets {list(llm['datasets'])})"
            )
        elif method == "grpo" and "epochs" in over:
            problems.append(f"'llm.runs.{key}.epochs': GRPO runs are given in max_steps")
        else:  # a length key of the other trainer would reach no trainer
            trainer = "grpo" if method == "grpo" else "sft"
            for k in sorted(set(over) - {"max_steps", "save_steps", "epochs"}):
                if k not in llm[trainer]:
                    problems.append(
                        f"'llm.runs.{key}.{k}': not a setting of {trainer} runs (llm.{trainer})"
                    )
    gpus = max(1, cfg.get("resources", {}).get("train", {}).get("gpus", 1))
    if "grpo" in llm["methods"]:
        # TRL's GRPOConfig: the generation batch (batch_size x processes x grad_accum) must
        # hold whole groups of num_generations; ftlab's recipe asks it of every process's
        # batch_size x grad_accum (which implies TRL's rule). llm.runs cannot override these.
        g = llm["grpo"]
        if (g["batch_size"] * g["grad_accum"]) % g["num_generations"]:
            problems.append(
                f"'llm.grpo.batch_size' x 'llm.grpo.grad_accum' ({g['batch_size']} x "
                f"{g['grad_accum']} = {g['batch_size'] * g['grad_accum']} completions per "
                f"process and step) must be a multiple of 'llm.grpo.num_generations' "
                f"({g['num_generations']}): each prompt's group of completions must fit whole"
            )
    for method in (m for m in llm["methods"] if m in RECORDS):
        for name, spec in llm["datasets"].items():
            hp = {**llm["sft"], **llm["runs"].get(f"{method}-{name}", {})}
            if hp.get("epochs") is None or "max_steps" in llm["runs"].get(f"{method}-{name}", {}):
                continue
            key = f"llm.datasets.{name}.rows.{ROWS_KEY[RECORDS[method]]}"
            n = (spec.get("rows") or {}).get(ROWS_KEY[RECORDS[method]])
            if n is None:
                problems.append(
                    f"'{key}' is not set: {method} on {name} is {hp['epochs']:g} epochs "
                    f"(llm.sft.epochs), which needs the number of records (or give "
                    f"'llm.runs.{method}-{name}.max_steps')"
                )
            elif n // effective_batch(hp, gpus) < 1:
                problems.append(f"'{key}': {n} records make no full batch of "
                                f"{effective_batch(hp, gpus)}")  # fmt: skip
    return problems + _job_shape_problems(cfg)


def eval_job_spec(llm: dict) -> tuple[bool, str, str]:
    """(one_model, the setting that asks for it, how) of the evaluation jobs (job_plan's
    arguments): lm_eval.parallel model and the vllm backend run one process, the model over
    the job's GPUs."""
    ev = llm["lm_eval"]
    one_model = ev["parallel"] == "model" or ev["backend"] == "vllm"
    how = "vllm_tp" if ev["backend"] == "vllm" else "device_map"
    return one_model, "llm.lm_eval.parallel: model (or backend: vllm)", how


def teacher_job_spec(llm: dict, section: str) -> tuple[bool, str, str]:
    """The same for the teacher jobs of llm.<section> (teacher, cf_teacher): parallel model
    (vLLM tensor parallel, else HF device_map) or data (one process per GPU)."""
    settings = llm[section]
    # backend auto picks vLLM at run time when it is installed and a GPU is present
    how = {"vllm": "vllm_tp", "hf": "device_map"}.get(settings["backend"], "vllm_tp-or-device_map")
    key = f"llm.{section}.parallel: {settings['parallel']}"
    return settings["parallel"] == "model", key, how


def _job_shape_problems(cfg: dict) -> list[str]:
    """The evaluation and teacher jobs' shapes as rules/llm.smk builds them (one model over a
    job's GPUs cannot span nodes, ...), so `ftlab validate` and `ftlab submit` refuse what
    Snakemake would."""
    from ftlab.launch import LaunchError
    from ftlab.llm.steps import job_plan

    llm, res, threads = cfg["llm"], cfg.get("resources") or {}, cfg.get("threads", 1)
    shapes = [("evaluate", eval_job_spec(llm))]
    methods = [m for m in llm["methods"] if RECORDS.get(m) in TEACHERS]
    for section in dict.fromkeys(TEACHERS[RECORDS[m]] for m in methods):
        shapes.append(("teacher", teacher_job_spec(llm, section)))
    problems = []
    for family, (one_model, key, how) in shapes:
        if family not in res:
            continue
        try:
            job_plan(family, res[family], threads, one_model=one_model, key=key, how=how)
        except LaunchError as err:
            problems.append(str(err).removeprefix("config key "))
    return problems


def _preflight(cfg: dict) -> list[str]:
    from ftlab.llm.preflight import preflight_config  # lm-eval etc. only when asked

    return preflight_config(cfg)


KIND = StudyKind(
    name="llm",
    description="LLM post-training and forgetting (seed 003; seed 001's GRPO)",
    sections=("llm",),
    rule_files=("llm.smk", "llm_data.smk", "llm_train.smk", "llm_evaluate.smk", "llm_report.smk"),
    model_pattern=rf"{BASE}|({'|'.join(METHODS)})-[A-Za-z0-9]+_seed\d+",
    matrix=LLMStudy,
    check=check_config,
    preflight=_preflight,
    report_rules=("tables_llm", "plot_llm"),  # compare_llm bootstraps: a cluster job
)
