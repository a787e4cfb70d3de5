"""`ftlab status`: the study matrix (model x checkpoint x stage) as done / pending / queued /
running / failed / incomplete.

Three sources, each asked for what only it knows:
- Snakemake's own DAG (built in-process, like ``snakemake -n``): which jobs would run and why
  (missing output, changed params or code, upstream pending). A job Snakemake would not run is
  done. This is the only view that agrees with what ``snakemake`` will actually do.
- The outputs on disk: Snakemake's incomplete markers (a job started and not finished: running
  when a Snakemake process holds the lock, else interrupted) and, for training, the
  checkpoints already in ``train_state/<model>/``.
- SLURM, when ``sinfo`` answers: ``squeue`` (queued, running, elapsed) and ``sacct`` (how a
  job ended), tied to jobs through the SLURM plugin's per-job logs (``slurmjobs``). A needed
  job whose last SLURM job failed shows as failed, with its job id and both logs (the rule's
  own log and the SLURM log).

Snakemake internals used: ``Workflow._prepare_dag``/``_build_dag`` (what ``snakemake
--summary`` calls) and ``DAG.jobs``/``needrun``/``reason``; checked with snakemake 9.27.

The DAG is built once per config and code version: its job graph is saved (``plan``) and later
calls decide what would run from the disk alone, with Snakemake's rules (checked against the
DAG's own answer each time the DAG is built). An output marked incomplete by Snakemake (a job
that started and did not finish) shows as running (a Snakemake process holds the lock) or
incomplete, whatever the DAG says.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from ftlab.paths import PATTERNS
from ftlab.registry import plan, slurmjobs

REPO = Path(__file__).resolve().parents[3]
STATES = ("failed", "running", "queued", "incomplete", "pending", "done")


@dataclass
class JobStatus:
    rule: str
    unit: str  # the {model} wildcard, or "(study)" for study-level jobs (data, tables, plots)
    step: int | None
    state: str
    reason: str = ""
    outputs: list[str] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    slurm: slurmjobs.SlurmJob | None = None
    progress: str | None = None  # e.g. "2/6 checkpoints" for a training in progress


def snakemake_dag(config: str | None, workdir: Path, snakefile: Path, targets=()):
    """Snakemake's DAG of a study (no job runs, nothing is locked): (workflow, dag)."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.enums import Quietness
    from snakemake.settings.types import (
        ConfigSettings,
        DAGSettings,
        OutputSettings,
        ResourceSettings,
    )

    configfiles = [Path(config).resolve()] if config else []
    api = SnakemakeApi(OutputSettings(quiet={Quietness.ALL}))
    api.__enter__()
    try:
        wf_api = api.workflow(
            resource_settings=ResourceSettings(cores=1),
            config_settings=ConfigSettings(configfiles=configfiles),
            snakefile=snakefile,
            workdir=workdir,
        )
        dag_api = wf_api.dag(DAGSettings(targets=frozenset(targets)))
        workflow = dag_api.workflow_api._workflow
        with contextlib.redirect_stdout(io.StringIO()):
            workflow._prepare_dag(forceall=False, ignore_incomplete=True, lock_warn_only=True)
            workflow._build_dag()
        return api, workflow
    except BaseException:
        api.__exit__(None, None, None)
        raise


