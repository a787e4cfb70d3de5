"""Seed 000's evaluation engine (`mtl.eval.engine: guru`): Reasoning360-MTL at 6133d10,
scripts/train/example_multinode_eval_guru7b_mtl.sh, which runs verl.trainer.main_generation and
then verl.trainer.main_eval per leaderboard.

Per suite task (guru_<leaderboard>, '-' -> '_'):
- data: the first file under `mtl.eval.guru.data_folder` (searched recursively, as `find`)
  named <domain>__<leaderboard>_[0-9a-zA-Z]*.parquet (aime: <domain>__aime_repeated_8x_...).
  `find | head -n 1` takes whatever the directory order gives first; here the first in sorted
  path order, and a log line names the others. The seed SKIPS a leaderboard without a file;
  here it is an error naming the task, pattern and folder (checked by `ftlab validate` before
  any GPU job): the report compares every suite task, so leave a task out of the suite instead.
- prompts (main_generation): the `prompt` column is a chat message list, rendered with the
  checkpoint's chat template (add_generation_prompt) and cut to `prompt_length` tokens by the
  tokenizer's own truncation side; `n_samples` completions per prompt, sampled at
  temperature 1.0, top_p 0.7, top_k -1 (off), at most `response_length` new tokens, decoded
  without special tokens. n_samples / lengths per leaderboard: LEADERBOARDS (the script's rule:
  4 for aime, livecodebench, humaneval, multihier, codeio, gpqa_diamond, else 1; its condition
  also names aime2025, arcagi1 and zebra_puzzle_dataset, which are not leaderboards of the list,
  so arcagi and zebra_puzzle get 1 sample and arcagi 4096 / 28672 tokens, not 16384 / 16384).
- AIME (main_generation: "aime" in the output path, i.e. the file name): rows are merged by
  their prompt (merge_aime_responses' extract_content: the first message's content of a list,
  but pandas gives a numpy array, so the key is str() of the whole prompt), so a problem
  repeated 8x with 4 samples each is one problem with 32 responses, scored against its first
  row's ground truth.
- scoring (main_eval): every response by ftlab.mtl.guru.compute_score(data_source, response,
  ground_truth, extra_info)["score"]; per problem the mean score and c = responses scoring
  exactly 1; figures: test_score(avg@k)/<data_source> = mean over its problems of the mean
  score, pass@1_(avg<max_k>) = the same over all problems x 100, and unbiased pass@k x 100 for
  k = 1, 2, 4, ... <= max_k, where max_k = the LAST problem's response count (main_eval's
  rule) and a problem with fewer responses than k adds 0.
The per-problem mean score is the sample reward of ftlab.mtl.evaluate's contract (the problem
is the unit of the paired bootstrap).

Resume (ftlab's, not the seed's): each task's generated outputs are kept, as soon as they are
generated, in <out_json>.generations/<task>.jsonl (atomically, its key stamped on the last
line); the key is the checkpoint's content hash, the backend and its settings, the sampling
settings and seed, the task's file, n_samples, lengths, limit and prompt token ids, so a job
killed at task 15 of 19 generates only tasks 15-19 again, and a changed setting generates
again. Scores are recomputed (cheap next to generation). The folder is kept after the job (a
re-run, e.g. after a scoring-only change, only re-scores); deleting it is safe. The hf backend
seeds torch at the start of every task, as each leaderboard's main_generation process starts
from the seed, so a resumed task samples what an uninterrupted run samples.

Scoring runs in a pool of `mtl.eval.guru.score_workers` processes (null = the job's threads;
1 = in the job's process), order and results as in-process; the seed scores with Ray workers
(main_eval's ray.init). Each worker runs a response's scorer in its main thread, so
zebra_puzzle's SIGALRM limit applies there as in-process, and may fork the time-limited children
of naive_dapo (_limits.call_limited).
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from ftlab.io import read_jsonl, sha256_json, write_jsonl

log = logging.getLogger("ftlab.mtl.guru_eval")

# Seed script's generation settings (the same for every leaderboard).
SAMPLING = {"temperature": 1.0, "top_p": 0.7, "top_k": -1}


@dataclass(frozen=True)
class Leaderboard:
    name: str  # the seed's leaderboard_list entry
    domain: str  # its domain_mappings entry: the parquet's "<domain>__" prefix
    n_samples: int
    prompt_length: int
    response_length: int

    @property
    def task(self) -> str:
        return "guru_" + self.name.replace("-", "_")

    @property
    def file_pattern(self) -> str:
        repeated = "repeated_8x_" if self.name in ("aime", "aime2025") else ""
        return f"{self.domain}__{self.name}_{repeated}[0-9a-zA-Z]*.parquet"


# The seed script's 19 leaderboards in its order, with the values its rules give each one
# (tests/test_mtl_guru_eval.py re-derives them from the script's conditions).
LEADERBOARDS = {
    b.task: b
    for b in (
        Leaderboard("aime", "math", 4, 4096, 28672),
        Leaderboard("math", "math", 1, 4096, 28672),
        Leaderboard("humaneval", "codegen", 4, 4096, 28672),
        Leaderboard("mbpp", "codegen", 1, 4096, 28672),
        Leaderboard("livecodebench", "codegen", 4, 4096, 28672),
        Leaderboard("gpqa_diamond", "stem", 4, 4096, 28672),
        Leaderboard("supergpqa", "stem", 1, 4096, 28672),
        Leaderboard("arcagi", "logic", 1, 4096, 28672),
        Leaderboard("zebra_puzzle", "logic", 1, 4096, 28672),
        Leaderboard("codeio", "simulation", 4, 4096, 28672),
        Leaderboard("cruxeval-i", "simulation", 1, 4096, 28672),
        Leaderboard("cruxeval-o", "simulation", 1, 4096, 28672),
        Leaderboard("finqa", "table", 1, 4096, 28672),
        Leaderboard("hitab", "table", 1, 4096, 28672),
        Leaderboard("multihier", "table", 4, 4096, 28672),
        Leaderboard("livebench_reasoning", "ood", 1, 4096, 28672),
        Leaderboard("livebench_language", "ood", 1, 4096, 28672),
        Leaderboard("livebench_data_analysis", "ood", 1, 4096, 28672),
        Leaderboard("ifeval", "ood", 1, 4096, 28672),
    )
}


def unknown_tasks(tasks) -> list[str]:
    return [t for t in tasks if t not in LEADERBOARDS]


def task_plan(tasks, max_response_tokens: int | None = None) -> dict[str, dict]:
    """task -> its leaderboard settings as the job uses them (part of the job's params, so a
    change re-runs evaluation); max_response_tokens caps response_length (null: the seed's)."""
    plan = {}
    for t in tasks:
        b = asdict(LEADERBOARDS[t])
        if max_response_tokens is not None:
            b["response_length"] = min(b["response_length"], max_response_tokens)
        plan[t] = {**b, "file_pattern": LEADERBOARDS[t].file_pattern}
    return plan


# -- data -------------------------------------------------------------------------------
def find_task_files(folder: str | Path, tasks) -> tuple[dict[str, str], list[str]]:
    """(task -> its parquet file, one problem line per task without one)."""
    root = Path(folder)
    if not root.is_dir():
        return {}, [f"'mtl.eval.guru.data_folder': {str(root)!r} is not a folder (of "
                    f"<domain>__<leaderboard>_*.parquet files; tasks {list(tasks)})"]  # fmt: skip
    files = sorted(p for p in root.rglob("*.parquet") if p.is_file())
    found, problems = {}, []
    for t in tasks:
        pattern = LEADERBOARDS[t].file_pattern
        hits = [p for p in files if fnmatch.fnmatchcase(p.name, pattern)]
        if not hits:
            problems.append(f"'mtl.eval.suite' task {t!r}: no file matching {pattern!r} under "
                            f"'mtl.eval.guru.data_folder' {str(root)!r}")  # fmt: skip
            continue
        if len(hits) > 1:
            log.info("%s: %d files match %s; using the first, %s", t, len(hits), pattern, hits[0])
        found[t] = str(hits[0])
    return found, problems


@dataclass
class Row:
    chat: list[dict]
    data_source: str
    ground_truth: object
    extra_info: dict
    merge_key: str = ""  # main_generation's AIME grouping key (seed_merge_key)


def seed_merge_key(prompt) -> str:
    """main_generation.extract_content of a prompt value as pandas reads it: a list's first
    message content, but the parquet's list arrives as a numpy array, which falls through to
    str(p) - the whole prompt (every message), so a shared system message merges nothing."""
    if isinstance(prompt, str):
        try:
            prompt = json.loads(prompt)
        except Exception:  # noqa: BLE001 - the seed's bare except: the text itself
            return prompt
    if isinstance(prompt, list) and len(prompt) > 0 and isinstance(prompt[0], dict):
        return prompt[0].get("content", "")
    return str(prompt)


def _plain(x):
    """pyarrow/pandas values (numpy arrays, nested) as Python lists and dicts."""
    import numpy as np

    if isinstance(x, np.ndarray):
        return [_plain(v) for v in x.tolist()]
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    return x


def read_rows(path: str, task: str, limit: int | None = None) -> list[Row]:
    import pandas as pd

    df = pd.read_parquet(path)
    missing = [c for c in ("prompt", "data_source", "reward_model") if c not in df.columns]
    if missing:
        raise ValueError(f"{path} (task {task}): no column {missing} (columns: {list(df.columns)})")
    if limit is not None:
        df = df.iloc[:limit]
    rows = []
    for i, r in enumerate(df.to_dict("records")):
        chat = _plain(r["prompt"])
        if not (isinstance(chat, list) and chat and all(isinstance(m, dict) for m in chat)):
            raise ValueError(f"{path} (task {task}) row {i}: 'prompt' is not a chat message "
                             f"list: {str(chat)[:200]}")  # fmt: skip
        rm = r["reward_model"]
        if not isinstance(rm, dict) or "ground_truth" not in rm:
            raise ValueError(f"{path} (task {task}) row {i}: 'reward_model' has no ground_truth")
        # ground truth and extra_info reach the scorers as pandas reads them (main_eval's
        # values: nested lists as numpy arrays); main_eval passes {} without the column
        extra = r["extra_info"] if "extra_info" in df.columns else {}
        rows.append(Row(chat, r["data_source"], rm["ground_truth"], extra,
                        seed_merge_key(r["prompt"])))  # fmt: skip
    return rows


# scorer -> (Python modules, nltk data) it needs when it scores; the preflight names what is
# missing before any GPU job (the scorers raise at the first response otherwise)
SCORER_NEEDS = {
    "naive_dapo": (("pylatexenc", "sympy"), ()),
    "ifeval": (("lm_eval", "langdetect", "immutabledict", "nltk"), ("tokenizers/punkt_tab",)),
}


def dependency_problems(task: str, scorers) -> list[str]:
    """One line per module or nltk resource a scorer of `task` needs and this machine lacks."""
    import importlib.util

    out = []
    for name in sorted(set(scorers)):
        modules, resources = SCORER_NEEDS.get(name, ((), ()))
        for module in modules:
            if importlib.util.find_spec(module) is None:
                out.append(f"task {task!r}: scorer {name} needs the Python package {module!r} "
                           f"(pip install -e .[llm])")  # fmt: skip
        for resource in resources:
            import nltk

            try:
                nltk.data.find(resource)
            except LookupError:
                out.append(f"task {task!r}: scorer {name} needs nltk's {resource} data (run: "
                           f"python -m nltk.downloader {resource.rsplit('/', 1)[-1]})")  # fmt: skip
    return out


def scorer_problems(path: str, task: str) -> list[str]:
    """One line per data source of the file whose scorer ftlab.mtl.guru has not ported (the
    dispatch may read extra_info, so every row is asked), and per package or nltk resource
    its scorers need and this machine lacks."""
    import pandas as pd
    import pyarrow.parquet as pq

    from ftlab.mtl import guru

    names = pq.read_schema(path).names
    if "data_source" not in names:
        return [f"task {task!r}: {path} has no 'data_source' column"]
    # only the dispatch's columns: code tasks carry large test cases
    df = pd.read_parquet(path, columns=[c for c in ("data_source", "extra_info") if c in names])
    extras = df["extra_info"] if "extra_info" in df.columns else [None] * len(df)
    failed: dict[str, str] = {}
    used: set[str] = set()
    for source, extra in zip(df["data_source"], extras, strict=True):
        if source in failed:
            continue
        try:
            used.add(guru.scorer_name(source, extra))
        except guru.UnsupportedSource as e:
            failed[source] = str(e)
    return [f"task {task!r} ({path}): data source {s!r} has no ported scorer: {why}"
            for s, why in sorted(failed.items())] + dependency_problems(task, used)  # fmt: skip


def preflight_problems(folder: str, tasks: list[str]) -> list[str]:
    """`ftlab validate` (engine guru): every task's parquet found, every data source scored."""
    found, problems = find_task_files(folder, tasks)
    for task, path in found.items():
        problems += scorer_problems(path, task)
    return problems


# -- problems and main_eval's figures ---------------------------------------------------
def merges_by_prompt(path: str) -> bool:
    """main_generation merges rows by prompt when "aime" is in its output path, whose name is
    the data file's."""
    return "aime" in Path(path).name.lower()


def problems_of(rows: list[Row], merge: bool) -> list[tuple[int, list[int]]]:
    """(problem id, its row indices), in the order main_eval reads them: each row its own
    problem, or (merge) the rows grouped by their merge_key, groups in sorted key order
    (pandas groupby); the id is the group's first row."""
    if not merge:
        return [(i, [i]) for i in range(len(rows))]
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault(r.merge_key, []).append(i)
    return [(idx[0], idx) for _, idx in sorted(groups.items())]


def unbiased_pass_at_k(n: int, c: int, k: int) -> float:
    """main_eval's estimator 1 - C(n-c, k) / C(n, k) (Chen et al. 2021): ftlab.tir.passk's,
    except that c > n gives 1.0, as main_eval's `n - c < k` test does (it takes n from the
    LAST problem, so another problem may have more correct responses than n)."""
    from ftlab.tir.passk import pass_at_k

    if k > n:
        raise ValueError(f"k = {k} cannot be greater than n = {n}")
    if n - c < k:
        return 1.0
    return pass_at_k(n, c, k)


def main_eval_figures(scores: list[list[float]], sources: list[str]) -> dict:
    """main_eval's metric_data and per-source means of problems' score lists (in its order)."""
    if not scores:
        raise ValueError("no problems to score")
    max_k = len(scores[-1])  # main_eval: the last item's response count
    ks = [2**i for i in range(int(math.log2(max_k)) + 1) if 2**i <= max_k]
    pass_k = dict.fromkeys(ks, 0.0)
    by_source: dict[str, list[float]] = {}
    for s, source in zip(scores, sources, strict=True):
        c = sum(1 for x in s if x == 1)
        by_source.setdefault(source, []).append(sum(s) / len(s))
        for k in ks:
            if k <= len(s):
                pass_k[k] += unbiased_pass_at_k(max_k, c, k)
    total = len(scores)
    means = [sum(s) / len(s) for s in scores]
    return {
        **{f"pass@{k}": pass_k[k] / total * 100.0 for k in ks},
        f"pass@1_(avg{max_k})": sum(means) / total * 100.0,
        **{f"test_score(avg@k)/{d}": sum(v) / len(v) for d, v in by_source.items()},
        "max_k": max_k,
    }


# -- generation -------------------------------------------------------------------------
def prompt_ids(tok, chat: list[dict], prompt_length: int) -> list[int]:
    """main_generation's apply_chat_template(add_generation_prompt, truncation, max_length):
    the rendered template tokenized without added special tokens, cut by the tokenizer."""
    text = tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    return tok(text, add_special_tokens=False, truncation=True,
               max_length=prompt_length)["input_ids"]  # fmt: skip


class HFBackend:
    """transformers generate over token ids: left padding, `n` sequences per prompt."""

    def __init__(self, model_path: str, *, device: str, batch_size: int, seed: int,
                 temperature: float, top_p: float, top_k: int, gpus: int = 1):  # fmt: skip
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = device
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        self.tok = AutoTokenizer.from_pretrained(model_path, padding_side="left")
        if self.tok.pad_token_id is None:  # main_generation: pad = eos when unset
            self.tok.pad_token = self.tok.eos_token
        if gpus > 1 and device.startswith("cuda"):
            self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype,
                                                              device_map="auto")  # fmt: skip
            self.device = str(self.model.device)
        else:
            self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
            self.model.to(device)
        self.model.eval()
        self.batch_size = batch_size
        # HF's top_k 0 = off (vLLM's -1)
        self.sampling = {"do_sample": False}
        if temperature > 0:
            self.sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p,
                             "top_k": max(top_k, 0)}  # fmt: skip
        self.seed = seed

    def __call__(self, prompts: list[list[int]], n: int, max_tokens: int) -> list[list[str]]:
        import torch
        from transformers import GenerationConfig

        # one call per task: every task starts from the seed (main_generation is one process
        # per leaderboard), so a task resumed after a kill samples as in an uninterrupted run
        torch.manual_seed(self.seed)

        eos = self.model.generation_config.eos_token_id or self.tok.eos_token_id
        cfg = GenerationConfig(max_new_tokens=max_tokens, num_return_sequences=n, use_cache=True,
                               pad_token_id=self.tok.pad_token_id, eos_token_id=eos,
                               **self.sampling)  # fmt: skip
        out: list[list[str]] = []
        for lo in range(0, len(prompts), self.batch_size):
            batch = prompts[lo : lo + self.batch_size]
            enc = self.tok.pad({"input_ids": batch}, padding=True, return_tensors="pt")
            enc = enc.to(self.device)
            with torch.inference_mode():
                gen = self.model.generate(**enc, generation_config=cfg)
            texts = self.tok.batch_decode(gen[:, enc["input_ids"].shape[1] :],
                                          skip_special_tokens=True)  # fmt: skip
            out += [texts[i : i + n] for i in range(0, len(texts), n)]
        return out


