from ftlab.llm.steps import evaluate_point
from ftlab.steps import setup_logging

setup_logging(snakemake.log[0])
evaluate_point(
    snakemake.config,
    snakemake.wildcards.model,
    int(snakemake.wildcards.step),
    snakemake.params.model_path,
    dict(snakemake.params.test_rows),
    {
        k: snakemake.output[k]
        for k in ("lm_eval", "lm_eval_samples", "in_domain", "in_domain_samples")
    },
    snakemake.params.cache,
)
