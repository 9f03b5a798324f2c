"""`authors NAME --repo DIR`: run the authors' code and write the fixture; `compare NAME`: hold ours to it;
`machine NAME`: record how far ours lands from the fixture on this CPU (for a CPU other than the fixture's)."""
from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import time
from pathlib import Path

import pandas as pd

from experiments.authors_equivalence import (CATEGORIES, CROSS_MACHINE_FACTOR, GENERATORS, compare,
                                             fixture_paths, format_rows, largest_by_prefix, load_fixture,
                                             save_fixture, tolerances)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.authors_equivalence", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    authors = sub.add_parser("authors", help="run the authors' code (their environment) and write the fixture")
    authors.add_argument("name", choices=GENERATORS)
    authors.add_argument("--repo", required=True, help="a local checkout of the authors' repository")
    check = sub.add_parser("compare", help="run ours on the fixture's weights and inputs and compare")
    check.add_argument("name", choices=GENERATORS)
    machine = sub.add_parser("machine", help="on a CPU other than the fixture's: record ours' largest difference "
                                             "per tolerance prefix in the fixture's manifest (other_machines), "
                                             "where it would widen the tolerance")
    machine.add_argument("name", choices=GENERATORS)
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
    if args.command == "machine":
        rows = compare(fixture, module.run_ours(fixture), manifest["tolerances"])
        record = {"cpu": _cpu(), "date": time.strftime("%Y-%m-%d"),
                  "command": "python -m experiments.authors_equivalence " + " ".join(sys.argv[1:]),
                  "largest_relative": {prefix: value for prefix, value in
                                       largest_by_prefix(rows, manifest["tolerances"]).items()
                                       if CROSS_MACHINE_FACTOR * value > manifest["tolerances"][prefix]}}
        manifest["other_machines"] = [*manifest.get("other_machines", []), record]
        fixture_paths(args.name)[1].write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")  # arrays untouched
        print(f"recorded {record['cpu']} in the {args.name} fixture")
        return 0
    rows = compare(fixture, module.run_ours(fixture), tolerances(manifest))
    print(format_rows(rows))
    return 0 if all(r.ok for r in rows) else 1


def _cpu() -> str:
    """This CPU's model and widest vector extension (what changes float32 rounding between machines)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    widest = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "SSE"
    return f"{model or platform.machine()}, {widest}"


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
        compared = compare(fixture, module.run_ours(fixture), tolerances(manifest))
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