class VLLMBackend:
    """vLLM offline generation, as verl's rollout (gpu_memory_utilization 0.7 in the seed)."""

    def __init__(self, model_path: str, *, seed: int, temperature: float, top_p: float,
                 top_k: int, max_model_len: int, gpus: int = 1,
                 gpu_memory_utilization: float = 0.7):  # fmt: skip
        from vllm import LLM, SamplingParams

        self.llm = LLM(model=model_path, seed=seed, tensor_parallel_size=max(1, gpus),
                       gpu_memory_utilization=gpu_memory_utilization,
                       max_model_len=max_model_len)  # fmt: skip
        self.tok = self.llm.get_tokenizer()
        self._params = SamplingParams
        self.sampling = {"temperature": temperature, "top_p": top_p, "top_k": top_k}

    def __call__(self, prompts: list[list[int]], n: int, max_tokens: int) -> list[list[str]]:
        params = self._params(n=n, max_tokens=max_tokens, skip_special_tokens=True,
                              **self.sampling)  # fmt: skip
        outs = self.llm.generate([{"prompt_token_ids": p} for p in prompts], params,
                                 use_tqdm=False)  # fmt: skip
        return [[o.text for o in r.outputs] for r in outs]


def resolve_backend(backend: str, device: str) -> str:
    """The backend `backend` (auto / hf / vllm) means on `device` (auto on a CPU: hf)."""
    from ftlab.tir.generation import pick_backend

    return "hf" if device == "cpu" and backend == "auto" else pick_backend(backend)


