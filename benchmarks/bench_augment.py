"""What augmentation adds to notebook 05: downstream fits on real + alpha x synthetic against real only, in the
same run, and the default grid's projected cost.

    python benchmarks/bench_augment.py [--alphas 0.25,1,4] [--archs gru,cnn]

Trains the default profile's downstream model (n_seeds seeds, as notebook 05 does: grouped for the GRU, one by
one for the CNN) on random stays of PhysioNet's shape (timing does not depend on the values): once on the real
training split alone and once per alpha on real + alpha x synthetic (`augment.training_set`). Prints each fit's
time as a ratio to the real-only fit of the same architecture, then projects the default grid (`augment.grid`
over the profile's sources, alphas, weights and mixing; a fit's time taken linear in its training stays, fitted
to the measured points) for both tasks. Writes outputs/benchmarks/augment.json.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from bench_evaluate import StandIn  # random real splits of PhysioNet's shape
from tardiff import augment, evaluate, pipeline
from tardiff.config import get_profile
from tardiff.utils import seed_everything, write_manifest


def timed_fit(train_sets, real, config) -> float:
    start = time.perf_counter()
    evaluate.fit_many(train_sets, real, config, config.seeds)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alphas", default="0.25,1,4")
    parser.add_argument("--archs", default="gru,cnn")
    parser.add_argument("--out", default="outputs/benchmarks/augment.json")
    args = parser.parse_args()
    seed_everything(0)
    profile = get_profile("default")
    real = StandIn()
    rng = np.random.default_rng(1)
    pool_rows = np.tile(np.arange(len(real.y_train)), 1 + profile.augment_pool)  # the batch's pool: exact counts
    pools = {"cfg": (real.X_train[pool_rows] + 0.1 * rng.normal(size=(len(pool_rows), 24, 8)).astype(np.float32),
                     real.y_train[pool_rows])}
    gru = evaluate.EvalConfig.from_profile(profile)
    alphas = [float(a) for a in args.alphas.split(",")]
    rows = []
    for arch in args.archs.split(","):
        config = pipeline.downstream_config(gru, profile, arch)
        base = timed_fit([(real.X_train, real.y_train)] * len(config.seeds), real, config)
        rows.append({"arch": arch, "alpha": 0.0, "train_stays": len(real.y_train), "seconds": base, "ratio": 1.0})
        print(f"{arch}: real only ({len(real.y_train)} stays, {len(config.seeds)} seeds) {base:.1f} s")
        for alpha in alphas:
            mix = augment.Mix(sources=("cfg",), alpha=alpha)
            sets = [augment.training_set(real.X_train, real.y_train, pools, mix, s)[:2] for s in config.seeds]
            seconds = timed_fit(sets, real, config)
            rows.append({"arch": arch, "alpha": alpha, "train_stays": len(sets[0][1]), "seconds": seconds,
                         "ratio": seconds / base})
            print(f"{arch}: real + {alpha:g} x synthetic ({len(sets[0][1])} stays) {seconds / base:.2f} x real only")
    settings = augment.grid(profile.augment_sources, profile.augment_alphas, profile.augment_weights,
                            profile.augment_mix_alpha, profile.augment_realism)
    projected = {}
    for arch in {r["arch"] for r in rows}:
        points = [(r["train_stays"], r["seconds"]) for r in rows if r["arch"] == arch]
        slope, intercept = np.polyfit(*zip(*points), 1)
        stays = [len(real.y_train) * (1 + m.alpha) for m in settings]
        projected[arch] = float(sum(intercept + slope * n for n in stays)) * len(profile.tasks)
        print(f"{arch}: the default grid ({len(settings)} settings x {len(profile.tasks)} tasks) projects to "
              f"{projected[arch] / 60:.0f} min at this machine's speed ({torch.get_num_threads()} threads)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_manifest(Path(args.out), config={"alphas": alphas, "archs": args.archs, "profile": "default"}, seed=0,
                   rows=rows, projected_seconds=projected, settings=len(settings), threads=torch.get_num_threads())


if __name__ == "__main__":
    main()
