"""The matrix of a tool-integrated reasoning study (kind: tir, seed 002 / SimpleTIR).

Units are GRPO runs x seeds (`<run>_seed<S>`; a run fixes tools on/off, mask_void_turns and
max_turns). Evaluation points are the base model (step 0), any val-only models (step 0) and
every evaluated checkpoint of every run; each point is generated once per (dataset, sampling)
and scored from its generations file. Checkpoint steps follow from max_steps/save_steps, so
the whole DAG is known before anything trains.
"""

from __future__ import annotations

from dataclasses import dataclass

from ftlab.kinds import StudyKind, lookup_unit
from ftlab.study import saved_steps, selected_steps

BASE = "base"
TINY = "tiny"
SEP = "__"  # <dataset>__<sampling> folder of one evaluation


@dataclass(frozen=True)
class TIRRun:
    name: str  # <run>_seed<S>
    run: str
    seed: int
    tools: bool
    mask_void_turns: bool
    max_turns: int
    dataset: str
    saved_steps: tuple[int, ...]
    eval_steps: tuple[int, ...]
    samplings: tuple[str, ...] | None = None  # its checkpoints' samplings (None: all)

    @property
    def final_step(self) -> int:
        return self.saved_steps[-1]


class TIRStudy:
    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.tir = cfg["tir"]
        self.seeds = tuple(cfg["seeds"])
        grpo = self.tir["grpo"]
        saved = saved_steps(grpo["max_steps"], grpo["save_steps"])
        evaluated = selected_steps(saved, self.tir["checkpoints"])
        self.runs: dict[str, TIRRun] = {}
        for seed in self.seeds:
            for run, spec in self.tir["runs"].items():
                name = f"{run}_seed{seed}"
                self.runs[name] = TIRRun(
                    name=name, run=run, seed=seed, tools=spec["tools"],
                    mask_void_turns=spec["mask_void_turns"], max_turns=spec["max_turns"],
                    dataset=spec["dataset"], saved_steps=saved, eval_steps=evaluated,
                    samplings=None if spec["samplings"] is None else tuple(spec["samplings"]),
                )  # fmt: skip

    # -- the StudyKind interface --------------------------------------------------------------
    @property
    def units(self) -> dict[str, TIRRun]:
        return self.runs

    def unit(self, name: str) -> TIRRun:
        return lookup_unit(self.runs, name, "run", self.cfg["study"])

    run = unit

    @property
    def tiny_base(self) -> bool:
        return self.tir["base_model"] == TINY

    @property
    def val_models(self) -> dict[str, str]:
        return dict(self.tir["eval"]["models"])

    def eval_points(self) -> list[tuple[str, int]]:
        points = [(BASE, 0)] if self.tir["eval"]["evaluate_base"] else []
        points += [(name, 0) for name in self.val_models]
        for run in self.runs.values():
            points += [(run.name, s) for s in run.eval_steps]
        return points

    def samplings_of(self, model: str | None = None) -> list[str]:
        """The samplings a model is evaluated with: a run's own (tir.runs.<run>.samplings, e.g.
        tools off for the single-turn baseline, as SimpleTIR validates it), else all."""
        names = list(self.tir["eval"]["samplings"])
        run = self.runs.get(model) if model else None
        if run is None or run.samplings is None:
            return names
        return [s for s in names if s in run.samplings]

    def eval_sets(self, model: str | None = None) -> list[str]:
        ev = self.tir["eval"]
        return [f"{d}{SEP}{s}" for d in ev["datasets"] for s in self.samplings_of(model)]

    def eval_jobs(self) -> list[tuple[str, int, str]]:
        """(model, step, eval_set) of every generation job."""
        return [(m, s, e) for m, s in self.eval_points() for e in self.eval_sets(m)]

    def eval_outputs(self, layout, name: str) -> list[str]:
        return [layout.path(name, model=m, step=s, eval_set=e) for m, s, e in self.eval_jobs()]

    def datasets_used(self) -> list[str]:
        used = set(self.tir["eval"]["datasets"]) | {r.dataset for r in self.runs.values()}
        return sorted(used)

    def targets(self, layout) -> list[str]:
        targets = [layout.path("model_dir", model=r) for r in self.runs]
        targets += self.eval_outputs(layout, "tir_scores")
        return targets + [layout.tir_table]

    def summary(self) -> str:
        points = self.eval_points()
        return (
            f"TIR study {self.cfg['study']!r}, {len(self.runs)} GRPO runs, {len(points)} "
            f"evaluation points, {len(self.eval_jobs())} generation jobs"
        )

    def plan(self) -> str:
        tir = self.tir
        lines = [
            f"TIR study {self.cfg['study']}: base {tir['base_model']}, seeds {list(self.seeds)}"
        ]
        lines.append(
            f"{'run':<32} {'tools':<5} {'mask':<5} {'turns':>5}  evaluated checkpoints, samplings"
        )
        for r in self.runs.values():
            lines.append(
                f"{r.name:<32} {str(r.tools):<5} {str(r.mask_void_turns):<5} {r.max_turns:>5}  "
                f"{list(r.eval_steps)}, {self.samplings_of(r.name)}"
            )
        for name, spec in tir["eval"]["samplings"].items():
            lines.append(
                f"sampling {name}: n={spec['n']} temperature={spec['temperature']} "
                f"top_p={spec['top_p']} max_new_tokens={spec['max_new_tokens']} "
                f"max_turns={spec['max_turns']} tools={spec['tools']}"
            )
        lines.append(
            f"\n{len(self.runs)} training jobs, {len(self.eval_jobs())} generation jobs (each "
            f"scored separately), datasets {tir['eval']['datasets']}"
        )
        return "\n".join(lines)