def make_backend(
    backend: str, model_path: str, *, plan: dict, device: str, gpus: int, batch_size: int,
    seed: int, gpu_memory_utilization: float, sampling: dict,
):  # fmt: skip
    chosen = resolve_backend(backend, device)
    log.info("generation backend: %s (asked: %s)", chosen, backend)
    if chosen == "vllm":
        longest = max(p["prompt_length"] + p["response_length"] for p in plan.values())
        return VLLMBackend(model_path, seed=seed, max_model_len=longest, gpus=gpus,
                           gpu_memory_utilization=gpu_memory_utilization, **sampling)  # fmt: skip
    return HFBackend(model_path, device=device, batch_size=batch_size, seed=seed, gpus=gpus,
                     **sampling)  # fmt: skip


# -- scoring --------------------------------------------------------------------------
def _score_problem(data_source: str, texts: list[str], ground_truth, extra_info,
                   problem: str = "") -> list[float]:  # fmt: skip
    """One problem's responses scored in order (a pool worker's unit of work).

    Reproducible: the seed's scorers draw from unseeded generators (supergpqa guesses a letter
    with Python's global `random`, ifeval's language check uses langdetect), so each problem
    seeds them from `problem` (mtl.eval.guru.seed, task, problem id): the same scores in the
    job's process or any worker, on every run; the draws' distributions are the seed's. The
    global `random` state is put back after. An error other than an unported source is raised
    again naming the problem and its data source (score_task adds the task and file)."""
    import random

    from ftlab.mtl import guru

    state = random.getstate()
    random.seed(problem)
    try:
        from langdetect import DetectorFactory

        DetectorFactory.seed = 0  # langdetect's documented way to a deterministic detect()
    except ImportError:
        pass
    try:
        return [float(guru.compute_score(data_source, t, ground_truth, extra_info)["score"])
                for t in texts]  # fmt: skip
    except guru.UnsupportedSource:
        raise
    except Exception as e:  # noqa: BLE001 - re-raised with where it happened
        raise RuntimeError(
            f"problem {problem.rsplit(':', 1)[-1]} (data source "
            f"{data_source!r}): {type(e).__name__}: {e}"
        ) from e
    finally:
        random.setstate(state)


