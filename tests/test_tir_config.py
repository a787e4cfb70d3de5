"""TIR config checks: every shipped TIR config's prompt template can be filled, a template
that cannot names 'tir.prompt_template', and the schema parses as intended."""

from pathlib import Path

import pytest
import yaml

from ftlab.config import ConfigError, load_schema, validate_config

REPO = Path(__file__).resolve().parents[1]


def _tir_configs() -> list[Path]:
    paths = sorted((REPO / "config/experiments").glob("*.yaml")) + sorted(
        (REPO / "tests").glob("*.yaml")
    )
    return [p for p in paths if (yaml.safe_load(p.read_text()) or {}).get("kind") == "tir"]


def test_shipped_tir_configs_are_found():
    names = {p.name for p in _tir_configs()}
    assert {"simpletir_qwen2.5_7b.yaml", "config_tir_tiny.yaml"} <= names


@pytest.mark.parametrize("path", _tir_configs(), ids=lambda p: p.name)
def test_shipped_tir_config_prompt_template_formats(path):
    cfg = validate_config(yaml.safe_load(path.read_text()))
    template = cfg["tir"]["prompt_template"]
    # what the generate (tir/steps.py) and train (tir/train.py) jobs do with it
    prompt = template.format(question="What is 6 * 7?")
    assert "What is 6 * 7?" in prompt


def test_seed_002_prompt_is_simpletirs():
    # recipe/simpletir/config/simpletir_trainer.yaml (data.prompt) + the question, in the
    # Qwen2.5 chat template (train.sh APPLY_CHAT_TEMPLATE=True)
    cfg = validate_config(
        yaml.safe_load((REPO / "config/experiments/simpletir_qwen2.5_7b.yaml").read_text())
    )
    prompt = cfg["tir"]["prompt_template"].format(question="Q?")
    assert prompt.startswith("<|im_start|>system\n")
    assert "<|im_start|>user\nSolve the following problem step by step. You now have" in prompt
    assert "```py\nanswer = 5 + 3 + 1294.678\nfinal_answer(answer)\n```\n" in prompt
    assert "\\boxed{'The final answer goes here.'}\n\nUser Question:\nQ?<|im_end|>\n" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize(
    "template",
    ["Put it in \\boxed{}. {question}", "{question} {context}", "{question", "no field"],
)
def test_bad_prompt_template_names_the_key(template):
    cfg = yaml.safe_load((REPO / "tests/config_tir_tiny.yaml").read_text())
    cfg["tir"]["prompt_template"] = template
    with pytest.raises(ConfigError, match=r"'tir\.prompt_template'"):
        validate_config(cfg)


def test_doubled_braces_are_accepted():
    cfg = yaml.safe_load((REPO / "tests/config_tir_tiny.yaml").read_text())
    cfg["tir"]["prompt_template"] = "Answer in \\boxed{{}}. {question}\n"
    validate_config(cfg)


def test_sandbox_wall_limit_is_simpletirs_run_timeout():
    # SimpleTIR sandbox/local_sandbox.py and internal_sandbox.py: run_timeout=3.0
    from ftlab.tir.sandbox import SandboxLimits

    seed = validate_config(
        yaml.safe_load((REPO / "config/experiments/simpletir_qwen2.5_7b.yaml").read_text())
    )
    assert seed["tir"]["sandbox"]["wall_seconds"] == 3
    cfg = yaml.safe_load((REPO / "tests/config_tir_tiny.yaml").read_text())
    del cfg["tir"]["sandbox"]
    assert validate_config(cfg)["tir"]["sandbox"]["wall_seconds"] == 3  # the schema default
    assert SandboxLimits().wall_seconds == 3.0


# JSON-schema keywords config/schema.yaml uses; any other key in a schema node is a parse
# accident, e.g. an unquoted comma in a flow-mapping description ({description: a, b}) that
# cuts the description and makes " b" a key of its own
SCHEMA_KEYWORDS = {
    "$schema", "title", "type", "default", "description", "properties", "additionalProperties",
    "required", "enum", "const", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "items", "minItems", "maxItems", "uniqueItems", "oneOf", "anyOf", "allOf", "not",
    "propertyNames", "pattern", "minLength", "maxLength", "patternProperties", "if", "then",
    "else", "examples", "format", "$ref", "$defs", "definitions", "minProperties",
}  # fmt: skip


def _schema_nodes(node, where="schema"):
    yield where, node
    for key in ("properties", "patternProperties", "$defs", "definitions"):
        for name, sub in (node.get(key) or {}).items():
            yield from _schema_nodes(sub, f"{where}.{name}")
    for key in ("items", "additionalProperties", "propertyNames", "not", "if", "then", "else"):
        if isinstance(node.get(key), dict):
            yield from _schema_nodes(node[key], f"{where}.{key}")
    for key in ("oneOf", "anyOf", "allOf"):
        for i, sub in enumerate(node.get(key) or []):
            yield from _schema_nodes(sub, f"{where}.{key}[{i}]")


def test_every_schema_description_parses_as_one_string():
    nodes = list(_schema_nodes(load_schema()))
    assert len(nodes) > 100
    bad_keys = [(w, k) for w, n in nodes for k in n if k not in SCHEMA_KEYWORDS]
    assert not bad_keys, bad_keys
    bad = [w for w, n in nodes if "description" in n and not isinstance(n["description"], str)]
    assert not bad, bad
    tir = load_schema()["properties"]["tir"]["properties"]
    tools = tir["eval"]["properties"]["samplings"]["additionalProperties"]["properties"]["tools"]
    assert tools["description"].endswith("(false = single-turn, nothing runs).")
