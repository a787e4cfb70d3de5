"""A study's job graph cached between `ftlab status` calls, and which of its jobs need to run,
decided from the disk without building Snakemake's DAG again.

Building the DAG is what makes `ftlab status` slow on a big study (870 models: ~2,700 jobs and
~75,000 input files matched against every rule's outputs; ~25 s of the ~30 s). The graph itself
(jobs, their files, dependencies, params, code) depends only on the config and the workflow's
code, so it is saved once (``.snakemake/ftlab_status/``) under a key made of:
the config files' contents, the workdir, Snakemake's version and the (path, mtime, size) of the
Snakefile, rules, workflow scripts, config folder and the ftlab package. Whether a job needs to
run changes with every file a job writes; ``needrun`` re-derives it from the disk with the
same rules as Snakemake's ``DAG.update_needrun`` (snakemake 9.27):

- a target job (``rule all``) needs to run when its inputs are missing;
- a job whose outputs exist needs to run when an input is newer than its oldest output (and
  its recorded checksum differs), when its script is newer than an output, or when its
  metadata record (``.snakemake/metadata``) has other params, code, input set or software
  stack than the job has now;
- a job that needs to run makes every job downstream of it run, and every job upstream whose
  outputs it needs and that are missing.

File existence comes from listing each output directory once (``os.scandir``), not from one
``stat`` per file; mtimes are read only where they decide something. Cases the emulation does
not cover (checkpoint targets, pipes, services, queue input, the database persistence
backend) keep the DAG path; and whenever the DAG is built, the emulation is checked against
Snakemake's own answer on the same disk state: a plan that disagrees is never used.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from base64 import urlsafe_b64encode
from collections import deque
from pathlib import Path

PLAN_VERSION = 1
RECORD_FORMAT_VERSION = 6  # snakemake.persistence.RECORD_FORMAT_VERSION (9.27)
CACHE_DIR = ".snakemake/ftlab_status"
KEEP_PLANS = 4

# Snakemake's Reason.__str__ order and wording (the text before each colon).
REASONS = (
    "Forced execution",
    "Rules with neither input nor output files are always executed.",
    "Rules with a run or shell declaration but no output are always executed.",
    "Missing output files",
    "Incomplete output files",
    "Updated input files",
    "Input files updated by another job",
    "Set of input files has changed since last execution",
    "Code has changed since last execution",
    "Params have changed since last execution",
    "Software environment definition has changed since last execution",
)


# -- the key ---------------------------------------------------------------------------------
def _code_files(snakefile: Path):
    base = snakefile.parent
    yield snakefile
    for folder, pattern in (
        ("rules", "*.smk"),
        ("workflow", "*"),
        ("config", "*.yaml"),
        ("envs", "*"),
    ):
        if (base / folder).is_dir():
            yield from sorted((base / folder).rglob(pattern))
    yield from sorted(Path(__file__).resolve().parents[1].rglob("*.py"))  # src/ftlab


def plan_key(configfiles: list[Path], workdir: Path, snakefile: Path, targets=()) -> str:
    from importlib.metadata import version

    h = hashlib.sha256()
    h.update(f"{PLAN_VERSION} {version('snakemake')} {workdir} {sorted(targets)}".encode())
    for cf in configfiles:
        h.update(str(cf).encode() + b"\0" + Path(cf).read_bytes() + b"\0")
    for path in _code_files(snakefile):
        try:
            st = path.stat()
        except OSError:
            continue
        if path.is_file() and "__pycache__" not in path.parts:
            h.update(f"{path}\0{st.st_mtime_ns}\0{st.st_size}\n".encode())
    return h.hexdigest()[:24]


def load(workdir: Path, key: str) -> dict | None:
    path = Path(workdir) / CACHE_DIR / f"plan-{key}.pickle"
    try:
        with open(path, "rb") as fh:
            plan = pickle.load(fh)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ValueError):
        return None
    return plan if plan.get("version") == PLAN_VERSION and plan.get("key") == key else None


def save(workdir: Path, plan: dict) -> None:
    folder = Path(workdir) / CACHE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".plan-{plan['key']}.{os.getpid()}.tmp"
    with open(tmp, "wb") as fh:
        pickle.dump(plan, fh, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, folder / f"plan-{plan['key']}.pickle")
    old = sorted(folder.glob("plan-*.pickle"), key=lambda p: p.stat().st_mtime, reverse=True)
    for stale in old[KEEP_PLANS:]:
        stale.unlink(missing_ok=True)


# -- the plan, taken from a built DAG --------------------------------------------------------
def declared_group(job) -> str | None:
    """The group of a job's rule (its `group:`, e.g. the data rules' "data") with the job's
    wildcards filled in. Snakemake's `job.group` is None outside a cluster executor or a dry
    run, as in the DAG that status builds; under SLURM the job ran in its group's job all the
    same, and that is the SLURM job to show."""
    from snakemake.io import apply_wildcards

    group = getattr(job.rule, "_group", None)  # the rule's own, not the executor-gated property
    return apply_wildcards(group, job.wildcards_dict) if isinstance(group, str) else None


def from_dag(workflow, key: str) -> dict:
    """The job graph of a built DAG, with what ``needrun`` compares against."""
    from snakemake.io import is_flagged
    from snakemake.persistence.file import FilePersistence
    from snakemake.settings.types import RerunTrigger

    dag = workflow.dag
    persistence = workflow.persistence
    jobs = list(dag.jobs)
    idx = {job: i for i, job in enumerate(jobs)}
    unsupported = []
    if not isinstance(persistence, FilePersistence):
        unsupported.append("persistence backend")
    if dag.forcerules or dag.forcefiles or dag.rules_allowed_for_needrun:
        unsupported.append("forced jobs")
    out, watch = [], []
    for job in jobs:
        files = list(job.input) + list(job.output)
        if any(is_flagged(f, "pipe") or is_flagged(f, "service") for f in files):
            unsupported.append(f"pipe/service in {job.rule.name}")
        if any(f.flags.get("checkpoint_target") for f in job.input) or job._queue_input:
            unsupported.append(f"checkpoint target or queue input in {job.rule.name}")
        if any(f.is_storage for f in files):
            unsupported.append(f"storage files in {job.rule.name}")
        if job.is_checkpoint:  # its outputs decide other jobs' inputs: part of the key
            watch += [str(f) for f in job.output]
        target = job in dag.targetjobs
        if target and job.has_products(include_logfiles=False):
            if job.rule in dag.targetrules:
                tfiles = {str(f) for f in job.products(include_logfiles=False)}
            else:
                tfiles = {str(f) for fs in dag.depending[job].values() for f in fs}
                tfiles |= {str(f) for f in job.products() if f in dag.targetfiles}
        else:
            tfiles = set()
        script = job.rule.script or job.rule.notebook
        script_path = None
        if script:
            src = job._path_to_source_file(script)
            if hasattr(src, "get_path_or_uri") and type(src).__name__ == "LocalSourceFile":
                script_path = src.get_path_or_uri(secret_free=True)
        out.append(
            {
                "rule": job.rule.name,
                "wildcards": dict(job.wildcards_dict),
                "output": [str(f) for f in job.output],
                "log": [str(f) for f in job.log],
                "input": [str(f) for f in job.input],
                "ancient": {str(f) for f in job.input if f.is_ancient},
                "benchmark": str(job.benchmark) if job.benchmark else None,
                "group": declared_group(job),
                "target": target,
                "has_products": job.has_products(include_logfiles=False),
                "norun": bool(job.rule.norun),
                "target_files": tfiles,
                "script": script_path,
                "params": persistence._params(job),
                "code": persistence._code(job.rule),
                "input_meta": [str(f) for f in persistence._input(job)],
                "software": persistence._software_stack_hash(job),
                "deps": [(idx[d], [str(f) for f in fs]) for d, fs in dag.dependencies[job].items()],
                "depending": [
                    (idx[d], [str(f) for f in fs]) for d, fs in dag.depending[job].items()
                ],
            }
        )
    triggers = {t.name for t in workflow.rerun_triggers} if workflow.rerun_triggers else set()
    return {
        "version": PLAN_VERSION,
        "key": key,
        "jobs": out,
        "levels": [[idx[j] for j in level] for level in dag.toposorted()],
        "watch": watch,
        "watch_state": None,
        "triggers": triggers or {t.name for t in RerunTrigger},
        "max_checksum": workflow.dag_settings.max_checksum_file_size,
        "unsupported": sorted(set(unsupported)),
        "emulated_ok": False,
    }


# -- the disk --------------------------------------------------------------------------------
class Disk:
    """Existence and mtimes of the workflow's files, one directory listing per folder."""

    def __init__(self, root: Path):
        self.root = str(root)
        self._dirs: dict[str, dict] = {}
        self._mtime: dict[tuple[str, bool], float | None] = {}
        self._exists: dict[str, bool] = {}

    def _entry(self, path: str):
        folder, name = os.path.split(path)
        listing = self._dirs.get(folder)
        if listing is None:
            try:
                with os.scandir(os.path.join(self.root, folder) if folder else self.root) as it:
                    listing = {e.name: e for e in it}
            except (FileNotFoundError, NotADirectoryError, PermissionError):
                listing = {}
            self._dirs[folder] = listing
        return listing.get(name)

    def exists(self, path: str) -> bool:
        known = self._exists.get(path)
        if known is None:
            entry = self._entry(os.path.normpath(path))
            known = entry is not None and (
                os.path.exists(entry.path) if entry.is_symlink() else True
            )
            self._exists[path] = known
        return known

    def mtime(self, path: str, follow: bool = False) -> float | None:
        """Snakemake's Mtime.local_or_storage(follow_symlinks=follow) of a local file; a
        directory's is its .snakemake_timestamp file's when it has one."""
        path = os.path.normpath(path)
        key = (path, follow)
        if key in self._mtime:
            return self._mtime[key]
        entry = self._entry(path)
        value = None
        if entry is not None:
            try:
                link = entry.is_symlink()
                st = os.stat(entry.path) if (link and follow) else entry.stat(follow_symlinks=False)
                value = st.st_mtime
                if (not link or follow) and entry.is_dir(follow_symlinks=follow):
                    try:
                        value = os.stat(os.path.join(entry.path, ".snakemake_timestamp")).st_mtime
                    except OSError:
                        pass
            except OSError:
                value = None
        self._mtime[key] = value
        return value

    def size(self, path: str) -> int:
        return os.path.getsize(os.path.join(self.root, path))


