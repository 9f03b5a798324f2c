"""`authors NAME --repo DIR`: run the authors' code and write the fixture; `compare NAME`: hold ours to it."""
from __future__ import annotations

import argparse
import importlib
import platform
import sys
import time

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
    args = parser.parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
