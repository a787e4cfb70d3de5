"""Preflight of an LLM study: what would otherwise fail after the GPUs were spent.

Checked, each problem collected (not only the first) and reported in one message:
  - every configured lm-eval task loads: its YAML exists, its Python helpers import (ifeval
    imports langdetect, immutabledict and nltk - lm-eval's `ifeval` extra), its dataset is
    reachable or cached, and the data files some tasks need at run time exist (ifeval's nltk
    punkt_tab tokenizer, which lm-eval tries to download at import and only prints about when
    it cannot);
  - every dataset source resolves (a local file or folder, a subset folder of llm.data_root,
    or a hub dataset whose metadata loads);
  - the base model's (and each teacher's) config loads, so its id or path is right.

The workflow runs it as the job `llm_preflight`, which every training, teacher and evaluation
job waits for; `ftlab validate` runs it too. With HF_HUB_OFFLINE=1 "reachable" means "cached";
so does a hub that does not answer within 5 s (the checks then go offline, not retry for minutes).
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ftlab.io import atomic_write_json

log = logging.getLogger("ftlab.llm.preflight")

# lm-eval task -> (nltk resource, what provides it) needed when its requests are scored
NLTK_RESOURCES = {"ifeval": [("tokenizers/punkt_tab", "python -m nltk.downloader punkt_tab")]}
# Python package (import name) -> the pip requirement that provides it
PIP_HINTS = {
    "langdetect": "lm-eval[ifeval]",
    "immutabledict": "lm-eval[ifeval]",
    "nltk": "lm-eval[ifeval]",
    "sympy": "lm-eval[math]",
    "math_verify": "lm-eval[math]",
}


class PreflightError(RuntimeError):
    """One or more things a study needs are missing; the message names each."""


def _missing_module(exc: BaseException) -> str | None:
    """The top-level module name of a ModuleNotFoundError anywhere in the exception chain."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, ModuleNotFoundError) and exc.name:
            return exc.name.split(".")[0]
        exc = exc.__cause__ or exc.__context__
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def check_benchmarks(
    benchmarks: dict[str, str], include_path: str | None,
    key: str = "llm.lm_eval.include_path", tasks_key: str = "llm.benchmarks",
) -> list[str]:  # fmt: skip
    """Problems of the lm-eval tasks: unknown names, imports, datasets, run-time data files."""
    from ftlab.llm.lm_eval_runner import _task_manager, portable_tasks

    if include_path and not Path(include_path).is_dir():
        return [f"'{key}': {include_path!r} is not a folder (of lm-eval task YAMLs)"]
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        include = portable_tasks(include_path, tmp) if include_path else None
        tm = _task_manager(list(benchmarks), include)
        for name in benchmarks:
            if name not in tm.all_tasks:
                import difflib

                close = difflib.get_close_matches(name, tm.all_tasks, n=4, cutoff=0.6)
                hint = f" (close names: {', '.join(close)})" if close else ""
                problems.append(f"lm-eval task {name!r} ({tasks_key}) does not exist{hint}")
                continue
            try:
                tm.load([name])
            except Exception as e:  # noqa: BLE001 - every failure is reported, none is fatal here
                module = _missing_module(e)
                if module:
                    pip = PIP_HINTS.get(module, module)
                    problems.append(
                        f"lm-eval task {name!r}: Python package {module!r} is missing "
                        f"(pip install '{pip}'; setup.sh installs the llm extra)"
                    )
                else:
                    problems.append(
                        f"lm-eval task {name!r}: its dataset does not load (not reachable and "
                        f"not cached? run once where the hub is reachable, or set HF_HOME to a "
                        f"cache that has it): {_first_line(e)}"
                    )
                continue
            problems += _nltk_problems(name)
    return problems


def _nltk_problems(task: str) -> list[str]:
    out = []
    for resource, how in NLTK_RESOURCES.get(task, []):
        import nltk

        try:
            nltk.data.find(resource)
        except LookupError:
            out.append(f"lm-eval task {task!r} needs nltk's {resource} data (run: {how})")
    return out


def check_sources(datasets: dict[str, dict], data_root: str | None) -> list[str]:
    """Problems of the dataset sources: each must resolve (and a hub one's metadata load)."""
    return check_source_values(
        [(f"llm.datasets.{name}.{split}", spec[split], spec[f"{split}_split"])
         for name, spec in datasets.items() for split in ("train", "test")],
        data_root,
    )  # fmt: skip


def check_source_values(values: list[tuple[str, object, str]], data_root: str | None) -> list[str]:
    """Problems of (config key, source value, default split) triples, any study kind's: each
    source must resolve (a local file or folder, a subset folder of data_root, or a hub dataset
    whose metadata loads); builtin sources are the project's own."""
    from ftlab.llm.sources import BUILTIN, parse_sources, resolve

    problems = []
    for key, value, split in values:
        try:
            sources = parse_sources(value, split, key)
        except (KeyError, ValueError) as e:
            problems.append(f"'{key}': {e}")
            continue
        for src in sources:
            if src.path.startswith(BUILTIN):
                continue
            try:
                resolved = resolve(src, data_root)
                if resolved.kind == "hub":
                    _hub_metadata(src)
            except Exception as e:  # noqa: BLE001
                problems.append(f"'{key}': {src.label}: {_first_line(e)}")
    return problems


