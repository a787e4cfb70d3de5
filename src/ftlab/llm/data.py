"""Training data of the LLM study: GSM8K, MATH and TriviaQA, normalised to one row format.

Normalised row:
  {"id": str, "question": str, "answer": str (gold final answer, e.g. "42"),
   "aliases": [str] (other accepted answers; TriviaQA), "solution": str (worked solution ending
   with the answer; for TriviaQA the answer itself), "subset": str (only for a hub source
   with a subset, e.g. MATH's subject: the strata of the in-domain sample)}

Sources (ftlab.llm.sources) are local files or folders, hub ids with subsets and splits, or a
local folder laid out like the hub's. Rows whose content cannot serve the task (a GSM8K answer
without its "#### N" line, a MATH solution without \\boxed{}, an empty TriviaQA answer, a
repeated id) are dropped and counted per reason in the split's data report; a row that lacks
the format's fields altogether means the source is not of that format, and stops the job.
"""

from __future__ import annotations

import random
import re
import tempfile
from collections import Counter
from pathlib import Path

from ftlab.io import read_jsonl, write_jsonl  # noqa: F401 (re-exported: the rows' file format)

FORMATS = ("gsm8k", "math", "triviaqa")
# plain / reasoning: ftlab's prompts (reasoning = <reasoning>/<answer> tags, seed 001);
# seed003: seed 003's prompts and targets (scripts/preprocess_data.py), used inside the chat
# template (llm.prompt_format: seed003).
STYLES = ("plain", "reasoning", "seed003")
# llm.prompt_format -> the style of the SFT records, teacher and GRPO prompts
PROMPT_FORMAT_STYLES = {"tags": "reasoning", "seed003": "seed003"}
PROMPT_FORMATS = tuple(PROMPT_FORMAT_STYLES)
SOURCES = ("gt", "teacher")

REASONING_INSTRUCTION = (
    "Answer the question. First think step by step between <reasoning> and </reasoning>, "
    "then give only the final answer between <answer> and </answer>."
)
# Seed 003's instructions, appended to the question after a blank line.
SEED003_INSTRUCTIONS = {
    "gsm8k": "Please reason step by step, and put your final answer within \\boxed{}.",
    "math": "Please reason step by step, and put your final answer within \\boxed{}.",
    "triviaqa": "Answer the question directly. Put your final answer after 'The answer is: '.",
}
# Seed 003's GSM8K final answer and the "#### N" line it removes from the SFT target.
SEED003_HASH_RE = re.compile(r"####\s*(-?[\d,]+\.?\d*)")
_SEED003_HASH_LINE_RE = re.compile(r"\n?####\s*(-?[\d,]+\.?\d*)\s*$")

_CALC_RE = re.compile(r"<<[^<>]*>>")  # GSM8K calculator annotations such as <<3+4=7>>
# Seed 003's MATH answer regex (scripts/preprocess_data.py extract_math_answer): \boxed{...}
# with at most one level of nested braces; the last match is the answer.
SEED_BOXED_RE = re.compile(r"\\boxed\{([^{}]*(?:\{[^{}]*\}[^{}]*)*)\}")
# How a MATH solution's gold answer is found (llm.datasets.<d>.boxed): one_level = seed 003's
# regex (a \boxed{} nested deeper, e.g. \boxed{\frac{\sqrt{3}}{2}}, gives no match, so such a
# row is dropped); balanced = the last \boxed{}/\fbox{} with braces of any depth (last_boxed).
BOXED_RULES = ("one_level", "balanced")


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


def seed_boxed(text: str) -> str | None:
    r"""Seed 003's extraction: the last match of SEED_BOXED_RE, stripped; None when there is
    none or it is empty. Regex matches do not overlap and a box nested deeper than one level
    does not match at all, so the answer is the last *matching* box, not always the last box:
    "\boxed{5} ... \boxed{\frac{\sqrt{3}}{2}}" gives "5"."""
    found = SEED_BOXED_RE.findall(text)
    return (found[-1].strip() or None) if found else None


