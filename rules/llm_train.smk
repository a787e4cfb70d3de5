# LLM training through TRL: gt_sft / teacher_sft (SFTTrainer) and grpo (GRPOTrainer). A killed
# job resumes from train_state/<run>/ on re-run; checkpoints are published when it finishes.
# A job with several GPUs (resources.train: gpus, nodes, strategy) runs the Trainer in every
# process that ftlab.launch starts (accelerate launch; srun across nodes).


rule train_llm:
    input:
        base=llm_base_inputs,
        data=llm_train_data,
        preflight=llm_preflight_input,
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
        base=lambda wc: (TINY_BASE_CHECKPOINT if STUDY.tiny_base else config["llm"]["base_model"]),
        state_dir=lambda wc: P.path("train_state", model=wc.model),
        recipe=lambda wc: STUDY.recipe(wc.model),
        run=lambda wc: {
            k: getattr(STUDY.run(wc.model), k)
            for k in ("method", "dataset", "fmt", "seed", "trainer", "records")
        },
        checkpoint_dtype=config["llm"]["checkpoint_dtype"],
        prompt_format=config["llm"]["prompt_format"],
        study=config["study"],
        launch=launch_plan("train"),
    script:
        "../workflow/scripts/llm_train.py"
