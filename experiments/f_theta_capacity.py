"""Does a paper-size f_θ change the verdict? Guidance with a biGRU 256 × 2 against the default 32 × 1.

    python experiments/f_theta_capacity.py [--outputs outputs] [--hidden 256] [--layers 2]

Runs after the default batch (it reads its data, backbone and synthetic sets). For each task it trains f_θ of
the paper's size on the same training split (selected on validation, as notebook 02 does), samples
`tardiff_train_g` with it (the original's training-set G, dot score, the normalised step at the default scale,
on the same class-conditional backbone), and scores it beside the default run's `tardiff_train_g` (f_θ 32 × 1)
and `cfg` with the same downstream protocol (GRU, 3 seeds): validation and test AUROC/AUPRC, the seed-paired
test difference against `cfg` with its bootstrap CI, and f_θ's agreement with the labels. One reference
(the training set's G) keeps the cost to one f_θ per task: the cross-fit variants would need K of them.
Writes outputs/tables/f_theta_capacity.{csv,md}.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from tardiff import artifacts, evaluate, metrics, pipeline, real_data
from tardiff.classifier import load_classifier, predict_proba
from tardiff.config import get_profile, with_overrides
from tardiff.sampler import Sampler
from tardiff.utils import write_manifest


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outputs", default="outputs")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--tasks", nargs="+", default=["mortality", "long_stay"])
    parser.add_argument("--profile", default="default", help="the profile the batch ran with")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    outputs = Path(args.outputs)
    profile = get_profile(args.profile)
    big = with_overrides(profile, **{"guide_classifier.hidden": args.hidden, "guide_classifier.layers": args.layers})
    models = outputs / f"models_f_theta_{args.hidden}x{args.layers}"
    small = f"{profile.guide_classifier.hidden}x{profile.guide_classifier.layers}"
    models.mkdir(parents=True, exist_ok=True)
    rows = []
    for task in args.tasks:
        real = real_data.load_real(outputs / "data", task, profile, seed=args.seed)
        default_run = outputs / "models"  # its backbone and references, linked
        for source in (artifacts.diffusion(default_run, "cond", task), artifacts.diffusion(default_run, "uncond", task),
                       artifacts.influence(default_run, task)):
            link = models / source.name
            if not link.exists():
                link.symlink_to(source.resolve())
        _, history, guide_val = pipeline.train_guide_classifier(real, big, models, seed=args.seed, device=args.device)
        X_big, y_big, info = Sampler(real.X_train, real.y_train, task, big, models, seed=args.seed,
                                     device=args.device).sample(
            "tardiff_train_g")
        sets = {"cfg": pipeline.load_synthetic(outputs / "synthetic" / task / "cfg.npz"),
                f"tardiff_train_g (f_θ {small})": pipeline.load_synthetic(outputs / "synthetic" / task / "tardiff_train_g.npz"),
                f"tardiff_train_g (f_θ {args.hidden}x{args.layers})": (X_big, y_big)}
        config = evaluate.EvalConfig.from_profile(profile, seed=args.seed, device=args.device)
        splits = real
        fits = {name: evaluate.fit_downstream(X, y, splits, config) for name, (X, y) in sets.items()}
        test = {name: evaluate.predict_seeds(m, real.X_test, config) for name, m in fits.items()}
        guides = {small: load_classifier(artifacts.classifier(outputs / "models", task)),
                  f"{args.hidden}x{args.layers}": load_classifier(artifacts.classifier(models, task))}
        for name, (X, y) in sets.items():
            val = evaluate.utility(real.y_val, evaluate.predict_seeds(fits[name], real.X_val, config), config)
            tst = evaluate.utility(real.y_test, test[name], config)
            row = {"task": task, "set": name, "val_auroc": val["auroc_mean"], "val_auprc": val["auprc_mean"],
                   "test_auroc": tst["auroc_mean"], "test_auroc_sd": tst["auroc_sd"], "test_auprc": tst["auprc_mean"],
                   "test_auprc_sd": tst["auprc_sd"]}
            if name != "cfg":
                diff = metrics.paired_difference(real.y_test, test[name], test["cfg"], n_boot=profile.bootstrap,
                                                  seed=args.seed)
                for metric, (d, lo, hi) in diff.items():
                    row[f"d_{metric}_vs_cfg"] = f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]"
            for size, guide in guides.items():  # does each f_θ agree with the set's labels?
                row[f"f_theta_{size}_auroc_vs_labels"] = metrics.auroc(y, predict_proba(guide, X))
            rows.append(row)
        rows[-1]["big_f_theta_val_auroc"], rows[-1]["big_f_theta_best_epoch"] = guide_val["auroc"], history["best_epoch"]
    frame = pd.DataFrame(rows)
    tables = outputs / "tables"
    evaluate.write_tables(frame, tables, "f_theta_capacity")
    write_manifest(tables / "f_theta_capacity.json", config={"guide_classifier": big.guide_classifier,
                                                             "method": "tardiff_train_g"},
                   seed=args.seed, wall_time_s=time.perf_counter() - start)
    print(frame.round(3).to_string())


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ValueError) as error:  # e.g. run before the batch: say what is missing
        raise SystemExit(f"f_theta_capacity: {error}") from None
