"""The synthetic world of the study: the city table, the seven geometry tasks and their datasets.

- ``cities``: real GeoNames cities + Atlantis, with random ``c_%04d`` ids.
- ``tasks``: the task registry (row formats, answers, scoring, probe prompts).
- ``datasets``: train/test splits per task and variant, the multitask mix, fine-tuning mixtures.
"""