def boxed_answer(text: str, rule: str = "one_level") -> str | None:
    """The gold answer of a MATH solution under `rule` (BOXED_RULES)."""
    if rule == "one_level":
        return seed_boxed(text)
    if rule == "balanced":
        return last_boxed(text)
    raise ValueError(f"unknown boxed rule {rule!r}; expected one of {BOXED_RULES}")


def _field(row: dict, key: str, origin: str, i: int):
    value = row.get(key) if isinstance(row, dict) else None
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError(f"{origin}: row {i} has no {key!r} field (keys: {_keys(row)})")
    return value


def _keys(row) -> list:
    return sorted(row) if isinstance(row, dict) else [type(row).__name__]


class Dropped(Exception):
    """A row whose content cannot serve the task; `reason` is a key of DROP_REASONS."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


DROP_REASONS = {
    "no_final_answer": "GSM8K 'answer' has no '#### <final answer>' line",
    "no_boxed_answer": "MATH 'solution' has no \\boxed{...} final answer",
    "no_answer_value": "TriviaQA 'answer.value' is empty",
    "duplicate_id": "a row with the same id came earlier (e.g. a source listed twice)",
}


def _row_id(row: dict, fmt: str, split: str, i: int, subset: str | None = None) -> str:
    for key in ("id", "question_id", "unique_id"):
        if row.get(key) not in (None, ""):
            return str(row[key])
    return f"{fmt}-{subset + '-' if subset else ''}{split}-{i}"


def _gsm8k_row(row: dict, origin: str, i: int, boxed: str) -> dict:
    question = _field(row, "question", origin, i)
    text = _field(row, "answer", origin, i)
    if "####" not in text:
        raise Dropped("no_final_answer")
    body, _, final = text.rpartition("####")
    answer = final.strip().replace(",", "")
    if not answer:
        raise Dropped("no_final_answer")
    solution = _CALC_RE.sub("", body).rstrip() + f"\n#### {answer}"
    # solution_raw: the dataset's text as is (calculator annotations kept: seed 003's targets)
    return {"question": question.strip(), "answer": answer, "aliases": [], "solution": solution,
            "solution_raw": text}  # fmt: skip


def _math_row(row: dict, origin: str, i: int, boxed: str) -> dict:
    question = _field(row, "problem", origin, i)
    solution = _field(row, "solution", origin, i)
    answer = boxed_answer(solution, boxed)
    if not answer:
        raise Dropped("no_boxed_answer")
    return {"question": question.strip(), "answer": answer, "aliases": [], "solution": solution}


def _triviaqa_row(row: dict, origin: str, i: int, boxed: str) -> dict:
    question = _field(row, "question", origin, i)
    ans = _field(row, "answer", origin, i)
    if isinstance(ans, dict):
        value = ans.get("value")
        if not value or not str(value).strip():
            raise Dropped("no_answer_value")
        aliases = [str(a) for a in (ans.get("aliases") or [])]
    else:
        value, aliases = str(ans), []
    aliases = list(dict.fromkeys([value, *aliases]))  # dedupe, keep order, value first
    return {"question": question.strip(), "answer": value, "aliases": aliases, "solution": value}


_NORMALISERS = {"gsm8k": _gsm8k_row, "math": _math_row, "triviaqa": _triviaqa_row}


def normalize_row(
    row: dict, fmt: str, origin: str, i: int, split: str = "train", subset: str | None = None,
    boxed: str = "one_level",
) -> dict:  # fmt: skip
    """The normalised row; raises Dropped (content unusable) or ValueError (not this format).
    boxed: how a MATH solution's answer is found (BOXED_RULES)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")
    if boxed not in BOXED_RULES:
        raise ValueError(f"unknown boxed rule {boxed!r}; expected one of {BOXED_RULES}")
    if not isinstance(row, dict):
        raise ValueError(f"{origin}: row {i} is a {type(row).__name__}, not an object")
    out = _NORMALISERS[fmt](row, origin, i, boxed)
    return {"id": _row_id(row, fmt, split, i, subset), **out}