@contextlib.contextmanager
def score_pool(workers: int):
    """A process pool of `workers` scorers, or None (in-process) for 1.

    Forked, and at once: here, before the tokenizer and the generation backend start threads
    (a fork then could copy a held lock). Not spawn or forkserver: those re-run the main
    module in every worker, and a Snakemake job's main module is its script. Workers are not
    daemons, so scorers can fork their own time-limited children (_limits.call_limited)."""
    if workers <= 1:
        yield None
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import ftlab.mtl.guru  # noqa: F401 - imported once here, inherited by every worker

    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
    try:
        pool.submit(int).result()  # the fork context forks every worker at the first submit
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def score_task(task: str, path: str, rows: list[Row], outputs: list[list[str]],
               pool=None, seed: int = 0) -> tuple:  # fmt: skip
    """(main_eval figures, per-problem records) of a task's generated outputs (one list per
    row); scores by ftlab.mtl.guru.compute_score, in `pool` (score_pool) when given; `seed`
    (mtl.eval.guru.seed) seeds each problem's scorer draws (_score_problem)."""
    from concurrent.futures.process import BrokenProcessPool

    from ftlab.mtl import guru

    problems = problems_of(rows, merges_by_prompt(path))
    # main_generation's merge keeps each column's first value
    work = [(rows[idx[0]], [t for i in idx for t in outputs[i]]) for _, idx in problems]
    args = [(first.data_source, texts, first.ground_truth, first.extra_info,
             f"{seed}:{task}:{pid}")
            for (pid, _), (first, texts) in zip(problems, work, strict=True)]  # fmt: skip
    try:
        if pool is None:
            all_scores = [_score_problem(*a) for a in args]
        else:  # map keeps the order; a worker's exception is raised here
            all_scores = list(pool.map(_score_problem, *zip(*args, strict=True)))
    except BrokenProcessPool as e:  # a RuntimeError: before the scorers' own errors
        raise RuntimeError(
            f"task {task} ({path}): a scoring worker died (killed, out of memory?); "
            "mtl.eval.guru.score_workers 1 scores in the job's process"
        ) from e
    except guru.UnsupportedSource as e:
        raise ValueError(f"task {task} ({path}): {e}") from e
    except RuntimeError as e:  # _score_problem's: names the problem and data source
        raise RuntimeError(f"task {task} ({path}): {e}") from e
    scores, sources, records = [], [], []
    for (pid, _), (first, texts), s in zip(problems, work, all_scores, strict=True):
        bad = [x for x in s if not 0.0 <= x <= 1.0]
        if bad:
            raise ValueError(f"task {task} ({path}) problem {pid}: data source "
                             f"{first.data_source!r} scored {bad[0]} (outside [0, 1])")  # fmt: skip
        scores.append(s)
        sources.append(first.data_source)
        records.append({"sample": pid, "data_source": first.data_source,
                        "reward": sum(s) / len(s), "scores": s, "outputs": texts})  # fmt: skip
    return main_eval_figures(scores, sources), records


