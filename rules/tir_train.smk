# TIR training: GRPO with multi-turn sandbox rollouts (tools off = the single-turn baseline).
# A job with several GPUs (resources.train: gpus, nodes, strategy) runs the GRPO trainer in every
# process that ftlab.launch starts (accelerate launch; srun across nodes), like rules/llm_train.smk.


rule train_tir:
    input:
        base=tir_base_inputs,
        rows=lambda wc: P.path("tir_rows", dataset=STUDY.run(wc.model).dataset),
    output:
        model=directory(P.model_dir),
    log:
        log_path("train", "{model}"),
    benchmark:
        benchmark_path("train", "{model}")
    conda:
        "../envs/llm.yaml"
    threads: config["threads"]
    resources:
        **job_shape("train"),
        mem_mb=scaled("train", "mem_mb"),
        runtime=scaled("train", "runtime"),
    params:
        run=lambda wc: {
            k: getattr(STUDY.run(wc.model), k) for k in ("tools", "mask_void_turns", "max_turns")
        },
        grpo=TIR["grpo"],
        base_model=tir_base_model(),
        prompt_template=lambda wc: tir_prompt_template(TIR, STUDY.run(wc.model).tools),
        sandbox=TIR["sandbox"],
        scorer=TIR["reward"],
        seed=lambda wc: STUDY.run(wc.model).seed,
        state_dir=lambda wc: P.path("train_state", model=wc.model),
        launch=launch_plan("train"),
    script:
        "../workflow/scripts/tir_train.py"