def _record_path(subject: str, key: str, max_len: int = 255) -> str:
    """snakemake.persistence.file.FilePersistence._record_path."""
    b64 = urlsafe_b64encode(key.encode()).decode()
    parts = [b64[i : i + max_len - 1] for i in range(0, len(b64), max_len - 1)]
    parts = ["@" + s for s in parts[:-1]] + [parts[-1]]
    return os.path.join(subject, *parts)


class Records:
    """The file persistence's metadata and incomplete markers, read as Snakemake reads them
    (each folder listed once; only records that exist are opened)."""

    def __init__(self, workdir: Path):
        self.meta = os.path.join(str(workdir), ".snakemake", "metadata")
        self.incomplete_dir = os.path.join(str(workdir), ".snakemake", "incomplete")
        try:
            self.max_len = os.pathconf(str(workdir), "PC_NAME_MAX") or 255
        except (OSError, ValueError):
            self.max_len = 255
        self._cache: dict[str, dict | None] = {}
        self._meta_files: set[str] | None = None
        self._incomplete: set[str] | None = None

    @staticmethod
    def _walk(folder: str) -> set[str]:
        return {os.path.join(path, f) for path, _, names in os.walk(folder) for f in names}

    def record(self, key: str) -> dict | None:
        if key not in self._cache:
            if self._meta_files is None:
                self._meta_files = self._walk(self.meta)
            rec = None
            path = _record_path(self.meta, key, self.max_len) if self._meta_files else None
            if path in self._meta_files:
                try:
                    with open(path) as fh:
                        rec = json.load(fh)
                except (OSError, json.JSONDecodeError):
                    rec = None  # Snakemake ignores a record being written
            self._cache[key] = rec or None
        return self._cache[key]

    def any_incomplete(self) -> bool:
        if self._incomplete is None:
            self._incomplete = self._walk(self.incomplete_dir)
        return bool(self._incomplete)

    def incomplete(self, key: str) -> bool:
        return self.any_incomplete() and (
            _record_path(self.incomplete_dir, key, self.max_len) in self._incomplete
        )


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return f"sha256:{h.hexdigest()}"