# -- kept generations (resume) ----------------------------------------------------------
def generations_dir(out_json: str | Path) -> Path:
    """The job's folder of finished tasks' outputs, beside its result."""
    return Path(str(out_json) + ".generations")


def kept_outputs(path: Path, key: str, n_rows: int) -> list[list[str]] | None:
    """A task's outputs from its file when the file is complete and stamped with `key`."""
    if not path.is_file():
        return None
    try:
        lines = read_jsonl(path)
    except ValueError as e:  # written atomically, so only a foreign file: generate again
        log.warning("%s: unreadable (%s); generating again", path, e)
        return None
    if len(lines) == n_rows + 1 and lines[-1].get("key") == key:
        return [line["outputs"] for line in lines[:-1]]
    log.info("%s: stale (a setting, the model or the data changed); generating again", path)
    return None


def keep_outputs(path: Path, key: str, task: str, outputs: list[list[str]]) -> None:
    # the key is stamped last: a file that ends with it is whole (and written atomically)
    write_jsonl(path, [*({"row": i, "outputs": o} for i, o in enumerate(outputs)),
                       {"key": key, "task": task, "rows": len(outputs)}])  # fmt: skip


def generation_identity(model_path: str, backend: str, guru: dict, device: str,
                        gpus: int) -> dict:  # fmt: skip
    """What, besides a task's own plan and prompts, decides its generated outputs."""
    from ftlab.llm.fingerprint import model_fingerprint

    ident = {"model_sha256": model_fingerprint(model_path), "backend": backend,
             "device": device, "gpus": gpus, "seed": guru["seed"],
             **{k: guru[k] for k in SAMPLING}}  # fmt: skip
    if backend == "hf":  # padding within a batch changes the sampled tokens
        ident["batch_size"] = guru["batch_size"]
    if backend == "vllm":  # the KV budget changes its batching (preemption)
        ident["gpu_memory_utilization"] = guru["gpu_memory_utilization"]
    return ident


