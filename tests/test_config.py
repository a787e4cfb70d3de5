"""Schema validation: defaults are filled, and every bad key is named before any job runs."""

import re
import subprocess
import sys

import pytest
import yaml

from ftlab.config import ConfigError, load_config, validate_config
from ftlab.kinds import matrix_of
from ftlab.study import Study


def test_defaults_are_the_papers_settings():
    cfg = validate_config({"study": "x"})
    assert cfg["model"] == {
        "layers": 6,
        "hidden": 128,
        "heads": 4,
        "ffn": 512,
        "max_length": 256,
        "init_std": 0.1,
    }
    assert cfg["pretrain"]["lr"] == 3e-4 and cfg["pretrain"]["batch_size"] == 128
    assert cfg["finetune"]["lr"] == 1e-5 and cfg["finetune"]["epochs"] == 30
    assert cfg["data"]["finetune_atlantis_rows"] == 100000
    assert cfg["data"]["elicitation_rows"] == 256
    assert cfg["eval"]["checkpoints"] == "last"


@pytest.mark.parametrize(
    "raw, key",
    [
        ({"study": "x", "pretrain": {"lr": -1}}, "pretrain.lr"),
        ({"study": "x", "pretrain": {"lrr": 1}}, "pretrain"),
        ({"study": "x", "data": {"tasks": ["distance", "bogus"]}}, "data.tasks.1"),
        ({"study": "x", "seeds": "1"}, "seeds"),
        ({"study": "x", "model": {"layers": 1.5}}, "model.layers"),
        ({"study": "x", "finetunes": {"ftwb2": [22]}}, "finetunes.ftwb2"),
        ({"study": "x", "eval": {"checkpoints": "first"}}, "eval.checkpoints"),
        ({"study": "bad name"}, "study"),
        ({"study": ".."}, "study"),
        ({"study": "a/b"}, "study"),
        ({"study": ".hidden"}, "study"),
        ({"study": "x", "unknown_section": {}}, "<top level>"),
    ],
)
def test_schema_errors_name_the_key(raw, key):
    with pytest.raises(ConfigError) as err:
        validate_config(raw)
    assert f"config key '{key}'" in str(err.value)


@pytest.mark.parametrize(
    "raw, needle",
    [
        ({"study": "x", "model": {"hidden": 30, "heads": 4}}, "model.hidden"),
        (
            {"study": "x", "model": {"layers": 2}, "representations": {"layer": 5}},
            "representations.layer",
        ),
        (
            {"study": "x", "data": {"tasks": ["angle"]}, "finetunes": {"ftwb1": [1]}},
            "finetunes.ftwb1",
        ),
        (
            {"study": "x", "data": {"tasks": ["angle", "distance"]}, "finetunes": {"ftwb2": [1]}},
            "finetunes.ftwb2",
        ),
        ({"study": "x", "eval": {"rows_per_set": 20000}}, "eval.rows_per_set"),
        ({"study": "x", "data": {"pretrain_rows_per_task": 10}}, "data.finetune_no_atlantis_rows"),
        (  # the paper's distance pairs are distinct: 64 cities have 2,016
            {"study": "x", "data": {"max_cities": 64, "pretrain_rows_per_task": 2000}},
            "data.split_overlap' paper draws distinct city pairs for distance: "
            "'data.pretrain_rows_per_task' + 'test_rows_per_set' = 12000 rows exceed the 2016",
        ),
    ],
)
def test_cross_key_errors_name_the_key(raw, needle):
    with pytest.raises(ConfigError, match=re.escape(needle)):
        validate_config(raw)


