# Representations: hidden states at a city id and its delimiter, linear x/y probes.


rule represent:
    input:
        model=lambda wc: model_dir(wc.model),
        cities=P.cities,
    output:
        features=P.features,
        probe=P.probe,
    log:
        log_path("represent", "{model}", "checkpoint-{step}"),
    benchmark:
        benchmark_path("represent", "{model}", "checkpoint-{step}")
    conda:
        "../envs/torch.yaml"
    threads: config["threads"]
    resources:
        mem_mb=scaled("represent", "mem_mb"),
        runtime=scaled("represent", "runtime"),
        gpu=gpus("represent"),
        gpu_share=int(config["device"] != "cpu"),
    params:
        checkpoint=saved_checkpoint,
        settings=lambda wc: world_settings.representation(config, wc.model, wc.step, STUDY),
    script:
        "../workflow/scripts/represent.py"