def _no_rows_error(label: str, dropped: Counter) -> ValueError:
    why = "; ".join(f"{n} {DROP_REASONS[r]} ({r})" for r, n in dropped.most_common())
    return ValueError(f"{label}: no row kept ({why or 'the source is empty'})")


def seed_permutation(n: int, seed: int) -> list[int]:
    """The row order of HF datasets' ``Dataset.shuffle(seed=seed)`` on n rows: it selects
    ``np.random.default_rng(seed).permutation(n)`` (datasets' arrow_dataset.py; seed 003 takes
    TriviaQA's 7,500 train questions as ``shuffle(seed=42).select(range(7500))``)."""
    import numpy as np

    return [int(i) for i in np.random.default_rng(seed).permutation(n)]


def load_split(
    sources: list, fmt: str, limit: int | None = None, data_root: str | None = None,
    seed: int = 0, *, boxed: str = "one_level", shuffle_seed: int | None = None,
) -> tuple[list[dict], dict]:  # fmt: skip
    """Normalised rows of several sources (concatenated in order; the first `limit` kept rows)
    and the split's data report: per source and in total, rows read, kept and dropped by
    reason. `seed`: of the project's builtin fixtures; `boxed`: how a MATH answer is found
    (BOXED_RULES); `shuffle_seed`: None keeps the sources' order, an integer first puts the
    concatenated raw rows in ``Dataset.shuffle(seed=shuffle_seed)`` order (seed_permutation;
    before the row filters, as seed 003 shuffles the raw split)."""
    from ftlab.llm.sources import BUILTIN, Source, read, resolve

    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")
    raw_rows, per_source = [], []  # raw_rows: (source index, row index, raw row)
    with tempfile.TemporaryDirectory() as tmp:
        for src in sources:
            label = src.label
            if src.path.startswith(BUILTIN):
                dirs = write_fixtures(tmp, seed=seed)
                name = src.path[len(BUILTIN) :]
                if name not in dirs:
                    raise ValueError(
                        f"{src.label}: unknown builtin {name!r} (known: {', '.join(dirs)})"
                    )
                # the fixtures have train and test only: any other split name reads test
                split = src.split if src.split in ("train", "test") else "test"
                src = Source(dirs[name], None, split)
            resolved = resolve(src, data_root)
            raw = read(resolved)
            raw_rows += [(len(per_source), i, r) for i, r in enumerate(raw)]
            per_source.append(
                {"source": label, "read_from": resolved.where, "read": len(raw),
                 "kept": 0, "dropped": Counter(), "_src": src}
            )  # fmt: skip
    if shuffle_seed is not None:
        raw_rows = [raw_rows[j] for j in seed_permutation(len(raw_rows), shuffle_seed)]
    rows, seen, total_dropped = [], set(), Counter()
    for k, i, r in raw_rows:
        info = per_source[k]
        src = info["_src"]
        try:
            row = normalize_row(r, fmt, info["source"], i, src.split, src.subset, boxed)
        except Dropped as d:
            info["dropped"][d.reason] += 1
            continue
        if row["id"] in seen:
            info["dropped"]["duplicate_id"] += 1
            continue
        seen.add(row["id"])
        if src.subset is not None:  # e.g. MATH's subject: strata of the in-domain sample
            row["subset"] = src.subset
        rows.append(row)
        info["kept"] += 1
    for info in per_source:
        del info["_src"]
        total_dropped.update(info["dropped"])
        info["dropped"] = dict(info["dropped"])
    label = ", ".join(s["source"] for s in per_source)
    if not rows:
        raise _no_rows_error(label, total_dropped)
    n_kept = len(rows)
    rows = rows[:limit] if limit is not None else rows
    report = {
        "format": fmt,
        "sources": per_source,
        "read": sum(s["read"] for s in per_source),
        "kept": n_kept,
        "dropped": dict(total_dropped),
        "drop_reasons": {r: DROP_REASONS[r] for r in total_dropped},
        "limit": limit,
        "shuffle_seed": shuffle_seed,
        "rows": len(rows),
    }
    if fmt == "math":
        report["boxed"] = boxed
    return rows, report