def prompt_template(tir: dict, tools: bool) -> str:
    """The prompt template of a sampling or run: tir.prompt_template with tools on,
    tir.plain_prompt_template with tools off (SimpleTIR's rl_dataset.py adds its tool prompt
    only when tool_use is on)."""
    return tir["prompt_template"] if tools else tir["plain_prompt_template"]


def prompt_template_problems(template: str, key: str = "tir.prompt_template") -> list[str]:
    """Why a prompt template cannot make a prompt (str.format with question=...), if it can't.

    The generate and train jobs fill the template with str.format(question=...), so a literal
    brace must be doubled: a \\boxed{} written as is reads as a positional field."""
    try:
        filled = template.format(question="\x00")
    except (IndexError, KeyError, ValueError, AttributeError) as exc:
        return [
            f"'{key}' cannot be filled by str.format(question=...): "
            f"{type(exc).__name__}: {exc}; write literal braces doubled ({{{{ and }}}}, e.g. "
            f"\\boxed{{{{}}}}) and no field other than {{question}}"
        ]
    if "\x00" not in filled:
        return [f"'{key}' has no {{question}} field: the problem would not be shown"]
    return []


def check_config(cfg: dict) -> list[str]:
    """Cross-key rules of a TIR config that a JSON schema cannot express."""
    tir = cfg["tir"]
    problems = prompt_template_problems(tir["prompt_template"])
    problems += prompt_template_problems(tir["plain_prompt_template"], "tir.plain_prompt_template")
    datasets = tir["datasets"]
    problems += _source_problems(datasets)
    for name in tir["eval"]["datasets"]:
        if name not in datasets:
            problems.append(f"'tir.eval.datasets' names {name!r}, which is not in 'tir.datasets'")
    for run, spec in tir["runs"].items():
        if spec["dataset"] not in datasets:
            problems.append(
                f"'tir.runs.{run}.dataset' is {spec['dataset']!r}, which is not in 'tir.datasets'"
            )
        if not spec["tools"] and spec["max_turns"] != 1:
            problems.append(f"'tir.runs.{run}.max_turns' must be 1 when tools are off")
        for name in spec["samplings"] or []:
            if name not in tir["eval"]["samplings"]:
                problems.append(
                    f"'tir.runs.{run}.samplings' names {name!r}, which is not in "
                    "'tir.eval.samplings'"
                )
        if spec["samplings"] is not None and not spec["samplings"]:
            problems.append(f"'tir.runs.{run}.samplings' is empty (null = every sampling)")
    for name, spec in tir["eval"]["samplings"].items():
        if not spec["tools"] and spec["max_turns"] != 1:
            problems.append(f"'tir.eval.samplings.{name}.max_turns' must be 1 when tools are off")
        if spec["temperature"] == 0 and spec["n"] > 1:
            problems.append(
                f"'tir.eval.samplings.{name}': n={spec['n']} greedy samples are identical; "
                "set temperature > 0 or n: 1"
            )
    for name in tir["eval"]["models"]:
        if name == BASE or "_seed" in name:
            problems.append(f"'tir.eval.models.{name}': the name is reserved (base, *_seed<S>)")
    g = tir["grpo"]
    if tir["runs"] and (g["batch_size"] * g["grad_accum"]) % g["num_generations"]:
        problems.append(
            f"'tir.grpo.batch_size' x 'tir.grpo.grad_accum' ({g['batch_size']}x"
            f"{g['grad_accum']}) must be a multiple of 'tir.grpo.num_generations' "
            f"({g['num_generations']})"
        )
    problems += _eval_shape_problems(tir["eval"], (cfg.get("resources") or {}).get("evaluate"))
    if not tir["eval"]["datasets"]:
        problems.append("'tir.eval.datasets' is empty")
    if not tir["eval"]["samplings"]:
        problems.append("'tir.eval.samplings' is empty")
    return problems


