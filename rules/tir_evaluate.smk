# TIR evaluation: generation (model + sandbox) writes generations.jsonl; scoring reads it, so a
# scorer change (tir.scoring, this rule's params) re-runs scoring only. Generation runs in shards
# of tir.eval.shard_size problems, each kept on disk when done (a killed job resumes after the
# finished ones); with tir.eval.parallel data and several GPUs (resources.evaluate) ftlab.launch
# starts one process per GPU and rank r generates shards r, r + N, ... (rank 0 merges them).


rule tir_generate:
    input:
        model=tir_model_input,
        rows=tir_eval_rows,
    output:
        generations=P.tir_generations,
        info=P.tir_generation_info,
    log:
        log_path("tir_generate", "{model}", "checkpoint-{step}", "{eval_set}"),
    benchmark:
        benchmark_path("tir_generate", "{model}", "checkpoint-{step}", "{eval_set}")
    conda:
        "../envs/llm.yaml"
    threads: config["threads"]
    resources:
        **TIR_EVAL_JOB[1],
        mem_mb=scaled("evaluate", "mem_mb"),
        runtime=scaled("evaluate", "runtime"),
    params:
        model_path=tir_model_path,
        sampling=tir_sampling,
        prompt_template=lambda wc: tir_prompt_template(TIR, tir_sampling(wc)["tools"]),
        backend=TIR["eval"]["backend"],
        batch_size=TIR["eval"]["batch_size"],
        seed=TIR["eval"]["seed"],
        sandbox=TIR["sandbox"],
        shard_size=TIR["eval"]["shard_size"],
        # tir.eval.parallel itself is left out: the launch plan says how the job runs (a
        # launched plan is recorded); the records do not depend on it
        launch=TIR_EVAL_JOB[0],
    script:
        "../workflow/scripts/tir_generate.py"


rule tir_score:
    input:
        generations=P.tir_generations,
        rows=tir_eval_rows,
    output:
        scores=P.tir_scores,
        scored=P.tir_scored,
    log:
        log_path("tir_score", "{model}", "checkpoint-{step}", "{eval_set}"),
    benchmark:
        benchmark_path("tir_score", "{model}", "checkpoint-{step}", "{eval_set}")
    conda:
        "../envs/llm.yaml"
    resources:
        mem_mb=scaled("evaluate", "mem_mb"),
        runtime=scaled("evaluate", "runtime"),
    params:
        scorer=TIR["scoring"],
    script:
        "../workflow/scripts/tir_score.py"


rule tir_table:
    input:
        scores=lambda wc: list(tir_score_files().values()),
    output:
        table=P.tir_table,
    log:
        log_path("tir_table"),
    benchmark:
        benchmark_path("tir_table")
    conda:
        "../envs/llm.yaml"
    resources:
        mem_mb=scaled("evaluate", "mem_mb"),
        runtime=scaled("evaluate", "runtime"),
    params:
        scores=tir_score_files(),
    script:
        "../workflow/scripts/tir_table.py"
