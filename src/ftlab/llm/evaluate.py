"""Resumable evaluation of LLM checkpoints: lm-eval benchmarks and in-domain generation.

The parts, each in its own module:
- ``ftlab.llm.cache``: ``SampleCache`` (one sqlite row per answered request) and ``CachedLM``,
  the lm-eval model that answers from it and commits new answers chunk by chunk;
- ``ftlab.llm.lm_eval_runner.run_lm_eval``: all lm-eval benchmarks with one model load;
- ``ftlab.llm.in_domain``: greedy accuracy on the fine-tuning task's test rows
  (``score_in_domain`` returns the result, ``evaluate_in_domain`` writes it);
- ``ftlab.llm.generate.HFGenerator``: the HF generator (shared with the teacher);
- ``ftlab.llm.fingerprint``: which model a cached answer or result file belongs to.

A job killed by a time limit loses at most one chunk; the re-run recomputes nothing else and
gives the same metrics. Result files are written samples first and metrics last (atomically),
so an existing metrics file implies a complete samples file.
"""

from ftlab.llm.cache import CRASH_ENV, CRASH_EXIT_CODE, DEFAULT_CHUNK, CachedLM, SampleCache
from ftlab.llm.fingerprint import model_fingerprint
from ftlab.llm.generate import HFGenerator
from ftlab.llm.in_domain import evaluate_in_domain, score_in_domain
from ftlab.llm.lm_eval_runner import portable_tasks, run_lm_eval

__all__ = [
    "CRASH_ENV",
    "CRASH_EXIT_CODE",
    "DEFAULT_CHUNK",
    "CachedLM",
    "HFGenerator",
    "SampleCache",
    "evaluate_in_domain",
    "model_fingerprint",
    "portable_tasks",
    "run_lm_eval",
    "score_in_domain",
]
