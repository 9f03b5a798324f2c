"""`authors NAME --repo DIR`: run the authors' code and write the fixture; `compare NAME`: hold ours to it."""
from __future__ import annotations

import argparse
import importlib
import platform
import sys
import time
from pathlib import Path

import pandas as pd

from experiments.authors_equivalence import (CATEGORIES, GENERATORS, compare, format_rows, load_fixture,
                                             save_fixture)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.authors_equivalence", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    authors = sub.add_parser("authors", help="run the authors' code (their environment) and write the fixture")
    authors.add_argument("name", choices=GENERATORS)
    authors.add_argument("--repo", required=True, help="a local checkout of the authors' repository")
    check = sub.add_parser("compare", help="run ours on the fixture's weights and inputs and compare")
    check.add_argument("name", choices=GENERATORS)
    summary = sub.add_parser("summary", help="compare all five; write the per-category summary for the docs")
    summary.add_argument("--out", default="results/authors_equivalence")
    args = parser.parse_args(argv)
    if args.command == "summary":
        return write_summary(Path(args.out))
    module = importlib.import_module(f"experiments.authors_equivalence.{args.name}")
    if args.command == "authors":
        start = time.perf_counter()
        arrays, info = module.run_authors(args.repo)
        missing = [c for c in CATEGORIES if not any(k.startswith("authors/" + c) for k in arrays)]
        if missing:
            raise SystemExit(f"{args.name}: the authors' run produced no {missing} outputs")
        manifest = {"generator": args.name, "authors_repo": module.AUTHORS_REPO,
                    "command": "python -m experiments.authors_equivalence " + " ".join(sys.argv[1:]),
                    "python": platform.python_version(), "wall_s": round(time.perf_counter() - start, 2),
                    **info}
        save_fixture(args.name, arrays, manifest)
        print(f"wrote the {args.name} fixture: {len(arrays)} arrays")
        return 0
    fixture, manifest = load_fixture(args.name)
    rows = compare(fixture, module.run_ours(fixture), manifest["tolerances"])
    print(format_rows(rows))
    return 0 if all(r.ok for r in rows) else 1


def _steps(K):
    """Optimiser steps compared: a count, or TimeGAN's per-solver counts with their total."""
    return K.get("total", sum(K.values())) if isinstance(K, dict) else K


def write_summary(out: Path) -> int:
    """summary.{csv,md}: per generator and category, how many tensors were compared, the largest relative
    difference, where, and how close to its tolerance any came (the docs quote these; CI rechecks the equality)."""
    rows = []
    for name in GENERATORS:
        fixture, manifest = load_fixture(name)
        module = importlib.import_module(f"experiments.authors_equivalence.{name}")
        compared = compare(fixture, module.run_ours(fixture), manifest["tolerances"])
        for category in CATEGORIES:
            part = [r for r in compared if r.key.startswith(category)]
            worst = max(part, key=lambda r: r.relative)
            rows.append({"generator": name, "authors": f"{module.AUTHORS_REPO}@{str(manifest.get('commit', ''))[:7]}",
                         "K": _steps(manifest.get("K")), "category": category.rstrip("/"), "tensors": len(part),
                         "max_relative": worst.relative, "at": worst.key[len(category):],
                         "closest_to_tolerance": max(r.relative / r.tolerance if r.tolerance else 0.0 for r in part),
                         "all_within": all(r.ok for r in part)})
    table = pd.DataFrame(rows)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "summary.csv", index=False)
    lines = ["| generator | authors' code | K | category | tensors | largest relative difference (where) | "
             "closest to its tolerance | all within |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r.generator} | {r.authors} | {r.K} | {r.category} | {r.tensors} | {r.max_relative:.1e} "
              f"({r.at}) | {r.closest_to_tolerance:.2f} | {'yes' if r.all_within else 'NO'} |"
              for r in table.itertuples()]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if table.all_within.all() else 1


if __name__ == "__main__":
    sys.exit(main())
