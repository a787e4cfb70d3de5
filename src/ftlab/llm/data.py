"""Training data of the LLM study: GSM8K, MATH and TriviaQA, normalised to one row format.

Normalised row:
  {"id": str, "question": str, "answer": str (gold final answer, e.g. "42"),
   "aliases": [str] (other accepted answers; TriviaQA), "solution": str (worked solution ending
   with the answer; for TriviaQA the answer itself)}

Sources are local files (tests, clusters without internet) or hub ids (where reachable).
"""

from __future__ import annotations

import os
import random
import re
import tempfile
from pathlib import Path

from ftlab.io import read_jsonl, write_jsonl  # noqa: F401 (re-exported: the rows' file format)

FORMATS = ("gsm8k", "math", "triviaqa")
STYLES = ("plain", "reasoning")
SOURCES = ("gt", "teacher")

REASONING_INSTRUCTION = (
    "Answer the question. First think step by step between <reasoning> and </reasoning>, "
    "then give only the final answer between <answer> and </answer>."
)

_CALC_RE = re.compile(r"<<[^<>]*>>")  # GSM8K calculator annotations such as <<3+4=7>>


# -- reading sources ----------------------------------------------------------------------------
_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}


def _load(origin: str, *args, **kwargs) -> list[dict]:
    """Rows of ``datasets.load_dataset(*args, **kwargs)``; local data is prepared in a
    temporary cache, not in the user's HF cache."""
    import datasets

    datasets.disable_progress_bars()
    with tempfile.TemporaryDirectory() as cache_dir:
        try:
            ds = datasets.load_dataset(*args, cache_dir=cache_dir, **kwargs)
        except datasets.exceptions.DatasetGenerationError as e:
            raise ValueError(f"{origin}: not readable as rows: {e.__cause__ or e}") from e
        return ds.to_list()


def _read_file(path: Path) -> list[dict]:
    builder = _BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise ValueError(
            f"{path}: unsupported file type {path.suffix!r} (use .jsonl, .json or .parquet)"
        )
    rows = _load(str(path), builder, data_files=str(path), split="train")
    if len(rows) == 1 and list(rows[0]) == ["data"] and isinstance(rows[0]["data"], list):
        return rows[0]["data"]  # {"data": [...]} layout (TriviaQA's original release)
    return rows


def _read_dir(path: Path, split: str) -> list[dict]:
    """A dataset folder: <split>.jsonl/.json/.parquet or HF's shards, as datasets finds them."""
    try:
        return _load(str(path), str(path.resolve()), split=split)
    except ValueError as e:  # datasets: 'Unknown split "test". Should be one of [...]'
        if "Unknown split" not in str(e):
            raise
        raise FileNotFoundError(f"{path}: no {split} split ({e})") from e


def _read_hub(source: str, split: str) -> list[dict]:
    """A hub dataset, `id` or `id:config` (e.g. "openai/gsm8k:main")."""
    if os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1":
        raise FileNotFoundError(
            f"{source!r} is not a local file or directory, and hub loading is disabled "
            "(HF_HUB_OFFLINE/HF_DATASETS_OFFLINE=1): download the dataset and pass its path"
        )
    import datasets

    name, _, config = source.partition(":")
    try:
        ds = datasets.load_dataset(name, config or None, split=split)
    except Exception as e:  # network errors come in many types; say what was attempted
        raise RuntimeError(
            f"could not load hub dataset {source!r} split {split!r} (no network or hub access?): "
            f"{e}"
        ) from e
    return ds.to_list()


def read_source(source: str, split: str = "train") -> tuple[list[dict], str]:
    """Raw rows of a source and a name for error messages (the file or folder read)."""
    path = Path(source)
    if path.is_file():
        return _read_file(path), str(path)
    if path.is_dir():
        return _read_dir(path, split), f"{path} ({split})"
    return _read_hub(source, split), f"{source} ({split})"


