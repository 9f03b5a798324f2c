"""Command line: `python -m tardiff extract ...`, `python -m tardiff generate ...` (see `--help`)."""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tardiff", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    from tardiff import data

    data.add_extract_arguments(commands.add_parser(
        "extract", help="PhysioNet 2012 archives -> OUT/set-X.npz model-ready stays"))
    generate = commands.add_parser("generate", help="fit on your own (X, y) .npz and write synthetic stays")
    generate.add_argument("--dataset", required=True, help="an .npz with X (N, T, F) and y (N,) 0/1, or a stays .npz")
    generate.add_argument("--method", default="tardiff_dot", help="a registered method (tardiff.methods.REGISTRY), "
                                                                  "e.g. tardiff_dot, cfg, timegan; default tardiff_dot")
    generate.add_argument("--n", type=int, default=None, help="stays to generate (label proportions as in the data; "
                                                              "default: the training set's counts)")
    generate.add_argument("--alpha", type=float, default=None, help="instead of --n: alpha x the training stays, "
                                                                    "an augmentation set (docs/augmentation.md)")
    generate.add_argument("--per-label", default=None, metavar="N0,N1", help="instead of --n: stays of label 0 "
                                                                            "and of label 1")
    generate.add_argument("--out", required=True, help="output .npz (X, y) + a .json manifest beside it")
    generate.add_argument("--models", default=None, help="folder of fitted models: reused when it holds a fit, "
                                                         "else written (default: OUT's name + _models)")
    generate.add_argument("--profile", default="default", choices=("smoke", "default", "paper"))
    generate.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting")
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, ...")
    generate.add_argument("--z-scores", action="store_true", help="write model-space z-scores, not X's units")
    args = parser.parse_args(argv)
    if args.command == "extract":
        return data.extract_main(args)
    if args.command == "generate":
        return generate_main(args)
    return 2


def _per_label(text: str) -> dict[int, int]:
    """--per-label "N0,N1" -> {0: N0, 1: N1}, each a count >= 0, not both 0."""
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        counts = []
    if len(counts) != 2 or min(counts) < 0 or sum(counts) == 0:
        raise ValueError(f"--per-label needs two counts N0,N1 (>= 0, not both 0), got {text!r}")
    return {0: counts[0], 1: counts[1]}


def generate_main(args) -> int:
    """`python -m tardiff generate`: one line of error (naming file or option) instead of a traceback."""
    import time
    from pathlib import Path

    import numpy as np

    from tardiff.api import TarDiff, load_xy, preprocessor_of
    from tardiff.config import get_profile, parse_overrides, with_overrides
    from tardiff.utils import sha256_file, write_manifest

    start = time.perf_counter()
    out = Path(args.out)
    try:
        overrides = parse_overrides(args.set)
        with_overrides(get_profile(args.profile), **overrides)  # a setting that cannot run stops before any work
        if args.n is not None and args.n < 1:
            raise ValueError(f"--n must be a positive number of stays, got {args.n}")
        if args.alpha is not None and not args.alpha > 0:  # before any fitting, as --n
            raise ValueError(f"--alpha must be > 0 synthetic stays per training stay, got {args.alpha}")
        if sum(v is not None for v in (args.n, args.alpha, args.per_label)) > 1:
            raise ValueError("give one of --n, --alpha and --per-label")
        n = args.n if args.per_label is None else _per_label(args.per_label)
        if out.suffix != ".npz":
            raise ValueError(f"--out must name an .npz file, got {out}")
        if out.exists() and out.is_dir():
            raise ValueError(f"--out {out} is a folder; name an .npz file")
        out.parent.mkdir(parents=True, exist_ok=True)
        models = Path(args.models) if args.models else out.with_name(out.stem + "_models")
        from tardiff import methods

        wanted = args.method
        methods.get_method(wanted)  # a clear error for an unknown method (or `tardiff`), before any work
        model = TarDiff.load(models, device=args.device) if (models / "tardiff_state.json").exists() else None
        if model is not None and methods.needs([wanted]) <= model.fitted():
            print(f"reusing the fitted models in {models}")
        else:  # fit what the method needs; what the folder already holds for the same data is kept
            X, y = load_xy(args.dataset)
            model = TarDiff(args.profile, overrides, seed=args.seed, device=args.device)
            model.fit(X, y, models_dir=models, methods=[wanted], preprocessor=preprocessor_of(args.dataset))
        X_syn, y_syn = model.sample(args.method, n=n, physical=not args.z_scores, alpha=args.alpha)
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        print(f"tardiff generate: {error}", file=sys.stderr)
        return 2
    tmp = out.with_name(out.stem + ".tmp.npz")
    np.savez_compressed(tmp, X=X_syn, y=y_syn)
    tmp.replace(out)
    write_manifest(out.with_suffix(".json"), config={"method": args.method, "n": args.n, "alpha": args.alpha,
                                                     "per_label": args.per_label, "profile": args.profile,
                                                     "overrides": args.set, "units": "z" if args.z_scores else "input"},
                   seed=args.seed, inputs={str(args.dataset): sha256_file(args.dataset)},
                   wall_time_s=time.perf_counter() - start, models=str(models), stays=len(y_syn),
                   per_label=np.bincount(y_syn, minlength=2).tolist())
    print(f"wrote {len(y_syn)} stays to {out} ({np.bincount(y_syn, minlength=2).tolist()} per label)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
