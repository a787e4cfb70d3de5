"""The LLM preflight names every problem at once: a task whose Python dependency is missing, a
task that does not exist, a dataset that does not load, a source that does not resolve, a base
model whose config does not load; and `ftlab validate` runs it."""

import os
from pathlib import Path

import pytest
import yaml

from ftlab import cli
from ftlab.llm import preflight as pf
from ftlab.llm.tiny import build_tiny_causal_lm

FIXTURES = Path(__file__).resolve().parent / "fixtures"
TASKS = str(FIXTURES / "lm_eval_tasks")
BROKEN = str(FIXTURES / "lm_eval_tasks_preflight")
HUB = str(FIXTURES / "hub")
DATASETS = {
    "gsm8k": {"format": "gsm8k", "train": "openai/gsm8k:main", "test": "openai/gsm8k:main",
              "train_split": "train", "test_split": "test"},
}  # fmt: skip


def test_missing_package_missing_task_and_missing_data_named():
    problems = pf.check_benchmarks(
        {
            "ftlab_needs_missing_pkg": "acc",
            "ftlab_no_such_task": "acc",
            "ftlab_missing_data": "acc",
        },
        BROKEN,
    )
    assert len(problems) == 3, problems
    assert (
        "'ftlab_needs_missing_pkg': Python package 'ftlab_fixture_missing_package' is missing"
        in problems[0]
    )  # noqa: E501
    assert "'ftlab_no_such_task' (llm.benchmarks) does not exist" in problems[1]
    assert "'ftlab_missing_data': its dataset does not load" in problems[2]
    assert "no_such_file.jsonl" in problems[2]


def test_good_tasks_pass_and_ifeval_hints():
    assert pf.check_benchmarks({"ftlab_tiny_mc": "acc_norm", "ftlab_tiny_arith": "exact_match"},
                               TASKS) == []  # fmt: skip
    assert pf.PIP_HINTS["langdetect"] == "lm-eval[ifeval]"
    # ifeval's own imports are installed by the llm extra (pyproject: lm-eval[hf,ifeval]).
    import immutabledict  # noqa: F401
    import langdetect  # noqa: F401
    import nltk  # noqa: F401


def test_sources_and_models(tmp_path):
    assert pf.check_sources(DATASETS, HUB) == []
    math = {"format": "math", "train": str(tmp_path / "nope.jsonl"), "test": "builtin:gsm8k",
            "train_split": "train", "test_split": "test"}  # fmt: skip
    bad = {"gsm8k": {**DATASETS["gsm8k"], "test": "openai/gsm8k:socratic"}, "math": math}
    problems = pf.check_sources(bad, HUB)
    assert len(problems) == 2
    assert problems[0].startswith("'llm.datasets.gsm8k.test': openai/gsm8k:socratic (test)")
    assert problems[1].startswith("'llm.datasets.math.train'") and "HF_HUB_OFFLINE" in problems[1]
    model = build_tiny_causal_lm(tmp_path / "m", seed=0, layers=1, hidden=16, heads=2)
    assert pf.check_models({"llm.base_model": str(model), "llm.teacher.model": "tiny"}) == []
    (p,) = pf.check_models({"llm.base_model": str(tmp_path / "no_model")})
    assert p == f"'llm.base_model': model path '{tmp_path / 'no_model'}' does not exist"
    (empty := tmp_path / "empty_model").mkdir()  # a folder that is no model
    (p,) = pf.check_models({"llm.base_model": str(empty)})
    assert p.startswith("'llm.base_model': model config of") and "does not load" in p


def test_include_path_not_a_folder_is_a_problem_naming_the_key(tmp_path):
    missing = str(tmp_path / "tasks")
    assert pf.check_benchmarks({"ftlab_tiny_mc": "acc"}, missing) == [
        f"'llm.lm_eval.include_path': '{missing}' is not a folder (of lm-eval task YAMLs)"
    ]
    (p,) = pf.check_benchmarks({"x": "acc"}, missing, key="mtl.eval.lm_eval.include_path")
    assert p.startswith("'mtl.eval.lm_eval.include_path'")


def test_unreachable_hub_makes_the_checks_offline_not_hang(monkeypatch):
    import http.server
    import socket
    import threading
    import time

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    t0 = time.perf_counter()
    assert pf.hub_reachable(endpoint=closed) is False
    assert time.perf_counter() - t0 < 5

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:  # any HTTP answer, an error status included, means the hub is there
        assert pf.hub_reachable(endpoint=f"http://127.0.0.1:{server.server_port}") is True
    finally:
        server.shutdown()

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", closed)
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    assert pf.go_offline_if_unreachable() is True
    assert os.environ["HF_HUB_OFFLINE"] == "1" and hub_constants.HF_HUB_OFFLINE is True
    assert pf.go_offline_if_unreachable() is False  # already offline: no probe


def test_run_preflight_raises_one_message_naming_each_problem(tmp_path):
    out = tmp_path / "preflight.json"
    with pytest.raises(pf.PreflightError) as err:
        pf.run_preflight(out=str(out), base_model=str(tmp_path / "no_model"),
                         datasets=DATASETS, data_root=None,
                         benchmarks={"ftlab_needs_missing_pkg": "acc"},
                         include_path=BROKEN)  # fmt: skip
    msg = str(err.value)
    assert msg.startswith("LLM preflight: 4 problem(s):")
    for part in ("llm.base_model", "llm.datasets.gsm8k.train", "llm.datasets.gsm8k.test",
                 "ftlab_fixture_missing_package"):  # fmt: skip
        assert part in msg
    assert not out.exists()  # nothing written: the GPU jobs that wait for it never start
    report = pf.run_preflight(out=str(out), base_model="tiny", datasets=DATASETS, data_root=HUB,
                              benchmarks={"ftlab_tiny_mc": "acc"}, include_path=TASKS)  # fmt: skip
    assert out.exists() and report["problems"] == []


def test_ftlab_validate_runs_the_preflight(tmp_path, capsys):
    cfg = {"kind": "llm", "study": "pf", "llm": {
        "datasets": DATASETS, "data_root": HUB, "methods": ["gt_sft"],
        "benchmarks": {"ftlab_needs_missing_pkg": "acc"},
        "lm_eval": {"include_path": BROKEN}}}  # fmt: skip
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert cli.main(["validate", str(path)]) == 3
    assert "ftlab_fixture_missing_package" in capsys.readouterr().err
    assert cli.main(["validate", "--no-preflight", str(path)]) == 0
    cfg["llm"]["benchmarks"] = {"ftlab_tiny_mc": "acc"}
    cfg["llm"]["lm_eval"]["include_path"] = TASKS
    path.write_text(yaml.safe_dump(cfg))
    assert cli.main(["validate", str(path)]) == 0
    assert "preflight passed" in capsys.readouterr().out