def task_key(identity: dict, task: str, path: str, plan: dict, limit, ids) -> str:
    return sha256_json({**identity, "task": task, "file": path, "limit": limit,
                        **{k: plan[k] for k in ("n_samples", "prompt_length", "response_length")},
                        "prompt_ids_sha256": sha256_json(ids)})  # fmt: skip


# -- the job ----------------------------------------------------------------------------
def evaluate_guru(
    *, model_path: str, suite: dict[str, str], test_sets: dict[str, str], plan: dict,
    guru: dict, device: str, gpus: int, out_json: str, out_samples: str, meta: dict,
    threads: int = 1, generator=None,
) -> None:  # fmt: skip
    """suite: task -> domain; test_sets: task -> its parquet (find_task_files); plan:
    task_plan; guru: mtl.eval.guru; threads: the job's (score_workers' default);
    generator(prompt ids, n, max_tokens) -> n texts per prompt (tests plant one; else
    make_backend, built when the first task without kept outputs needs it)."""
    workers = guru.get("score_workers") or threads
    with score_pool(workers) as pool:  # first: forked before anything starts threads
        _evaluate(model_path=model_path, suite=suite, test_sets=test_sets, plan=plan, guru=guru,
                  device=device, gpus=gpus, out_json=out_json, out_samples=out_samples,
                  meta=meta, generator=generator, pool=pool)  # fmt: skip


