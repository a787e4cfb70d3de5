"""How linear a trained model's city map is, robust to which cities the probe draws.

    python benchmarks/probe_seeds.py RESULTS_DIR [RESULTS_DIR ...] [--model base_seed1]
        [--layers 2,3] [--task distance] [--probe ridge_cv] [--probe-seeds 10]

For each checkpoint of the model under RESULTS_DIR/models/ (e.g. results/demo, or a study run
with `--directory` elsewhere) and each layer, prints the median and minimum over probe seeds
0..N-1 of the held-out real-city R^2 for x and y (the figure `tables/probes.csv` reports for
one seed), and the participation ratio of the real cities' feature covariance: about the
number of directions the features use (a low-dimensional map gives a small ratio; a separate
code per city a large one). The README's demo trials were measured with it.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np

from ftlab.checkpointing import checkpoint_step
from ftlab.represent import PROBES


def participation_ratio(features: np.ndarray) -> float:
    """(sum of covariance eigenvalues)^2 / sum of their squares."""
    centered = features - features.mean(axis=0)
    eig = np.linalg.svd(centered, compute_uv=False) ** 2
    return float(eig.sum() ** 2 / (eig**2).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", nargs="+", help="a study's results directory")
    parser.add_argument("--model", default=None, help="model name (default: every base_seed*)")
    parser.add_argument("--layers", default=None, help="comma list (default: 2 .. last)")
    parser.add_argument("--task", default="distance", help="probe prompt task")
    parser.add_argument("--probe", default="ridge_cv", choices=PROBES)
    parser.add_argument("--probe-seeds", type=int, default=10)
    args = parser.parse_args()

    from ftlab.evaluate import load_checkpoint
    from ftlab.represent import features_from_model, fit_probes
    from ftlab.world.cities import read_city_table
    from ftlab.world.tasks import get_task

    warnings.filterwarnings("ignore")  # sklearn/transformers chatter on tiny probes
    for results in map(Path, args.results):
        cities = read_city_table(results / "data" / "cities.csv")
        prompt = get_task(args.task).probe_prompt
        models = (
            [results / "models" / args.model]
            if args.model
            else sorted((results / "models").glob("base_seed*"))
        )
        for model in models:
            for ck in sorted(model.glob("checkpoint-*"), key=checkpoint_step):
                net, tokenizer = load_checkpoint(str(ck), threads=1, device="cpu")  # once
                n_layers = net.config.num_hidden_layers
                layers = (
                    [int(v) for v in args.layers.split(",")]
                    if args.layers
                    else list(range(2, n_layers + 1))
                )
                for layer in layers:
                    data = features_from_model(net, tokenizer, cities, prompt, layer)
                    fits = [
                        fit_probes(data, probe=args.probe, seed=s) for s in range(args.probe_seeds)
                    ]
                    rx = [f["heldout_real_r2_x"] for f in fits]
                    ry = [f["heldout_real_r2_y"] for f in fits]
                    pr = participation_ratio(data["features"][~data["is_atlantis"]])
                    print(
                        f"{results} {model.name} {ck.name} layer {layer}: held-out real R2 "
                        f"x/y median {np.median(rx):.2f} / {np.median(ry):.2f}, "
                        f"min {np.min(rx):.2f} / {np.min(ry):.2f} "
                        f"(n={fits[0]['n_heldout_real']}); participation ratio {pr:.1f}",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