def collect(
    config: str | None = None,
    *,
    workdir: Path = REPO,
    snakefile: Path | None = None,
    use_slurm: bool | None = None,
    slurm_logdir: str = ".snakemake/slurm_logs",
    cache: bool = True,
):
    """Every job of the study's DAG with its state: (study config, [JobStatus], rule names in
    the Snakefile's order).

    With ``cache`` the job graph saved by an earlier call with the same config and code is
    reused and only the disk is read (``plan``); otherwise, or when nothing is saved yet,
    Snakemake builds the DAG (and the graph is saved for the next call)."""
    workdir = Path(workdir).resolve()
    snakefile = Path(snakefile or REPO / "Snakefile").resolve()
    configfiles = [Path(config).resolve()] if config else []
    key = plan.plan_key(configfiles, workdir, snakefile)
    disk = plan.Disk(workdir)
    p = plan.load(workdir, key) if cache else None
    if p is not None and usable(p, disk):
        need = plan.needrun(p, workdir, disk)
    else:
        p, need = _plan_from_snakemake(config, workdir, snakefile, key)
        disk = plan.Disk(workdir)  # the DAG build may have created folders
    cfg = p["config"]
    incomplete = plan.incomplete_outputs(p, workdir, disk)
    locked = any((workdir / ".snakemake" / "locks").glob("*"))
    if use_slurm is None:
        use_slurm = slurmjobs.available()
    slurm = slurmjobs.latest_by_key(workdir / slurm_logdir, use_slurm=use_slurm, workdir=workdir)
    out = []
    for i, job in enumerate(p["jobs"]):
        if job["rule"] == "all" or job["target"] and not job["output"]:
            continue
        wc = job["wildcards"]
        st = JobStatus(
            rule=job["rule"],
            unit=wc.get("model", "(study)"),
            step=int(wc["step"]) if "step" in wc else None,
            state="done",
            outputs=list(job["output"]),
            logs=list(job["log"]),
        )
        if i in incomplete:  # Snakemake would redo it (--rerun-incomplete) or stop
            st.state = "running" if locked else "incomplete"
            st.reason = "Incomplete output files"
        elif i in need:
            st.state = "pending"
            st.reason = "; ".join(need[i])
        if st.state != "done":
            # one SLURM job ran the group's jobs (several: the newest); a grouped rule may also
            # have run alone (a run with other `--groups`)
            group = job["group"]
            sj = slurmjobs.group_job(slurm, group) if group else None
            if sj is None:
                sj = slurm.get(slurmjobs.job_key(job["rule"], wc))
            if sj is not None:
                st.slurm = sj
                if sj.active:
                    st.state = "running" if sj.state.startswith("RUNNING") else "queued"
                elif sj.failed:
                    st.state = "failed"
            st.progress = _training_progress(workdir, cfg, st)
        out.append(st)
    out.sort(key=lambda s: (s.unit == "(study)", s.unit, s.step or 0, s.rule))
    return cfg, out, p["rules"]


def usable(p: dict, disk: plan.Disk) -> bool:
    """A saved plan serves when it reproduced Snakemake's answer when it was made and no
    checkpoint output (which decides other jobs' inputs) changed since."""
    return (
        p["emulated_ok"] and not p["unsupported"] and plan.watch_state(p, disk) == p["watch_state"]
    )


def _plan_from_snakemake(config, workdir: Path, snakefile: Path, key: str):
    """Build the DAG with Snakemake: its needrun answer and the plan (saved when the
    emulation gives the same answer on the same disk)."""
    api, workflow = snakemake_dag(config, workdir, snakefile)
    try:
        dag = workflow.dag
        p = plan.from_dag(workflow, key)
        jobs = list(dag.jobs)
        need = {
            i: plan.snakemake_reason_names(dag.reason(job))
            for i, job in enumerate(jobs)
            if dag.needrun(job)
        }
        p["config"] = _plain(dict(workflow.config))
        p["rules"] = [r.name for r in workflow.rules]
    finally:
        api.__exit__(None, None, None)
    disk = plan.Disk(workdir)
    p["watch_state"] = plan.watch_state(p, disk)
    if not p["unsupported"]:
        p["emulated_ok"] = plan.needrun(p, workdir, disk) == need
    try:
        plan.save(workdir, p)
    except OSError:
        pass  # a read-only workdir: the next call builds the DAG again
    return p, need


