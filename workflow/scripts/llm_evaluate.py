from ftlab.launch import as_plan, run_rule_stage
from ftlab.steps import setup_logging

setup_logging(snakemake.log[0])
# One process: evaluate_point runs right here (with several GPUs it holds the model on all of
# them: llm.lm_eval.parallel model, or vLLM); several (parallel: data): in every process the
# launcher starts, rank 0 writing the results.
plan = as_plan(snakemake.params.launch)
settings = dict(snakemake.params.settings)
settings["lm_eval"] = {**settings["lm_eval"], "parallel": "data" if plan.launched else "model"}
run_rule_stage(
    snakemake,
    "ftlab.llm.steps:evaluate_point",
    kwargs=dict(
        model_name=snakemake.wildcards.model,
        step=int(snakemake.wildcards.step),
        model_path=snakemake.params.model_path,
        test_rows=dict(snakemake.params.test_rows),
        formats=dict(snakemake.params.formats),
        **settings,
        outputs={
            k: snakemake.output[k]
            for k in ("lm_eval", "lm_eval_samples", "in_domain", "in_domain_samples")
        },
        cache_path=snakemake.params.cache,
        study=snakemake.params.study,
        release_weights=snakemake.params.release_weights,
        gpus=int(snakemake.resources.gpu),
    ),
)

# Provenance beside the results (git, host, versions, hashes, wall time); also indexes them.
from ftlab.provenance import write_job_provenance  # noqa: E402

write_job_provenance(snakemake, "evaluate", [*dict(snakemake.params.test_rows).values()])