def _hub_metadata(src) -> None:
    import datasets

    builder = datasets.load_dataset_builder(src.path, src.subset)
    splits = builder.info.splits
    if splits and src.split not in splits:
        raise FileNotFoundError(f"no split {src.split!r} (has {', '.join(splits)})")


def check_models(models: dict[str, str | None]) -> list[str]:
    """Problems of the base model and teachers: their config must load ("tiny" is built)."""
    from transformers import AutoConfig

    problems = []
    for key, model in models.items():
        if not model or model == "tiny":
            continue
        if _looks_local(model) and not Path(model).expanduser().exists():
            # else transformers answers "Repo id must be in the form 'repo_name'..."
            problems.append(f"'{key}': model path {model!r} does not exist")
            continue
        try:
            AutoConfig.from_pretrained(model)
        except Exception as e:  # noqa: BLE001
            problems.append(f"'{key}': model config of {model!r} does not load: {_first_line(e)}")
    return problems


def _looks_local(name: str) -> bool:
    """A filesystem path, not a hub id ("org/name")."""
    return name.startswith(("/", "./", "../", "~")) or name.count("/") > 1 or Path(name).exists()


@functools.cache  # one probe per process and endpoint
def hub_reachable(timeout: float = 5.0, endpoint: str | None = None) -> bool:
    """Whether the Hugging Face hub answers within `timeout` s (through any configured proxy).
    Unreachable and not told HF_HUB_OFFLINE, huggingface_hub retries each request for
    minutes, so a preflight on an offline node would seem to hang."""
    import urllib.error
    import urllib.request

    endpoint = endpoint or os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    try:
        urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout)
    except urllib.error.HTTPError:
        return True  # it answered
    except (OSError, ValueError):
        return False
    return True


def go_offline_if_unreachable() -> bool:
    """Set HF_HUB_OFFLINE=1 (also in an already imported huggingface_hub) when the hub does
    not answer, so every check reads the local cache at once; True when it did so."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        return False
    if hub_reachable(endpoint=os.environ.get("HF_ENDPOINT")):
        return False
    log.warning("the Hugging Face hub does not answer: checking the local cache only")
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    for module, attr in (("huggingface_hub.constants", "HF_HUB_OFFLINE"),
                         ("datasets.config", "HF_HUB_OFFLINE"),
                         ("datasets.config", "HF_DATASETS_OFFLINE")):  # fmt: skip
        if module in sys.modules and hasattr(sys.modules[module], attr):
            setattr(sys.modules[module], attr, True)
    return True


def preflight(
    *, base_model: str, datasets: dict, data_root: str | None, benchmarks: dict[str, str],
    include_path: str | None, teachers: dict[str, str | None] | None = None,
) -> dict:  # fmt: skip
    """Run every check; the report lists what was checked, how long each took, the problems."""
    checks: list[tuple[str, Callable[[], list[str]]]] = [
        ("models", lambda: check_models(
            {"llm.base_model": base_model,
             **{f"llm.{k}.model": v for k, v in (teachers or {}).items()}})),
        ("sources", lambda: check_sources(datasets, data_root)),
        ("benchmarks", lambda: check_benchmarks(benchmarks, include_path)),
    ]  # fmt: skip
    report = {"problems": [], "seconds": {}, "hub_unreachable": go_offline_if_unreachable()}
    for name, check in checks:
        t0 = time.perf_counter()
        found = check()
        report["seconds"][name] = round(time.perf_counter() - t0, 2)
        report["problems"] += found
        log.info("preflight %s: %s", name, f"{len(found)} problem(s)" if found else "ok")
    report["checked"] = {
        "base_model": base_model,
        "teachers": teachers or {},
        "datasets": list(datasets),
        "benchmarks": list(benchmarks),
    }
    return report


def raise_if_problems(report: dict) -> None:
    problems = report["problems"]
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise PreflightError(f"LLM preflight: {len(problems)} problem(s):\n{lines}")


def run_preflight(*, out: str, **kwargs) -> dict:
    """The workflow's preflight job: check, fail naming every problem, else write `out`."""
    report = preflight(**kwargs)
    raise_if_problems(report)
    atomic_write_json(out, report)
    return report


def preflight_config(cfg: dict) -> list[str]:
    """Problems of a validated LLM study config (`ftlab validate`); [] when preflight is off."""
    llm = cfg["llm"]
    if not llm["preflight"]:
        return []
    from ftlab.llm.study import TEACHERS, LLMStudy

    study = LLMStudy(cfg)
    report = preflight(
        base_model=llm["base_model"],
        datasets=llm["datasets"],
        data_root=llm["data_root"],
        benchmarks=llm["benchmarks"],
        include_path=llm["lm_eval"]["include_path"],
        teachers={TEACHERS[s]: llm[TEACHERS[s]]["model"] for s in study.teacher_sources()},
    )
    return report["problems"]