def _source_problems(datasets: dict) -> list[str]:
    """Source entries that ftlab.llm.sources cannot parse, and builtin: sources other than a
    lone builtin:arith (nothing is read here: the data rule resolves and reads them)."""
    from ftlab.llm.sources import BUILTIN, parse_sources
    from ftlab.tir.steps import BUILTIN_ARITH

    problems = []
    for name, spec in datasets.items():
        if spec["source"] == BUILTIN_ARITH:
            continue
        key = f"tir.datasets.{name}.source"
        try:
            sources = parse_sources(spec["source"], spec["split"], key)
        except ValueError as e:
            problems.append(str(e))
            continue
        problems += [
            f"'{key}': {s.path} is not a TIR source ({BUILTIN_ARITH} is, on its own)"
            for s in sources
            if s.path.startswith(BUILTIN)
        ]
    return problems


def _eval_shape_problems(ev: dict, res: dict | None) -> list[str]:
    """Generation job shapes that cannot run (resources.evaluate with tir.eval.parallel)."""
    res = res or {}
    nodes, gpus, procs = res.get("nodes", 1), res.get("gpus", 0), res.get("processes", 1)
    if ev["parallel"] == "data":
        if ev["backend"] == "vllm":
            return [
                "'tir.eval.parallel' is data, which generates with HF in every process; "
                "'tir.eval.backend: vllm' splits one model over the GPUs in one process instead "
                "(parallel: model, or backend: auto / hf)"
            ]
        return []
    problems = []
    if nodes > 1:
        problems.append(
            f"'resources.evaluate.nodes' is {nodes}, but with 'tir.eval.parallel: model' one "
            "process holds the model on the GPUs of one node: set nodes: 1 (or parallel: data)"
        )
    if gpus == 0 and procs > 1:
        problems.append(
            f"'resources.evaluate.processes' is {procs}, but with 'tir.eval.parallel: model' a "
            "generation job runs one process: set tir.eval.parallel: data (or processes: 1)"
        )
    return problems


def preflight(cfg: dict) -> list[str]:
    """What would fail after GPUs were spent (`ftlab validate`): the base model's and each
    val-only model's config loads, every dataset source resolves."""
    from ftlab.llm.preflight import check_models, check_source_values, go_offline_if_unreachable
    from ftlab.tir.steps import BUILTIN_ARITH

    tir = cfg["tir"]
    go_offline_if_unreachable()
    models = {"tir.base_model": tir["base_model"]}
    models |= {f"tir.eval.models.{name}": path for name, path in tir["eval"]["models"].items()}
    values = [(f"tir.datasets.{name}.source", spec["source"], spec["split"])
              for name, spec in tir["datasets"].items()
              if spec["source"] != BUILTIN_ARITH]  # fmt: skip
    return check_models(models) + check_source_values(values, tir.get("data_root"))


KIND = StudyKind(
    name="tir",
    description="tool-integrated reasoning: code sandbox, pass@k, void-turn masking (seed 002)",
    sections=("tir",),
    rule_files=("tir.smk", "tir_data.smk", "tir_train.smk", "tir_evaluate.smk"),
    model_pattern=r"[A-Za-z0-9][A-Za-z0-9-]*(_seed\d+)?",
    matrix=TIRStudy,
    check=check_config,
    preflight=preflight,
)
