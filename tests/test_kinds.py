"""The study-kind registry: one entry per kind, and nothing else branches on the kind."""

import re
from pathlib import Path

import pytest

from ftlab.config import ConfigError, load_config, load_schema, validate_config
from ftlab.kinds import COMMON_KEYS, get_kind, kind_names, matrix_of

REPO = Path(__file__).resolve().parents[1]
LLM_MIN = {
    "kind": "llm",
    "llm": {
        "datasets": {"g": {"format": "gsm8k", "train": "a", "test": "b"}},
        "methods": ["gt_sft"],
        "benchmarks": {"arc_easy": "acc"},
    },
}


def test_schema_kinds_are_the_registry():
    assert load_schema()["properties"]["kind"]["enum"] == list(kind_names())
    with pytest.raises(KeyError, match="unknown study kind 'bogus'"):
        get_kind("bogus")


@pytest.mark.parametrize("name", kind_names())
def test_each_kind_names_existing_rules_and_sections(name):
    kind = get_kind(name)
    assert kind.name == name
    for rules_file in kind.rule_files:
        assert (REPO / "rules" / rules_file).is_file(), rules_file
    props = load_schema()["properties"]
    for section in kind.sections:
        assert section in props, f"{name}: section {section!r} missing from config/schema.yaml"
    # the report rules it runs in the head process under a cluster executor are its own rules
    text = "".join((REPO / "rules" / f).read_text() for f in kind.rule_files)
    rules = set(re.findall(r"^rule (\w+):$", text, re.M))
    assert set(kind.report_rules) <= rules, set(kind.report_rules) - rules


def test_report_in_head_unless_opted_out():
    from ftlab.slurm import report_in_head

    assert report_in_head({}) and report_in_head({"FTLAB_REPORT_ON_CLUSTER": "0"})
    assert not report_in_head({"FTLAB_REPORT_ON_CLUSTER": "1"})


def test_every_schema_key_is_common_or_one_kinds_section():
    owned = {s for name in kind_names() for s in get_kind(name).sections}
    for key in load_schema()["properties"]:
        assert key in COMMON_KEYS or key in owned, f"top-level key {key!r} belongs to no kind"


def test_sections_belong_to_one_kind():
    seen = {}
    for name in kind_names():
        for section in get_kind(name).sections:
            assert section not in seen, f"{section!r} claimed by {seen.get(section)} and {name}"
            seen[section] = name


def test_a_study_keeps_only_its_own_sections():
    world = validate_config({"study": "w"})
    llm = validate_config({"study": "l", **LLM_MIN})
    assert "llm" not in world and {"data", "model", "eval"} <= set(world)
    assert "llm" in llm and not {"data", "model", "eval", "representations"} & set(llm)


def test_another_kinds_section_is_named():
    with pytest.raises(ConfigError) as err:
        validate_config({"study": "l", **LLM_MIN, "pretrain": {"lr": 0.1}})
    assert "config key 'pretrain': belongs to studies of kind 'worldmodel'" in str(err.value)
    with pytest.raises(ConfigError, match="config key 'llm': belongs to studies of kind 'llm'"):
        validate_config({"study": "w", "llm": {}})


# every shipped and test config, so a new one is covered without editing this list
SHIPPED_CONFIGS = sorted(
    str(p.relative_to(REPO))
    for pattern in ("config/config.yaml", "config/experiments/*.yaml", "tests/config_*.yaml")
    for p in REPO.glob(pattern)
)


@pytest.mark.parametrize("path", SHIPPED_CONFIGS)
def test_unit_names_match_the_model_wildcard(path):
    cfg = load_config(REPO / path)
    matrix = matrix_of(cfg)
    pattern = re.compile(get_kind(cfg["kind"]).model_pattern)
    assert matrix.units
    for name, unit in matrix.units.items():
        assert pattern.fullmatch(name), name
        assert matrix.unit(name) is unit
        assert set(unit.eval_steps) <= set(unit.saved_steps)
        assert unit.final_step == unit.saved_steps[-1]
    assert matrix.summary() and matrix.plan()


def test_no_kind_branching_outside_the_kinds():
    """Snakefile, common.smk, the CLI and config loading ask the registry instead."""
    for rel in ("Snakefile", "rules/common.smk", "src/ftlab/cli.py", "src/ftlab/config.py"):
        text = (REPO / rel).read_text()
        for needle in ("IS_LLM", '== "llm"', '== "worldmodel"', "LLMStudy", "Study("):
            assert needle not in text, f"{rel} branches on the kind ({needle})"