# -- per-format normalisation -------------------------------------------------------------------
def last_boxed(text: str) -> str | None:
    r"""Content of the last \boxed{...} (or \fbox{...}) in text, nested braces included."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    i = text.find("{", start)
    if i < 0 or text[start:i].strip() not in ("\\boxed", "\\fbox"):
        m = re.match(r"\\boxed\s+([^\s$]+)", text[start:])  # "\boxed 5" without braces
        return m.group(1) if m else None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j].strip()
    return None  # unbalanced braces


def _field(row: dict, key: str, origin: str, i: int):
    value = row.get(key) if isinstance(row, dict) else None
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError(f"{origin}: row {i} has no {key!r} field (keys: {_keys(row)})")
    return value


def _keys(row) -> list:
    return sorted(row) if isinstance(row, dict) else [type(row).__name__]


def _row_id(row: dict, fmt: str, split: str, i: int) -> str:
    for key in ("id", "question_id", "unique_id"):
        if row.get(key) not in (None, ""):
            return str(row[key])
    return f"{fmt}-{split}-{i}"


def _gsm8k_row(row: dict, origin: str, i: int) -> dict:
    question = _field(row, "question", origin, i)
    text = _field(row, "answer", origin, i)
    if "####" not in text:
        raise ValueError(f"{origin}: row {i}: 'answer' has no '#### <final answer>' line")
    body, _, final = text.rpartition("####")
    answer = final.strip().replace(",", "")
    solution = _CALC_RE.sub("", body).rstrip() + f"\n#### {answer}"
    return {"question": question.strip(), "answer": answer, "aliases": [], "solution": solution}


def _math_row(row: dict, origin: str, i: int) -> dict:
    question = _field(row, "problem", origin, i)
    solution = _field(row, "solution", origin, i)
    answer = last_boxed(solution)
    if not answer:
        raise ValueError(f"{origin}: row {i}: 'solution' has no \\boxed{{...}} final answer")
    return {"question": question.strip(), "answer": answer, "aliases": [], "solution": solution}


def _triviaqa_row(row: dict, origin: str, i: int) -> dict:
    question = _field(row, "question", origin, i)
    ans = _field(row, "answer", origin, i)
    if isinstance(ans, dict):
        value = ans.get("value")
        if not value:
            raise ValueError(f"{origin}: row {i} has no 'answer.value' field")
        aliases = [str(a) for a in (ans.get("aliases") or [])]
    else:
        value, aliases = str(ans), []
    aliases = list(dict.fromkeys([value, *aliases]))  # dedupe, keep order, value first
    return {"question": question.strip(), "answer": value, "aliases": aliases, "solution": value}


_NORMALISERS = {"gsm8k": _gsm8k_row, "math": _math_row, "triviaqa": _triviaqa_row}


def normalize_row(row: dict, fmt: str, origin: str, i: int, split: str = "train") -> dict:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")
    if not isinstance(row, dict):
        raise ValueError(f"{origin}: row {i} is a {type(row).__name__}, not an object")
    out = _NORMALISERS[fmt](row, origin, i)
    return {"id": _row_id(row, fmt, split, i), **out}


def load_rows(source: str, fmt: str, split: str = "train", limit: int | None = None) -> list[dict]:
    """Normalised rows of a local file/dir or hub dataset (see the module docstring)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")
    raw, origin = read_source(source, split)
    if limit is not None:
        raw = raw[:limit]
    return [normalize_row(r, fmt, origin, i, split) for i, r in enumerate(raw)]


# -- prompts and SFT records --------------------------------------------------------------------
def prompt_for(row: dict, style: str) -> str:
    """The prompt a model sees; the completion continues right after it."""
    if style == "plain":
        return f"Question: {row['question']}\nAnswer:"
    if style == "reasoning":
        return f"{REASONING_INSTRUCTION}\nQuestion: {row['question']}\n"
    raise ValueError(f"unknown prompt style {style!r}; expected one of {STYLES}")


def gt_completion(row: dict, style: str) -> str:
    """The ground-truth solution written as the completion of prompt_for(row, style)."""
    if style == "plain":
        return " " + row["solution"]
    # The worked steps without GSM8K's closing "#### N" line: the answer goes into its tag.
    steps = re.sub(r"\n?####[^\n]*\s*$", "", row["solution"]).strip() or row["answer"]
    return f"<reasoning>{steps}</reasoning>\n<answer>{row['answer']}</answer>"


def sft_records(rows: list[dict], source: str, style: str = "reasoning") -> list[dict]:
    """Prompt/completion records for TRL's SFTTrainer (loss on the completion only).

    source "gt": the dataset's solution (GT-SFT); "teacher": each row's "teacher_completion"
    (SF-SFT; teacher.generate_trajectories keeps only verified-correct ones).
    """
    if source not in SOURCES:
        raise ValueError(f"unknown SFT source {source!r}; expected one of {SOURCES}")
    records = []
    for i, row in enumerate(rows):
        if source == "gt":
            completion = gt_completion(row, style)
        else:
            completion = row.get("teacher_completion")
            if not isinstance(completion, str):
                raise ValueError(f"row {i} ({row.get('id')}) has no 'teacher_completion' field")
        records.append({"prompt": prompt_for(row, style), "completion": completion})
    return records


