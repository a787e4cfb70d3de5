"""Study kinds: the one place that knows which kinds exist.

A study config names its kind (`kind: worldmodel`, `kind: llm`, ...). Everything that differs
between kinds hangs off one `StudyKind` entry: the config sections it owns, how the validated
config becomes a matrix of units (trained models/runs with their checkpoints), the rules files
the Snakefile includes, the `{model}` wildcard, the `rule all` targets and the text that
`ftlab validate|plan` prints. The Snakefile, rules/common.smk and the CLI ask this registry and
never branch on the kind themselves.

Adding a kind (see README, "Add a study kind"): a module that defines `KIND = StudyKind(...)`,
its rules files under rules/, its config section in config/schema.yaml, and one line in
`_MODULES` below. No other kind is touched.

Modules are imported lazily, so `ftlab validate` of a world-model config never imports the
LLM stack (and the reverse).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

# kind name -> module defining KIND (imported on first use)
_MODULES: dict[str, str] = {
    "worldmodel": "ftlab.study",
    "llm": "ftlab.llm.study",
    "tir": "ftlab.tir.study",
    "mtl": "ftlab.mtl.study",
}


# Top-level config keys every kind shares; every other top-level key is a kind's section.
COMMON_KEYS = (
    "kind",
    "study",
    "seeds",
    "threads",
    "device",
    "precision",
    "cuda_graphs",
    "tf32",
    "torch_compile",
    "resources",
)


class Unit(Protocol):
    """One trained model (world: base/ftwb; llm: a method x dataset x seed run)."""

    name: str
    seed: int
    saved_steps: tuple[int, ...]  # every checkpoint written, in order
    eval_steps: tuple[int, ...]  # the checkpoints that are evaluated

    @property
    def final_step(self) -> int: ...


class Matrix(Protocol):
    """The experiment matrix of a study: a pure function of the validated config."""

    cfg: dict
    seeds: tuple[int, ...]

    @property
    def units(self) -> dict[str, Unit]: ...

    def unit(self, name: str) -> Unit: ...

    def targets(self, layout) -> list[str]: ...

    def summary(self) -> str: ...

    def plan(self) -> str: ...


@dataclass(frozen=True)
class StudyKind:
    name: str
    description: str
    sections: tuple[str, ...]  # top-level config sections that belong to this kind
    rule_files: tuple[str, ...]  # under rules/, included by the Snakefile in this order
    model_pattern: str  # regex of the {model} wildcard (unit names, plus e.g. "base")
    matrix: Callable[[dict], Matrix]  # validated config -> matrix
    check: Callable[[dict], list[str]]  # cross-key problems a JSON schema cannot express
    # What a valid config still needs from the machine (packages, data, models), checked by
    # `ftlab validate` before any job runs; None: nothing beyond the config.
    preflight: Callable[[dict], list[str]] | None = None
    # The report's rules (tables, plots): seconds each, small inputs. Under a cluster executor
    # they run in the head process (Snakemake local rules), not as cluster jobs; see
    # ftlab.slurm.report_in_head.
    report_rules: tuple[str, ...] = ()


def lookup_unit(units: dict, name: str, what: str, study: str):
    """units[name], or a KeyError that names the study and the units it does have."""
    try:
        return units[name]
    except KeyError:
        known = ", ".join(units) or "(none)"
        raise KeyError(f"{what} {name!r} is not part of study {study!r}; known: {known}") from None


def kind_names() -> tuple[str, ...]:
    return tuple(_MODULES)


def get_kind(name: str) -> StudyKind:
    try:
        module = _MODULES[name]
    except KeyError:
        raise KeyError(f"unknown study kind {name!r}; known: {', '.join(_MODULES)}") from None
    return importlib.import_module(module).KIND


def matrix_of(cfg: dict) -> Matrix:
    """The matrix of a validated config, whatever its kind."""
    return get_kind(cfg["kind"]).matrix(cfg)
