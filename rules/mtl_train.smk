# Multi-task training: one run per method x seed. A checkpoint rule: the run's manifest
# (models/<run>/mtl_manifest.json) says which checkpoints early stopping and keep_last left.
# A killed job resumes from train_state/<run>/ on re-run. sft/grpo: a job with several GPUs
# (resources.train: gpus, nodes, strategy) runs the TRL trainer in every process that
# ftlab.launch starts; the world objective trains in one process.
if MTL_WORLD and _plan("train").launched:
    raise WorkflowError(
        "config keys 'resources.train.gpus' / 'processes' / 'nodes' ask for several "
        "processes, but mtl.objective world trains in one process: set them to 1"
    )
if not MTL_WORLD and _plan("train").launched and RES["train"]["strategy"] != "ddp":
    raise WorkflowError(
        f"config key 'resources.train.strategy' is {RES['train']['strategy']!r}: multi-task "
        "sft/grpo runs data parallel only (strategy: ddp) - gradient surgery needs every "
        "task's full gradient in each process"
    )


checkpoint mtl_train:
    input:
        train=P.mtl_train_rows,
        validation=P.mtl_validation_rows,
        base=mtl_base_inputs(),
    output:
        model=directory(P.model_dir),
    log:
        log_path("train", "{model}"),
    benchmark:
        benchmark_path("train", "{model}")
    conda:
        "../envs/torch.yaml" if MTL_WORLD else "../envs/llm.yaml"
    threads: config["threads"]
    resources:
        **job_shape("train"),
        mem_mb=scaled("train", "mem_mb"),
        runtime=scaled("train", "runtime"),
        gpu_share=int(config["device"] != "cpu"),
    params:
        state_dir=lambda wc: P.path("train_state", model=wc.model),
        settings=lambda wc: mtl_settings.training(config, wc.model, STUDY, MTL_TINY_BASE),
        launch=launch_plan("train"),
    script:
        "../workflow/scripts/mtl_train.py"
