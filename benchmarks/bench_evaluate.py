"""One TSTR evaluation's downstream training, sequential vs grouped (tardiff.grouped), in the same run; and
the fidelity table's predictive-score regressors of the same sets, sequential vs grouped.

    python benchmarks/bench_evaluate.py [--data outputs/data] [--synthetic outputs/synthetic/mortality]

Trains the default profile's downstream model on the real training set and on every synthetic set of
the method registry, `n_seeds` seeds each, once one model at a time (`train_classifier`) and once as
grouped batches, and reports both wall times and the largest difference between their test predictions.
Uses the batch's extracted data and synthetic sets when they exist; otherwise random stays of
PhysioNet's shape stand in (timing does not depend on the values). Writes outputs/benchmarks/evaluate.json.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from tardiff import evaluate, fidelity, grouped, methods
from tardiff.config import get_profile
from tardiff.utils import get_device, seed_everything, write_manifest

GOALS = {"speedup": (4.0, "min"), "max_prediction_difference": (1e-5, "max")}


class StandIn:
    """Random real splits of PhysioNet's shape when no extracted data is at hand."""

    def __init__(self, seed: int = 0):
        rng = np.random.default_rng(seed)
        for split, n in (("train", 3600), ("val", 400), ("test", 4000)):
            y = (rng.random(n) < 0.14).astype(int)
            X = rng.normal(size=(n, 24, 8)).astype(np.float32)
            X[:, :, 0] += 0.5 * y[:, None]
            setattr(self, f"X_{split}", X)
            setattr(self, f"y_{split}", y)
        self.n_excluded = 0


def load_inputs(args, profile):
    names = methods.methods()
    data, synthetic = Path(args.data), Path(args.synthetic)
    if (data / "set-a.npz").exists() and all((synthetic / f"{n}.npz").exists() for n in names):
        from tardiff.pipeline import load_method_sets
        from tardiff.real_data import load_real
        return load_real(data, args.task, profile), load_method_sets(synthetic), "extracted data and synthetic sets"
    real = StandIn()
    rng = np.random.default_rng(1)
    sets = {n: (real.X_train + 0.1 * rng.normal(size=real.X_train.shape).astype(np.float32), real.y_train)
            for n in names}
    return real, sets, "random stand-ins of PhysioNet's shape"


def predictive_scores(sets: list, X_test) -> dict:
    """Notebook 05's predictive scores of the synthetic sets (fidelity table): one regressor after another
    (`fidelity.predictive_score`) vs trained together as groups (`fidelity.predictive_scores_many`)."""
    Xs, config = [X for X, _ in sets], fidelity.FidelityConfig()
    start = time.perf_counter()
    one_by_one = [fidelity.predictive_score(X, X_test, config) for X in Xs]
    sequential = time.perf_counter() - start
    start = time.perf_counter()
    together = fidelity.predictive_scores_many(Xs, X_test, config)
    grouped_s = time.perf_counter() - start
    print(f"predictive-score regressors ({len(Xs)} sets): sequential {sequential:.1f} s, grouped {grouped_s:.1f} s")
    return {"sets": len(Xs), "sequential_s": sequential, "grouped_s": grouped_s, "speedup": sequential / grouped_s,
            "max_score_difference": float(np.max(np.abs(np.subtract(one_by_one, together))))}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None)
    parser.add_argument("--data", default="outputs/data")
    parser.add_argument("--synthetic", default="outputs/synthetic/mortality")
    parser.add_argument("--task", default="mortality")
    parser.add_argument("--profile", default="default")
    parser.add_argument("--out", default="outputs/benchmarks/evaluate.json")
    args = parser.parse_args(argv)
    device = get_device(args.device)
    seed_everything(0)
    profile = get_profile(args.profile)
    real, sets, source = load_inputs(args, profile)
    config = evaluate.EvalConfig.from_profile(profile, device=str(device))
    seeds = config.seeds
    train_sets = [xy for xy in [(real.X_train, real.y_train), *sets.values()] for _ in seeds]
    print(f"{len(train_sets)} downstream models ({len(sets) + 1} sets x {len(seeds)} seeds) on {source}, "
          f"device {device}, {torch.get_num_threads()} threads")

    started = time.perf_counter()
    timings, probas = {}, {}
    for name, batched in (("sequential", False), ("grouped", True)):
        start = time.perf_counter()
        models = evaluate.fit_many(train_sets, real, replace(config, grouped=batched), seeds * (len(sets) + 1))
        timings[name] = time.perf_counter() - start
        probas[name] = evaluate.predict_seeds(models, real.X_test, config)
        print(f"{name:10s} {timings[name]:8.1f} s")
    results = {"models": len(train_sets), "sets": len(sets) + 1, "seeds": len(seeds), "inputs": source,
               "classifier": str(config.classifier), "train": str(config.train),
               "max_group": config.max_group or grouped.default_group_size(device),
               "sequential_s": timings["sequential"], "grouped_s": timings["grouped"],
               "speedup": timings["sequential"] / timings["grouped"],
               "max_prediction_difference": float(np.abs(probas["sequential"] - probas["grouped"]).max())}
    results["predictive_score"] = predictive_scores(list(sets.values()), real.X_test)
    results["goals"] = {k: {"goal": f"{'>=' if kind == 'min' else '<='} {goal:g}",
                            "met": bool(results[k] >= goal if kind == "min" else results[k] <= goal)}
                        for k, (goal, kind) in GOALS.items()}
    write_manifest(args.out, config=vars(args), seed=0, wall_time_s=time.perf_counter() - started,
                   device=str(device), torch=torch.__version__, num_threads=torch.get_num_threads(), **results)
    for k, g in results["goals"].items():
        print(f"  {k:28s} {results[k]:10.4g}   goal {g['goal']:8s} {'met' if g['met'] else 'MISSED'}")
    print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main()
