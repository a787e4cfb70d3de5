"""Queries over the indexes of one or more studies (``results/<study>/index.sqlite``).

``Registry(results_root, studies)`` refreshes each study's index from its files first, so an
answer never lags behind what is on disk. Runs are named ``<model>`` when one study is open and
``<study>/<model>`` otherwise; a group name (the model without ``_seed<S>``) stands for all its
seeds.
"""

from __future__ import annotations

import fnmatch
import json
import sqlite3
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from ftlab.registry import index
from ftlab.registry.records import lower_is_better, split_model


class RegistryError(ValueError):
    """A query that cannot be answered; the message says what is missing and what exists."""


@dataclass(frozen=True)
class RunRef:
    study: str
    model: str

    @property
    def group(self) -> str:
        return split_model(self.model)[0]

    @property
    def seed(self) -> int | None:
        return split_model(self.model)[1]


class Registry:
    def __init__(self, results_root="results", studies: list[str] | None = None, refresh=True):
        self.root = Path(results_root)
        if not self.root.is_dir():
            raise RegistryError(
                f"results folder {self.root} does not exist (run the workflow "
                "first, or pass --results)"
            )
        found = sorted(
            p.name
            for p in self.root.iterdir()
            if p.is_dir() and ((p / "evals").is_dir() or (p / "models").is_dir())
        )
        if studies:
            missing = [s for s in studies if s not in found]
            if missing:
                raise RegistryError(
                    f"no study {', '.join(map(repr, missing))} under {self.root}; "
                    f"found: {', '.join(found) or 'none'}"
                )
            found = list(studies)
        self.studies = found
        self._conns: dict[str, sqlite3.Connection] = {}
        self.notes: list[str] = []  # what the caller must tell the user (ftlab: on stderr)
        self.refreshed = {}
        for s in found if refresh else ():
            try:
                self.refreshed[s] = index.refresh(self.root / s)
            except (sqlite3.OperationalError, PermissionError) as err:
                # The index is a cache: when it cannot be written, answer from the files.
                self._conns[s], self.refreshed[s] = index.memory_index(self.root / s)
                self.notes.append(_unwritable(index.index_path(self.root / s), err))

    def conn(self, study: str) -> sqlite3.Connection:
        if study not in self._conns:
            self._conns[study] = index.connect(index.index_path(self.root / study))
        return self._conns[study]

    def close(self) -> None:
        for c in self._conns.values():
            c.close()
        self._conns.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def name(self, ref: RunRef) -> str:
        return ref.model if len(self.studies) == 1 else f"{ref.study}/{ref.model}"

    # -- runs -----------------------------------------------------------------------------
    def runs(self) -> list[dict]:
        """Every model that was trained (models/) or evaluated (evals/), with its checkpoints,
        evaluated steps, result count and training provenance."""
        out = []
        for study in self.studies:
            c = self.conn(study)
            trained = {r["model"]: r for r in c.execute("SELECT * FROM runs")}
            evaluated = defaultdict(set)
            n_results = defaultdict(int)
            for r in c.execute(
                "SELECT model, step, COUNT(*) AS k FROM results GROUP BY model, step"
            ):
                evaluated[r["model"]].add(r["step"])
                n_results[r["model"]] += r["k"]
            prov = {
                r["model"]: json.loads(r["json"])
                for r in c.execute("SELECT model, json FROM provenance WHERE step IS NULL")
            }
            for model in sorted(set(trained) | set(evaluated)):
                grp, seed = split_model(model)
                row = trained.get(model)
                out.append(
                    {
                        "ref": RunRef(study, model),
                        "study": study,
                        "model": model,
                        "group": grp,
                        "seed": seed,
                        "checkpoints": json.loads(row["checkpoints"]) if row else [],
                        "evaluated_steps": sorted(evaluated.get(model, ())),
                        "n_results": n_results.get(model, 0),
                        "train_provenance": prov.get(model),
                        "checkpoint_meta": json.loads(row["checkpoint_meta"])
                        if row and row["checkpoint_meta"]
                        else None,
                    }
                )
        return out

    def resolve(self, spec: str) -> list[RunRef]:
        """A run name (`model` or `study/model`) or a group name (all its seeds)."""
        study, _, name = spec.rpartition("/")
        runs = [r["ref"] for r in self.runs() if not study or r["study"] == study]
        exact = [r for r in runs if r.model == name]
        if exact:
            return exact[:1] if len(exact) == 1 else self._ambiguous(spec, exact)
        group = [r for r in runs if r.group == name]
        if group:
            studies = {r.study for r in group}
            if len(studies) > 1:
                self._ambiguous(spec, group)
            return sorted(group, key=lambda r: (r.seed is None, r.seed))
        known = sorted({self.name(r) for r in runs} | {r.group for r in runs})
        close = [k for k in known if name in k][:8] or known[:12]
        raise RegistryError(
            f"no run or group {spec!r}; known: {', '.join(close)}"
            + (" ..." if len(known) > len(close) else "")
        )

    def _ambiguous(self, spec, refs):
        raise RegistryError(
            f"{spec!r} is in several studies ({', '.join(sorted({r.study for r in refs}))}); "
            "name it as <study>/<model>"
        )

    # -- results --------------------------------------------------------------------------
    def results(
        self, metric: str | None = None, task: str | None = None, refs: list[RunRef] | None = None
    ) -> list[dict]:
        """Metric rows (study, model, group, seed, step, source, task, metric, value, stderr,
        n, path); `task` may be a glob (`angle__*`)."""
        out = []
        wanted = None if refs is None else {(r.study, r.model) for r in refs}
        for study in self.studies:
            sql, args = "SELECT * FROM results", []
            if metric:
                sql += " WHERE metric = ?"
                args.append(metric)
            for r in self.conn(study).execute(sql, args):
                if wanted is not None and (study, r["model"]) not in wanted:
                    continue
                if task and not fnmatch.fnmatchcase(r["task"], task):
                    continue
                out.append({"study": study, **dict(r), "group": r["grp"]})
        return out

    def metrics(self) -> list[str]:
        names = set()
        for study in self.studies:
            names |= {r[0] for r in self.conn(study).execute("SELECT DISTINCT metric FROM results")}
        return sorted(names)

    def tasks(self, metric: str) -> list[str]:
        names = set()
        for study in self.studies:
            names |= {
                r[0]
                for r in self.conn(study).execute(
                    "SELECT DISTINCT task FROM results WHERE metric = ?", (metric,)
                )
            }
        return sorted(names)

    def check_metric(self, metric: str, task: str | None = None) -> None:
        known = self.metrics()
        if metric not in known:
            raise RegistryError(
                f"no results for metric {metric!r}; metrics: {', '.join(known) or 'none'}"
            )
        if task and not any(fnmatch.fnmatchcase(t, task) for t in self.tasks(metric)):
            raise RegistryError(
                f"no task matching {task!r} has metric {metric!r}; tasks: "
                f"{', '.join(self.tasks(metric))}"
            )

    def provenance(self, ref: RunRef) -> list[dict]:
        rows = self.conn(ref.study).execute(
            "SELECT path, step, stage, json FROM provenance WHERE model = ? ORDER BY step",
            (ref.model,),
        )
        return [
            {"path": r["path"], "step": r["step"], "stage": r["stage"], **json.loads(r["json"])}
            for r in rows
        ]

    # -- training curves (models/<model>/training_log.csv) --------------------------------
    def training(self, ref: RunRef, metrics: list[str] | None = None) -> dict[str, list]:
        """{metric: [(step, value), ...] by step} of a run's training log; NaN where the log
        said nan. `metrics`: only these (each must exist, else RegistryError naming those that
        do)."""
        curves: dict[str, list] = defaultdict(list)
        for r in self.conn(ref.study).execute(
            # rowid: rows of one step in the log's order
            "SELECT step, metric, value FROM training WHERE model = ? ORDER BY metric, step, rowid",
            (ref.model,),
        ):
            value = float("nan") if r["value"] is None else r["value"]
            curves[r["metric"]].append((r["step"], value))
        if metrics:
            unknown = [m for m in metrics if m not in curves]
            if unknown:
                what = (
                    f"it logged: {', '.join(sorted(curves))}"
                    if curves
                    else "it has no training log (models/<model>/training_log.csv) indexed"
                )
                raise RegistryError(
                    f"run {self.name(ref)} has no training metric "
                    f"{', '.join(map(repr, unknown))}; {what}"
                )
            return {m: curves[m] for m in metrics}
        return dict(sorted(curves.items()))

    def result_path(self, ref: RunRef, step: int, source: str) -> Path:
        return self.root / ref.study / f"evals/{ref.model}/checkpoint-{step}/{source}.json"

    def file_errors(self) -> list[tuple[str, str, str]]:
        out = []
        for study in self.studies:
            out += [
                (study, r["path"], r["error"])
                for r in self.conn(study).execute(
                    "SELECT path, error FROM files WHERE error IS NOT NULL"
                )
            ]
        return out

    def unreadable(self, refs) -> list[dict]:
        """Files of these runs that could not be read (their results are missing from every
        answer): {ref, path (absolute), step, error}."""
        wanted = {(r.study, r.model) for r in refs}
        out = []
        for study in sorted({r.study for r in refs}):
            for r in self.conn(study).execute(
                "SELECT path, model, step, error FROM files WHERE error IS NOT NULL ORDER BY path"
            ):
                if (study, r["model"]) in wanted:
                    out.append(
                        {"ref": RunRef(study, r["model"]), "path": self.root / study / r["path"],
                         "step": r["step"], "error": r["error"]}
                    )  # fmt: skip
        return out

    def unreadable_warnings(self, refs, steps: dict | None = None) -> list[str]:
        """One line per unreadable file of these runs; where the file is of a newer checkpoint
        than the step a run's answer used (`steps`: {ref: step}), it says so: the answer is from
        an older checkpoint."""
        lines = []
        for e in self.unreadable(refs):
            # the reader's message starts with the file's path (as the refresh spelled it)
            head, sep, rest = e["error"].partition(": ")
            why = rest if sep and Path(head).name == e["path"].name else e["error"]
            line = f"{self.name(e['ref'])}: {e['path']} is unreadable and left out ({why})"
            used = (steps or {}).get(e["ref"])
            if used is not None and e["step"] is not None and e["step"] > used:
                line += f"; {self.name(e['ref'])} is shown at step {used}, not step {e['step']}"
            lines.append(line)
        return lines

    def counts(self, study: str) -> dict:
        c = self.conn(study)
        one = lambda sql: c.execute(sql).fetchone()[0]  # noqa: E731
        return {
            "runs": len({r["model"] for r in self.runs() if r["study"] == study}),
            "trained": one("SELECT COUNT(*) FROM runs"),
            "evaluated_checkpoints": one(
                "SELECT COUNT(*) FROM (SELECT DISTINCT model, step FROM results)"
            ),
            "result_files": one("SELECT COUNT(*) FROM files WHERE kind = 'result'"),
            "results": one("SELECT COUNT(*) FROM results"),
            "provenance_files": one("SELECT COUNT(*) FROM provenance"),
            "training_logs": one("SELECT COUNT(*) FROM files WHERE kind = 'training'"),
            "training_values": one("SELECT COUNT(*) FROM training"),
            "unreadable_files": one("SELECT COUNT(*) FROM files WHERE error IS NOT NULL"),
            "metrics": [r[0] for r in c.execute("SELECT DISTINCT metric FROM results ORDER BY 1")],
        }


def _unwritable(path: Path, err: Exception) -> str:
    what = str(err)
    if "locked" in what:
        fix = (
            "another process holds its write lock (a finishing job, or a stale lock on a "
            "filesystem where SQLite locking is unreliable: there, set FTLAB_INDEX_FROM_JOBS=0)"
        )
    else:
        fix = "make the folder and the index writable to keep it up to date"
    return (
        f"results index {path} could not be updated ({what}): this answer was read from the "
        f"result files directly (slower); {fix}"
    )


def pick_step(rows: list[dict], step: str) -> list[dict]:
    """Rows at each model's last evaluated step (`last`), at step N, or all (`all`)."""
    if step == "all":
        return rows
    if step == "last":
        last = defaultdict(int)
        for r in rows:
            key = (r["study"], r["model"])
            last[key] = max(last[key], r["step"])
        return [r for r in rows if r["step"] == last[(r["study"], r["model"])]]
    try:
        n = int(step)
    except ValueError:
        raise RegistryError(f"--step must be last, all or a number, not {step!r}") from None
    return [r for r in rows if r["step"] == n]


def better(metric: str):
    """Sort key direction: the best value first."""
    return (lambda v: v) if lower_is_better(metric) else (lambda v: -v)
