"""Load and validate a study config against config/schema.yaml (defaults filled in).

Every problem is reported with the dotted config key it concerns, before any job runs.

Why not `snakemake.utils.validate(config, schema)`: it stops at the first error, and it fills
a default by `setdefault(key, schema_default)`, so a nested section default (`data: {}`) is the
schema's own dict object, shared by every config validated in the process (the CLI and the
tests validate many). The 10-line validator below reports every problem at once and copies
each default; it is the same jsonschema recipe otherwise.
"""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import yaml

from ftlab.kinds import get_kind, kind_names

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "config" / "schema.yaml"


class ConfigError(ValueError):
    """A config that cannot describe a valid study; the message names the offending key."""


def _with_defaults(validator_class):
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_Validator = _with_defaults(jsonschema.Draft202012Validator)


def load_schema(path: str | Path = SCHEMA_PATH) -> dict:
    with open(path) as fh:
        # libyaml's safe loader when PyYAML has it: the same data, ~0.1 s less at every
        # Snakemake start (each SLURM job starts two).
        schema = yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    # The registry (ftlab.kinds) is the one list of study kinds.
    schema["properties"]["kind"]["enum"] = list(kind_names())
    return schema


def _key(error: jsonschema.ValidationError) -> str:
    parts = [str(p) for p in error.absolute_path]
    return ".".join(parts) if parts else "<top level>"


def validate_config(config: dict, schema: dict | None = None) -> dict:
    """Return a validated deep copy of `config` with defaults filled; raise ConfigError."""
    schema = schema or load_schema()
    config_keys = list(config)
    config = copy.deepcopy(config)
    validator = _Validator(schema)
    # Defaults are filled while validating; a second pass sees the completed config.
    errors = list(validator.iter_errors(config))
    if not errors:
        errors = list(validator.iter_errors(config))
    if errors:
        lines = []
        for err in sorted(errors, key=lambda e: list(map(str, e.absolute_path))):
            msg = err.message
            if err.validator == "oneOf":
                msg = f"{err.instance!r} is not valid here ({err.schema.get('description', '')})"
            lines.append(f"  config key '{_key(err)}': {msg}")
        raise ConfigError("invalid config:\n" + "\n".join(lines))
    _keep_own_sections(config, given=set(config_keys))
    _check_consistency(config)
    return config


def _keep_own_sections(cfg: dict, given: set[str]) -> None:
    """A study sets only its own kind's sections; other kinds' sections (filled with their
    defaults by the schema) are dropped, so scripts never see settings that do not apply."""
    kind = cfg["kind"]
    owner = {s: k for k in kind_names() if k != kind for s in get_kind(k).sections}
    foreign = sorted(s for s in given if s in owner)
    if foreign:
        lines = [
            f"  config key '{s}': belongs to studies of kind '{owner[s]}', not to this "
            f"'{kind}' study (set 'kind: {owner[s]}' or remove the section)"
            for s in foreign
        ]
        raise ConfigError("invalid config:\n" + "\n".join(lines))
    own = set(get_kind(kind).sections)
    for section in owner:
        if section not in own:
            cfg.pop(section, None)


def _check_consistency(cfg: dict) -> None:
    """Rules that a JSON schema cannot express (the kind's own check); each names its key."""
    problems = get_kind(cfg["kind"]).check(cfg) + _launch_problems(cfg)
    if problems:
        raise ConfigError("invalid config:\n" + "\n".join(f"  {p}" for p in problems))


# ftlab.device.MASTER_WEIGHTS (named here: validating a config must not import torch)
ONE_PROCESS_PRECISIONS = ("bf16_weights",)


def _launch_problems(cfg: dict) -> list[str]:
    """Job shapes (resources.<family>) that no launcher can run (ftlab.launch.plan_for), and
    a precision the trainer runs in one process only with a training job of several."""
    from ftlab.launch import LaunchError, plan_for

    problems = []
    for family, res in (cfg.get("resources") or {}).items():
        try:
            plan = plan_for(family, res, cfg.get("threads", 1))
        except LaunchError as err:
            problems.append(str(err))
            continue
        if family == "train" and cfg.get("precision") in ONE_PROCESS_PRECISIONS and plan.launched:
            problems.append(
                f"config key 'precision': {cfg['precision']} trains in one process, but "
                f"'resources.train' asks for {plan.world_size}; use precision bf16 (autocast) "
                "with several processes"
            )
        if family == "train" and cfg.get("torch_compile") and plan.launched:
            problems.append(
                "config key 'torch_compile': trains in one process, but 'resources.train' "
                f"asks for {plan.world_size}"
            )
    return problems


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys in a mapping without a word, so a second
    `seeds:` or a run listed twice would silently replace the first; here it is an error."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {seen[key]})",
                    key_node.start_mark,
                )  # fmt: skip
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> dict:
    """A config file's mapping; a missing or unreadable file, bad YAML or a repeated key is a
    ConfigError naming the file."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    if not path.is_file():
        raise ConfigError(f"config file {path} is not a file")
    try:
        with open(path, encoding="utf-8") as fh:  # a stream: YAML errors name the file
            raw = yaml.load(fh, Loader=_UniqueKeyLoader)  # noqa: S506
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping, not {type(raw).__name__}")
    return raw


def load_config(path: str | Path) -> dict:
    return validate_config(read_yaml(path))
