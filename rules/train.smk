# Training: a base model per seed on the multitask mix; ftwb1/ftwb2 fine-tunes from the base
# model's final checkpoint. A killed job resumes from train_state/<model>/ on re-run.
# gpu_share: one unit per job that may use a GPU; `--resources gpu_share=N` lets N such jobs
# share one GPU at a time (see config/schema.yaml, device). A job with several processes
# (resources.train gpus/processes/nodes) trains data-parallel through ftlab.launch; another
# strategy is refused by the config check (ftlab.study, before this file is read).


rule train_base:
    input:
        unpack(train_inputs),
    output:
        model=directory(P.model_dir),
    log:
        log_path("train", "{model}"),
    benchmark:
        benchmark_path("train", "{model}")
    wildcard_constraints:
        model=r"base_seed\d+",
    conda:
        "../envs/torch.yaml"
    threads: config["threads"]
    resources:
        **job_shape("train"),
        mem_mb=scaled("train", "mem_mb"),
        runtime=scaled("train", "runtime"),
        gpu_share=int(config["device"] != "cpu"),
    params:
        state_dir=lambda wc: P.path("train_state", model=wc.model),
        init_checkpoint=init_checkpoint,
        settings=lambda wc: world_settings.training(config, wc.model, STUDY),
        launch=launch_plan("train"),
    script:
        "../workflow/scripts/train.py"


rule train_finetune:
    input:
        unpack(train_inputs),
    output:
        model=directory(P.model_dir),
    log:
        log_path("train", "{model}"),
    benchmark:
        benchmark_path("train", "{model}")
    wildcard_constraints:
        model=r"ftwb[12]-\d+_seed\d+",
    conda:
        "../envs/torch.yaml"
    threads: config["threads"]
    resources:
        **job_shape("train"),
        mem_mb=scaled("train", "mem_mb"),
        runtime=scaled("train", "runtime"),
        gpu_share=int(config["device"] != "cpu"),
    params:
        state_dir=lambda wc: P.path("train_state", model=wc.model),
        init_checkpoint=init_checkpoint,
        settings=lambda wc: world_settings.training(config, wc.model, STUDY),
        launch=launch_plan("train"),
    script:
        "../workflow/scripts/train.py"
