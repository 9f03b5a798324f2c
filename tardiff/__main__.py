"""Command line: `python -m tardiff extract ...` (see `python -m tardiff --help`)."""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tardiff", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    from tardiff import data

    data.add_extract_arguments(commands.add_parser(
        "extract", help="PhysioNet 2012 archives -> OUT/set-X.npz model-ready stays"))
    args = parser.parse_args(argv)
    if args.command == "extract":
        return data.extract_main(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