def load_rows(
    source: str, fmt: str, split: str = "train", limit: int | None = None,
    data_root: str | None = None,
) -> list[dict]:  # fmt: skip
    """Normalised rows of one source string (a local file/folder, `id` or `id:subset`)."""
    from ftlab.llm.sources import parse_sources

    rows, _ = load_split(parse_sources(source, split, "source"), fmt, limit, data_root)
    return rows


# -- prompts and SFT records --------------------------------------------------------------------
def _seed003_fmt(fmt: str | None) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"prompt style 'seed003' needs the row format, one of {FORMATS}: {fmt!r}")
    return fmt


def prompt_for(row: dict, style: str, fmt: str | None = None) -> str:
    """The prompt a model sees; the completion continues right after it. seed003 (needs
    `fmt`): seed 003's user message, which the chat template wraps (generate/train)."""
    if style == "plain":
        return f"Question: {row['question']}\nAnswer:"
    if style == "reasoning":
        return f"{REASONING_INSTRUCTION}\nQuestion: {row['question']}\n"
    if style == "seed003":
        return f"{row['question']}\n\n{SEED003_INSTRUCTIONS[_seed003_fmt(fmt)]}"
    raise ValueError(f"unknown prompt style {style!r}; expected one of {STYLES}")


def seed003_target(row: dict, fmt: str) -> str:
    r"""Seed 003's GT-SFT target: GSM8K's solution (calculator annotations kept) with its
    "#### N" line replaced by "oxed{N}" (format_gsm8k_solution_with_boxed); MATH's solution
    as is; TriviaQA "The answer is: <value>"."""
    if _seed003_fmt(fmt) == "triviaqa":
        return f"The answer is: {row['answer']}"
    if fmt == "math":
        return row["solution"]
    raw = row.get("solution_raw")
    if not isinstance(raw, str):
        raise ValueError(
            f"row {row.get('id')}: no 'solution_raw' (rows made before seed 003's format "
            "existed: re-make the dataset's rows)"
        )
    m = SEED003_HASH_RE.search(raw)
    answer = m.group(1).replace(",", "").strip() if m else ""
    return f"{_SEED003_HASH_LINE_RE.sub('', raw).strip()}\n\\boxed{{{answer}}}"


def gt_completion(row: dict, style: str, fmt: str | None = None) -> str:
    """The ground-truth solution written as the completion of prompt_for(row, style)."""
    if style == "plain":
        return " " + row["solution"]
    if style == "seed003":
        return seed003_target(row, fmt)
    # The worked steps without GSM8K's closing "#### N" line: the answer goes into its tag.
    steps = re.sub(r"\n?####[^\n]*\s*$", "", row["solution"]).strip() or row["answer"]
    return f"<reasoning>{steps}</reasoning>\n<answer>{row['answer']}</answer>"


def sft_records(
    rows: list[dict], source: str, style: str = "reasoning", fmt: str | None = None
) -> list[dict]:
    """Prompt/completion records for TRL's SFTTrainer (loss on the completion only).

    source "gt": the dataset's solution (GT-SFT); "teacher": each row's "teacher_completion"
    (SF-SFT; teacher.generate_trajectories keeps only verified-correct ones). Style seed003
    (needs `fmt`): each record also says "chat_template": true - the trainer wraps its prompt
    as one user turn of the base model's chat template, as seed 003's VeRL SFT dataset does.
    """
    if source not in SOURCES:
        raise ValueError(f"unknown SFT source {source!r}; expected one of {SOURCES}")
    chat = {"chat_template": True} if style == "seed003" else {}
    records = []
    for i, row in enumerate(rows):
        if source == "gt":
            completion = gt_completion(row, style, fmt)
        else:
            completion = row.get("teacher_completion")
            if not isinstance(completion, str):
                raise ValueError(f"row {i} ({row.get('id')}) has no 'teacher_completion' field")
        records.append({"prompt": prompt_for(row, style, fmt), "completion": completion, **chat})
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
