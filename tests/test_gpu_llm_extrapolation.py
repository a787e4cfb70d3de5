"""benchmarks/gpu_llm_eval.py's full-size extrapolation, against a hand computation: only the
scoring time scales with the request counts; the batch-size detections (one per call there,
one per request type in a real evaluation) are counted once."""

import importlib.util
from pathlib import Path

import pytest

SPEC = importlib.util.spec_from_file_location(
    "gpu_llm_eval", Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_llm_eval.py"
)
gpu_llm_eval = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(gpu_llm_eval)


def test_extrapolation_scales_scoring_and_counts_one_detection_per_request_type():
    proj = {
        "per_benchmark": {"a": (10, 3.0), "b": (20, 5.0), "ifeval": (2, 9.0)},
        "detect_s": {"a": 1.0, "b": 2.0, "ifeval": 1.0},
    }
    counts = {"a": 100, "b": 40, "ifeval": 10}
    minutes, naive = gpu_llm_eval.extrapolate_minutes(proj, counts)
    # scoring: a 100 x 0.2 s, b 40 x 0.15 s, ifeval 10 x 4 s; detections: max(1, 2) + 1
    assert minutes == pytest.approx((20 + 6 + 40 + 3) / 60)
    assert naive == pytest.approx((100 * 0.3 + 40 * 0.25 + 10 * 4.5) / 60)