def test_distinct_pairs_fit_or_exclude_is_chosen():
    def data(**kw):
        return {"study": "x", "data": {"max_cities": 64, "finetune_no_atlantis_rows": 100,
                                       "test_rows_per_set": 16, **kw}}  # fmt: skip

    validate_config(data(pretrain_rows_per_task=2000))  # 2,016 rows = the 2,016 pairs
    with pytest.raises(ConfigError, match="distinct city pairs"):
        validate_config(data(pretrain_rows_per_task=2001))
    validate_config(data(pretrain_rows_per_task=2001, split_overlap="exclude"))  # any number
    validate_config(data(pretrain_rows_per_task=5000, tasks=["angle"]))  # no distance task


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("study: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="is not a file"):
        load_config(tmp_path)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("study: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="is not UTF-8"):
        load_config(latin)
    listed = tmp_path / "list.yaml"
    listed.write_text("- study: x\n")
    with pytest.raises(ConfigError, match="must hold a mapping, not list"):
        load_config(listed)


def test_a_repeated_key_is_an_error_not_a_lost_setting(repo, tmp_path):
    """PyYAML keeps the last of two equal keys; a second `seeds:` or a model listed twice would
    replace the first without a word."""
    twice = tmp_path / "twice.yaml"
    twice.write_text("study: x\nfinetunes:\n  ftwb1: [1]\n  ftwb1: [2]\n")
    with pytest.raises(ConfigError, match=r"duplicate key 'ftwb1' \(first at line 3\)"):
        load_config(twice)
    seeds = tmp_path / "seeds.yaml"
    seeds.write_text("study: x\nseeds: [1]\nseeds: [2]\n")
    where = r"(?s)key 'seeds' \(first at line 2\).*seeds.yaml\", line 3"
    with pytest.raises(ConfigError, match=where):
        load_config(seeds)
    nested_ok = tmp_path / "ok.yaml"  # equal keys in different mappings are fine
    nested_ok.write_text("study: x\npretrain: {lr: 0.001}\nfinetune: {lr: 0.001}\n")
    assert load_config(nested_ok)["finetune"]["lr"] == 0.001
    cmd = [sys.executable, "-m", "snakemake", "-n", "--configfile", str(twice),
           "-s", str(repo / "Snakefile"), "-d", str(tmp_path)]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode != 0
    assert "duplicate key 'ftwb1'" in out.stdout + out.stderr
    status = subprocess.run([sys.executable, "-m", "ftlab.cli", "status", str(twice)],
                            capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    assert status.returncode == 2 and "duplicate key 'ftwb1'" in status.stderr
    assert "Traceback" not in status.stderr
    missing = subprocess.run([sys.executable, "-m", "ftlab.cli", "status", "nope.yaml"],
                             capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    assert missing.returncode == 2 and "config file not found: nope.yaml" in missing.stderr


def test_shipped_configs_are_valid(repo):
    for path in [
        repo / "config/config.yaml",
        repo / "tests/config_tiny.yaml",
        *sorted((repo / "config/experiments").glob("*.yaml")),
    ]:
        assert matrix_of(load_config(path)).units  # the matrix of the config's own kind


def test_scale_knobs_change_sizes_not_definitions(repo):
    small = Study(load_config(repo / "config/config.yaml"))
    paper = Study(load_config(repo / "config/experiments/paper_exp1.yaml"))
    for name, spec in small.models.items():
        if spec.kind == "base":  # pretrained on the study's tasks (data.tasks may pick some)
            assert spec.trained_tasks == small.tasks
            assert set(small.tasks) <= set(paper.model(name).trained_tasks)
        else:  # ftwb1-i / ftwb2-k mean the same tasks at every scale
            assert spec.trained_tasks == paper.model(name).trained_tasks
    # the same eval sets, in the same order, for the tasks the study has
    assert small.eval_sets() == [s for s in paper.eval_sets() if s in small.eval_sets()]


def test_snakemake_refuses_a_bad_config_before_any_job(repo, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"study": "x", "pretrain": {"batch_size": 0}}))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-n",
            "--configfile",
            str(bad),
            "-s",
            str(repo / "Snakefile"),
            "-d",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0
    assert "config key 'pretrain.batch_size'" in out.stdout + out.stderr
    assert not (tmp_path / "results").exists()


def test_cli_validate_and_plan(repo):
    ok = subprocess.run(
        [
            sys.executable,
            "-m",
            "ftlab.cli",
            "plan",
            str(repo / "config/experiments/paper_exp1.yaml"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "87 training jobs, 1305 per-set evaluation results" in ok.stdout


def test_schema_reads_the_same_with_either_yaml_loader():
    """load_schema uses libyaml's loader where PyYAML has it; the data must be what the pure
    Python safe loader reads (the kind enum aside, which the registry fills in)."""
    import yaml

    from ftlab.config import SCHEMA_PATH, load_schema

    plain = yaml.safe_load(SCHEMA_PATH.read_text())
    loaded = load_schema()
    plain["properties"]["kind"]["enum"] = loaded["properties"]["kind"]["enum"]
    assert loaded == plain