# -- fixtures -----------------------------------------------------------------------------------
_NAMES = ("Ava", "Ben", "Cleo", "Dan", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jun")
_ITEMS = ("apples", "marbles", "pencils", "stickers", "cookies", "books")

_CAPITALS = {
    "France": ["Paris"], "Germany": ["Berlin"], "Italy": ["Rome", "Roma"],
    "Spain": ["Madrid"], "Japan": ["Tokyo"], "Canada": ["Ottawa"], "Egypt": ["Cairo"],
    "Kenya": ["Nairobi"], "Peru": ["Lima"], "Norway": ["Oslo"], "Poland": ["Warsaw"],
    "Greece": ["Athens"], "Portugal": ["Lisbon"], "Austria": ["Vienna", "Wien"],
    "Ireland": ["Dublin"], "Chile": ["Santiago", "Santiago de Chile"], "Cuba": ["Havana"],
    "the United States": ["Washington, D.C.", "Washington", "Washington DC"],
    "Australia": ["Canberra"], "India": ["New Delhi", "Delhi"],
}  # fmt: skip
_SYMBOLS = {
    "gold": ["Au"], "silver": ["Ag"], "iron": ["Fe"], "sodium": ["Na"], "potassium": ["K"],
    "copper": ["Cu"], "lead": ["Pb"], "tin": ["Sn"], "mercury": ["Hg"], "helium": ["He"],
    "oxygen": ["O"], "carbon": ["C"], "neon": ["Ne"], "zinc": ["Zn"],
}  # fmt: skip


def _arith_problem(rng: random.Random) -> tuple[str, str, int]:
    """(question, worked solution with a calculator annotation, answer)."""
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    a, b = rng.randint(2, 60), rng.randint(2, 12)
    kind = rng.randrange(4)
    if kind == 0:
        c = a + b
        q = f"{name} has {a} {item} and gets {b} more. How many {item} does {name} have now?"
        s = f"{name} has {a} + {b} = <<{a}+{b}={c}>>{c} {item} now."
    elif kind == 1:
        a, c = a + b, a
        q = f"{name} had {a} {item} and gave away {b}. How many {item} are left?"
        s = f"{name} has {a} - {b} = <<{a}-{b}={c}>>{c} {item} left."
    elif kind == 2:
        c = a * b
        q = f"{name} buys {b} bags with {a} {item} each. How many {item} is that in total?"
        s = f"{name} has {b} * {a} = <<{b}*{a}={c}>>{c} {item} in total."
    else:
        a, c = a * b, a
        q = f"{name} shares {a} {item} equally among {b} friends. How many does each get?"
        s = f"Each friend gets {a} / {b} = <<{a}/{b}={c}>>{c} {item}."
    return q, f"{s}\n#### {c}", c


def _trivia_facts() -> list[tuple[str, list[str]]]:
    facts = []
    for country, names in _CAPITALS.items():
        facts.append((f"What is the capital of {country}?", names))
        facts.append((f"Which city is the capital of {country}?", names))
    for element, names in _SYMBOLS.items():
        facts.append((f"What is the chemical symbol for {element}?", names))
    return facts


def write_fixtures(out_dir, n_train: int = 64, n_test: int = 32, seed: int = 0) -> dict[str, str]:
    """Small deterministic GSM8K- and TriviaQA-format datasets; returns name -> directory.

    Layout: <out_dir>/gsm8k/{train,test}.jsonl (question, answer = solution + "#### N") and
    <out_dir>/triviaqa/{train,test}.jsonl (question_id, question, answer {value, aliases}).
    TriviaQA questions come from a fixed fact table (~55 questions); larger requests reuse them.
    """
    rng = random.Random(seed)
    out = Path(out_dir)
    seen, gsm = set(), []
    while len(gsm) < n_train + n_test:  # distinct questions, so train and test do not overlap
        q, s, _ = _arith_problem(rng)
        if q not in seen:
            seen.add(q)
            gsm.append({"question": q, "answer": s})
    facts = _trivia_facts()
    rng.shuffle(facts)
    trivia = []
    for i in range(n_train + n_test):
        q, names = facts[i % len(facts)]
        trivia.append(
            {
                "question_id": f"tqa_fixture_{i}",
                "question": q,
                "answer": {"value": names[0], "aliases": names},
            }
        )
    dirs = {}
    for name, rows in (("gsm8k", gsm), ("triviaqa", trivia)):
        write_jsonl(out / name / "train.jsonl", rows[:n_train])
        write_jsonl(out / name / "test.jsonl", rows[n_train:])
        dirs[name] = str(out / name)
    return dirs