def _plain(value):
    """The config as plain dicts/lists (Snakemake's Config objects need not pickle)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _matrix(cfg: dict):
    try:
        from ftlab.kinds import matrix_of

        return matrix_of(cfg)
    except Exception:
        return None


def _training_progress(workdir: Path, cfg: dict, st: JobStatus) -> str | None:
    """Checkpoints already saved by an unfinished training (train_state/<model>/)."""
    model_dir = PATTERNS["model_dir"].format(model=st.unit)
    if not any(o.endswith(model_dir) for o in st.outputs):
        return None
    state_dir = workdir / "results" / cfg["study"] / PATTERNS["train_state"].format(model=st.unit)
    saved = [p for p in state_dir.glob("checkpoint-*") if p.is_dir()] if state_dir.is_dir() else []
    if not saved:
        return None
    matrix = _matrix(cfg)  # imports the study kinds: only when a training is under way
    try:
        unit = matrix.unit(st.unit)
    except (KeyError, AttributeError):
        return None
    return f"{len(saved)}/{len(unit.saved_steps)} checkpoints"


# -- rendering ------------------------------------------------------------------------------
def _cell(states: list[str]) -> str:
    c = Counter(states)
    if len(c) == 1:
        ((state, n),) = c.items()
        return state if n == 1 else f"{state} {n}"
    return ",".join(f"{c[s]} {s}" for s in STATES if c[s])


def render(
    cfg: dict,
    jobs: list[JobStatus],
    rule_order: list[str] = (),
    show_done: bool = True,
    max_rows: int = 200,
) -> str:
    lines = [f"study {cfg.get('study')} ({cfg.get('kind')}): {len(jobs)} jobs in the DAG"]
    by_rule = defaultdict(Counter)
    for j in jobs:
        by_rule[j.rule][j.state] += 1
    total = Counter(j.state for j in jobs)
    lines.append("  " + ", ".join(f"{total[s]} {s}" for s in STATES if total[s]))
    lines.append("")
    width = max(len(r) for r in by_rule) if by_rule else 4
    lines.append(f"{'rule':<{width}}  " + "  ".join(f"{s:>10}" for s in STATES))
    for rule, c in sorted(by_rule.items()):
        lines.append(f"{rule:<{width}}  " + "  ".join(f"{c[s]:>10}" for s in STATES))

    # The matrix: one row per unit, one column per stage (rules with a {model} wildcard).
    per_unit = defaultdict(lambda: defaultdict(list))
    for j in jobs:
        if j.unit != "(study)":
            per_unit[j.unit][j.rule].append(j)
    order = {r: i for i, r in enumerate(rule_order)}
    stages = sorted(
        {j.rule for j in jobs if j.unit != "(study)"}, key=lambda r: (order.get(r, 99), r)
    )
    rows = []
    for unit, cols in per_unit.items():
        states = [j.state for js in cols.values() for j in js]
        if not show_done and all(s == "done" for s in states):
            continue
        row = [unit]
        for stage in stages:
            js = cols.get(stage, [])
            cell = _cell([j.state for j in js]) if js else ""
            progress = next((j.progress for j in js if j.progress), None)
            if len(js) > 1 or any(j.step is not None for j in js):
                steps = ",".join(str(j.step) for j in js if j.step is not None)
                cell += f" @{steps}" if steps and len(js) <= 3 else ""
            row.append(cell + (f" ({progress})" if progress else ""))
        rows.append(row)
    if rows:
        header = ["model", *stages]
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        lines += ["", "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
        for row in rows[:max_rows]:
            lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
        if len(rows) > max_rows:
            lines.append(f"... {len(rows) - max_rows} more models (--all-rows to list them)")
    elif per_unit and not show_done:
        lines.append("\nevery model is done")

    failed = [j for j in jobs if j.state in ("failed", "incomplete")]
    if failed:
        lines.append("\nfailed / interrupted jobs:")
    for j in failed:
        where = j.unit + (f" step {j.step}" if j.step is not None else "")
        lines.append(f"  {j.rule} {where}: {j.state}")
        if j.slurm:
            s = j.slurm
            lines.append(
                f"    SLURM job {s.job_id} {s.state}, elapsed {s.elapsed or '?'}"
                + (f", exit {s.exit_code}" if s.exit_code else "")
            )
            if s.log:
                lines.append(f"    SLURM log: {s.log}")
        for log in j.logs:
            lines.append(
                f"    rule log:  {log}" + ("" if os.path.exists(log) else " (not written)")
            )
    active = [j for j in jobs if j.state in ("running", "queued") and j.slurm]
    if active:
        lines.append("\nSLURM jobs in the queue:")
        for j in active:
            where = j.unit + (f" step {j.step}" if j.step is not None else "")
            lines.append(
                f"  {j.slurm.job_id:>10} {j.slurm.state:<10} {j.slurm.elapsed or '':>10}  "
                f"{j.rule} {where}"
            )
    return "\n".join(lines)


def counts(jobs: list[JobStatus]) -> dict[str, int]:
    return dict(Counter(j.state for j in jobs))