# -- needrun ---------------------------------------------------------------------------------
def watch_state(plan: dict, disk: Disk) -> list:
    return [(f, disk.exists(f), disk.mtime(f)) for f in plan["watch"]]


def needrun(plan: dict, workdir: Path, disk: Disk | None = None) -> dict[int, list[str]]:
    """{job index: reason names} of the jobs Snakemake would run now (DAG.update_needrun)."""
    disk = disk or Disk(workdir)
    records = Records(workdir)
    jobs = plan["jobs"]
    triggers = plan["triggers"]
    reasons: dict[int, dict[str, set]] = {}

    def reason(i):
        return reasons.setdefault(i, {})

    mintime: dict[int, float | None] = {}

    def own_mintime(i):
        job = jobs[i]
        times = [disk.mtime(f) for f in job["output"] if disk.exists(f)]
        t = min(times) if times else None
        if job["benchmark"] and disk.exists(job["benchmark"]):
            tb = disk.mtime(job["benchmark"])
            t = tb if t is None else min(t, tb)
        return t

    def output_mintime(i):
        # the job's oldest output, else that of the first job downstream that has one
        if i not in mintime:
            mintime[i] = None
            t = own_mintime(i)
            if t is None:
                for d, _ in jobs[i]["depending"]:
                    t = output_mintime(d)
                    if t is not None:
                        break
            mintime[i] = t
        return mintime[i]

    def same_checksum(f, job):
        full = os.path.join(disk.root, f)
        if os.path.isdir(full) or disk.size(f) > plan["max_checksum"]:
            return False
        recorded = set()
        for o in job["output"]:
            rec = records.record(o)
            sums = rec.get("input_checksums") if rec else None
            value = sums.get(f) if sums else None
            recorded.add(value if value is None or ":" in value else f"sha256:{value}")
        if len(recorded) != 1 or None in recorded:
            return False
        (other,) = recorded
        return other.startswith("sha256:") and _sha256(full) == other

    def prior(i) -> bool:
        job = jobs[i]
        r = reason(i)
        if job["target"]:
            if not job["has_products"]:
                if job["input"]:
                    if job["norun"]:
                        missing = {f for f in job["input"] if not disk.exists(f)}
                        if missing:
                            r["Input files updated by another job"] = missing
                    else:
                        r[REASONS[2]] = True
                else:
                    r[REASONS[1]] = True
            else:
                missing = {f for f in job["target_files"] if not disk.exists(f)}
                if missing:
                    r["Missing output files"] = missing
        if r:
            return True
        t = output_mintime(i)
        if t is not None and "MTIME" in triggers:
            updated = {
                f
                for f in job["input"]
                if f not in job["ancient"]
                and disk.exists(f)
                and (disk.mtime(f, follow=True) or 0) > t
                and not same_checksum(f, job)
            }
            if updated:
                r["Updated input files"] = updated
                return True
        code = False
        if "CODE" in triggers and job["script"] and os.path.exists(job["script"]):
            script_t = os.lstat(job["script"]).st_mtime
            code = any(
                disk.exists(o) and not (disk.mtime(o, follow=True) or 0) > script_t
                for o in job["output"]
            )
        recs = [records.record(o) for o in job["output"]]
        if all(rec is not None for rec in recs) and not any(
            rec.get("record_format_version", 0) < RECORD_FORMAT_VERSION for rec in recs
        ):
            if "PARAMS" in triggers:
                new = set(job["params"])
                for rec in recs:
                    if rec.get("params") is not None and set(rec["params"]) != new:
                        r["Params have changed since last execution"] = True
            if "INPUT" in triggers and any(
                rec.get("input") is not None and rec["input"] != job["input_meta"] for rec in recs
            ):
                r["Set of input files has changed since last execution"] = True
            if "CODE" in triggers and any(
                rec.get("code") is not None and rec["code"] != job["code"] for rec in recs
            ):
                code = True
            if "SOFTWARE_ENV" in triggers and any(
                rec.get("software_stack_hash") is not None
                and rec["software_stack_hash"] != job["software"]
                for rec in recs
            ):
                r["Software environment definition has changed since last execution"] = True
        if code:
            r["Code has changed since last execution"] = True
        return bool(r)

    masked: set[int] = set()
    queue: deque[int] = deque()
    for level in plan["levels"]:
        for i in level:
            if i in masked:
                continue
            if prior(i):
                queue.append(i)
                masked |= _downstream(jobs, i)
    visited = set(queue)
    result: set[int] = set()
    while queue:
        i = queue.popleft()
        result.add(i)
        for d, files in jobs[i]["deps"]:
            missing = {f for f in files if not disk.exists(f)}
            if missing:
                reason(d).setdefault("Missing output files", set()).update(missing)
                if d not in visited:
                    visited.add(d)
                    queue.append(d)
        for d, files in jobs[i]["depending"]:
            if d not in visited:
                anc = jobs[d]["ancient"]
                if all(f in anc and disk.exists(f) for f in files):
                    continue
                visited.add(d)
                queue.append(d)
            reason(d).setdefault("Input files updated by another job", set()).update(files)
    return {i: [name for name in REASONS if reasons.get(i, {}).get(name)] for i in result}


