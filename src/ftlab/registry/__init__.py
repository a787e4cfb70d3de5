"""The run registry: what the workflow's result files say, queryable.

- ``records``: reading metric files and per-sample outcomes of every study kind;
- ``index``: the per-study SQLite index (``results/<study>/index.sqlite``), a cache of the
  files that is refreshed on every query and rebuildable at any time;
- ``store``: queries across studies (runs, results, provenance);
- ``views``: list / show / leaderboard / compare / significance / export / stats;
- ``status``: ``ftlab status`` from Snakemake's DAG, the files and SLURM (``slurmjobs``);
- ``tracking``: optional W&B / MLflow export;
- ``cli``: the ``ftlab`` subcommands.
"""
