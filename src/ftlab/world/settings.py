"""What each world-model rule takes from the config: one function per rule.

The rule records the result as `params` (so Snakemake re-runs it when a setting changes) and
its script passes exactly these values to the stage function in ftlab.steps; benchmarks and
the CLI call the same functions. A setting thus has one path from the config to the code.
`study` (the matrix) may be passed in to avoid rebuilding it for every job of a large study.
"""

from __future__ import annotations

from ftlab.study import Study, mixture_tasks

# Config sections that define the matrix (which models exist, what they train on, which
# checkpoints are evaluated): what tables and plots need to name and order the models.
MATRIX_SECTIONS = ("study", "seeds", "data", "pretrain", "finetune", "finetunes", "eval")


def cities(cfg: dict) -> dict:
    d = cfg["data"]
    return {
        "min_population": d["min_population"],
        "max_cities": d["max_cities"],
        "n_atlantis": d["n_atlantis"],
        "atlantis_center": list(d["atlantis_center"]),
        "atlantis_sigma": d["atlantis_sigma"],
        "seed": d["seed"],
    }


def split_sizes(cfg: dict, variant: str) -> tuple[int, int]:
    """(train rows, test rows) of one task's split; with data.elicitation_source disjoint the
    atlantis train rows hold the elicitation rows at their end, with paper the elicitation rows
    are sampled from the fine-tuning rows (see ftlab.world.datasets.make_mixture)."""
    d = cfg["data"]
    if variant == "no_atlantis":
        n_train = d["pretrain_rows_per_task"]
    elif d["elicitation_source"] == "disjoint":
        n_train = d["finetune_atlantis_rows"] + d["elicitation_rows"]
    else:
        n_train = max(d["finetune_atlantis_rows"], d["elicitation_rows"])
    return n_train, d["test_rows_per_set"]


# The study-wide task options (ftlab.world.tasks.TASK_OPTIONS; not imported here, so that
# the workflow does not load numpy and pandas to build params), each a key of config data.
TASK_OPTIONS = ("inside_sampler", "crossing_rule", "coincident_cities")


def task_split(cfg: dict, variant: str) -> dict:
    n_train, n_test = split_sizes(cfg, variant)
    return {
        "n_train": n_train,
        "n_test": n_test,
        "seed": cfg["data"]["seed"],
        "task_options": {k: cfg["data"][k] for k in TASK_OPTIONS},
        "split_overlap": cfg["data"]["split_overlap"],
    }


def multitask(cfg: dict, study: Study | None = None) -> dict:
    # The rule lists its inputs in this task order.
    return {"tasks": list((study or Study(cfg)).tasks), "seed": cfg["data"]["seed"]}


def mixture(cfg: dict, name: str, study: Study | None = None) -> dict:
    d = cfg["data"]
    return {
        "trained_tasks": list(mixture_tasks(name)),
        # The rule lists the atlantis inputs in the order of the study's tasks.
        "tasks": list((study or Study(cfg)).tasks),
        "n_no_atlantis": d["finetune_no_atlantis_rows"],
        "n_atlantis": d["finetune_atlantis_rows"],
        "n_elicitation": d["elicitation_rows"],
        "seed": d["seed"],
        "elicitation": d["elicitation_source"],
    }


def training(cfg: dict, model: str, study: Study | None = None) -> dict:
    """Everything that determines a model's weights (and where it trains)."""
    spec = (study or Study(cfg)).model(model)
    settings = {
        "model_name": model,
        "model_cfg": dict(cfg["model"]),
        "training": dict(spec.training),
        "seed": spec.seed,
        "total_steps": spec.total_steps,
        "saved_steps": list(spec.saved_steps),
        "precision": cfg["precision"],
        "device": cfg["device"],
        "cuda_graphs": cfg["cuda_graphs"],
        "meta": {
            "study": cfg["study"],
            "kind": spec.kind,
            "trained_tasks": list(spec.trained_tasks),
            "mixture": spec.mixture or "multitask",
        },
    }
    for key in ("tf32", "torch_compile"):  # only a non-default choice enters params:
        if cfg[key]:  # finished models stay done
            settings[key] = True
    return settings


def multitask_set_rows(cfg: dict) -> int:
    """Test rows of the multitask eval set: every study task's test rows (rows_per_set trims
    each set, the multitask one included, to at most that many)."""
    rows = len(cfg["data"]["tasks"]) * cfg["data"]["test_rows_per_set"]
    per_set = cfg["eval"]["rows_per_set"]
    return rows if per_set is None else min(rows, per_set)


def evaluation(cfg: dict, model: str, step: int) -> dict:
    settings = {
        "rows_per_set": cfg["eval"]["rows_per_set"],
        "batch_size": cfg["eval"]["batch_size"],
        "device": cfg["device"],
        # These change the scores, so they always enter params.
        "precision": cfg["eval"]["precision"],
        "answer_parsing": cfg["eval"]["answer_parsing"],
        "max_new_tokens": cfg["eval"]["max_new_tokens"],
        "meta": {"model": model, "step": int(step), "study": cfg["study"]},
    }
    # The decoder never changes the answers (tests/test_decode.py): only a non-default choice
    # enters params, so the defaults do not re-run finished evaluations.
    # Only where it trims (the multitask set has more rows), so it re-runs nothing else.
    cap = cfg["eval"]["multitask_rows"]
    if cap is not None and cap < multitask_set_rows(cfg):
        settings["multitask_rows"] = cap
    if cfg["eval"]["decode"] != "auto":
        settings["decode"] = cfg["eval"]["decode"]
    if not cfg["cuda_graphs"]:
        settings["cuda_graphs"] = False
    return settings


def probe(cfg: dict) -> dict:
    """ftlab.represent.fit_probes keyword arguments (section ``representations``)."""
    r = cfg["representations"]
    return {
        "probe": r["probe"],
        "alpha": r["probe_alpha"],
        "n_train": r["probe_train_cities"],
        "n_test": r["probe_test_cities"],
        "atlantis_n_train": r["atlantis_probe_train_cities"],
        "atlantis_n_baseline": r["atlantis_probe_baseline_cities"],
        "seed": r["probe_seed"],
    }


def representation(cfg: dict, model: str, step: int, study: Study | None = None) -> dict:
    return {
        "probe_task": (study or Study(cfg)).model(model).probe_task,
        "layer": min(cfg["representations"]["layer"], cfg["model"]["layers"]),
        "device": cfg["device"],
        "probe": probe(cfg),
        "meta": {"model": model, "step": int(step)},
    }


def matrix(cfg: dict) -> dict:
    """The part of the config that rebuilds the study matrix (ftlab.study.Study)."""
    return {k: cfg[k] for k in MATRIX_SECTIONS}


def tables(cfg: dict) -> dict:
    return {"matrix": matrix(cfg), "summary": dict(cfg["tables"])}