def _downstream(jobs, start: int) -> set[int]:
    seen, stack = {start}, [start]
    while stack:
        for d, _ in jobs[stack.pop()]["depending"]:
            if d not in seen:
                seen.add(d)
                stack.append(d)
    return seen


def snakemake_reason_names(reason) -> list[str]:
    """The same names from a Snakemake Reason object (the DAG path)."""
    flags = {
        REASONS[0]: reason.forced,
        REASONS[1]: reason.noio,
        REASONS[2]: reason.nooutput,
        REASONS[3]: reason._missing_output,
        REASONS[4]: reason._incomplete_output,
        REASONS[5]: reason._updated_input,
        REASONS[6]: reason._updated_input_run,
        REASONS[7]: reason.input_changed,
        REASONS[8]: reason.code_changed,
        REASONS[9]: reason.params_changed,
        REASONS[10]: reason.software_stack_changed,
    }
    if reason.forced:
        return [REASONS[0]]
    return [name for name, on in flags.items() if on]


def incomplete_outputs(plan: dict, workdir: Path, disk: Disk) -> dict[int, list[str]]:
    """{job index: outputs marked incomplete that exist} (a job started and not finished)."""
    records = Records(workdir)
    if not records.any_incomplete():
        return {}
    out = {}
    for i, job in enumerate(plan["jobs"]):
        marked = [f for f in job["output"] if records.incomplete(f) and disk.exists(f)]
        if marked:
            out[i] = marked
    return out
