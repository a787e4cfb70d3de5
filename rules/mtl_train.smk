# Multi-task training: one run per method x seed. A checkpoint rule: the run's manifest
# (models/<run>/mtl_manifest.json) says which checkpoints early stopping and keep_last left.
# A killed job resumes from train_state/<run>/ on re-run. sft/grpo: a job with several GPUs
# (resources.train: gpus, nodes, strategy) runs the TRL trainer in every process that
# ftlab.launch starts; the world objective trains in one process.
# The job shapes an objective cannot run are refused by the config check
# (ftlab.mtl.study._launch_problems), before this file is read.


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