def _evaluate(*, model_path, suite, test_sets, plan, guru, device, gpus, out_json, out_samples,
              meta, generator, pool) -> None:  # fmt: skip
    from transformers import AutoTokenizer

    from ftlab.mtl.evaluate import write_outcomes

    missing = [t for t in suite if t not in test_sets]
    if missing:
        folder = guru["data_folder"]
        raise ValueError("; ".join(
            f"task {t!r}: no file matching {plan[t]['file_pattern']!r} under "
            f"'mtl.eval.guru.data_folder' {folder!r}" for t in missing))  # fmt: skip
    tok = AutoTokenizer.from_pretrained(model_path)
    if not tok.chat_template:
        raise ValueError(
            f"{model_path}: the tokenizer has no chat template (the guru engine renders each "
            "prompt's messages with it, as main_generation)"
        )
    backend = "injected" if generator is not None else resolve_backend(guru["backend"], device)
    identity = generation_identity(model_path, backend, guru, device, gpus)
    built = [generator] if generator is not None else []

    def generate(ids, n, max_tokens):
        if not built:  # the model is loaded only when some task is not kept
            sampling = {k: guru[k] for k in SAMPLING}
            built.append(make_backend(guru["backend"], model_path, plan=plan, device=device,
                                      gpus=gpus, batch_size=guru["batch_size"], seed=guru["seed"],
                                      gpu_memory_utilization=guru["gpu_memory_utilization"],
                                      sampling=sampling))  # fmt: skip
        return built[0](ids, n, max_tokens)

    kept_dir = generations_dir(out_json)
    tasks, samples = [], []
    for task, domain in suite.items():
        p, path = plan[task], test_sets[task]
        rows = read_rows(path, task, guru["limit"])
        ids = [prompt_ids(tok, r.chat, p["prompt_length"]) for r in rows]
        key = task_key(identity, task, path, p, guru["limit"], ids)
        kept_file = kept_dir / f"{task}.jsonl"
        outputs = kept_outputs(kept_file, key, len(rows))
        if outputs is None:
            outputs = generate(ids, p["n_samples"], p["response_length"])
            shape = [len(o) for o in outputs]
            if len(outputs) != len(rows) or any(k != p["n_samples"] for k in shape):
                raise ValueError(f"task {task}: the generator returned {len(outputs)} lists "
                                 f"(sizes {sorted(set(shape))}) for {len(rows)} prompts x "
                                 f"{p['n_samples']} samples")  # fmt: skip
            keep_outputs(kept_file, key, task, outputs)
        else:
            log.info("%s: %d prompts' outputs kept from %s", task, len(rows), kept_file)
        figures, records = score_task(task, path, rows, outputs, pool, guru["seed"])
        max_k = figures["max_k"]
        reward = sum(r["reward"] for r in records) / len(records)
        tasks.append({
            "task": task, "domain": domain, "metric": f"pass@1_(avg{max_k})",
            "value": figures[f"pass@1_(avg{max_k})"], "n": len(records), "reward": reward,
            "file": path, "n_samples": p["n_samples"], "main_eval": figures,
        })  # fmt: skip
        samples += [{"task": task, "domain": domain, **r} for r in records]
        log.info("%s (%s): %d problems, pass@1_(avg%d) %.2f, %s", task, domain, len(records),
                 max_k, tasks[-1]["value"],
                 {k: round(v, 2) for k, v in figures.items() if k.startswith("pass@")})  # fmt: skip
    write_outcomes(out_json, out_samples, tasks, samples, meta)
