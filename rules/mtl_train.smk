# Multi-task training: one run per method x seed. A checkpoint rule: the run's manifest
# (models/<run>/mtl_manifest.json) says which checkpoints early stopping and keep_last left.
# A killed job resumes from train_state/<run>/ on re-run.


checkpoint mtl_train:
    input:
        train=P.mtl_train_rows,
        validation=P.mtl_validation_rows,
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
        mem_mb=scaled("train", "mem_mb"),
        runtime=scaled("train", "runtime"),
        gpu=gpus("train"),
        gpu_share=int(config["device"] != "cpu"),
    params:
        state_dir=lambda wc: P.path("train_state", model=wc.model),
        settings=lambda wc: mtl_settings.training(config, wc.model, STUDY),
    script:
        "../workflow/scripts/mtl_train.py"
