"""Our baseline generators held to their authors' code on the same weights and inputs (issue 29).

A port is proven by equality, not by reaching published scores: started from the same weights and fed the
same batches, noise and timesteps, the authors' code and ours must give the same losses, gradients,
parameters after K optimiser steps and samples. It costs seconds, holds at any training budget, and when it
fails it says where.

Each generator has a module here, `<name>.py`, with
    AUTHORS_REPO = "owner/name"
    run_authors(repo_dir: Path) -> (arrays, info)   # in the authors' environment (TF: .venv-tf, tf_env.sh)
    run_ours(fixture: dict) -> dict                   # in ours: keys as the fixture's "authors/<key>"
and the fixture it writes, `tests/fixtures/authors/<name>.npz` (keys "input/...", "weights/...",
"authors/<key>") with `<name>.json` (repository, commit, command, environment, every change made to the
authors' code, and the tolerances with how each was measured). Output keys start with one of CATEGORIES.

    .venv-tf/bin/python -m experiments.authors_equivalence authors timegan --repo .authors/timegan
    .venv/bin/python -m experiments.authors_equivalence compare timegan

This module imports neither torch nor TensorFlow: the authors' side runs where only their framework is.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

GENERATORS = ("timegan", "timevae", "timevqvae", "diffusion_ts", "biodiffusion")
# what an equivalence compares; every fixture holds keys of each kind
CATEGORIES = ("loss/", "grad/", "param_after/", "sample/")
FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "authors"


def fixture_paths(name: str) -> tuple[Path, Path]:
    return FIXTURES / f"{name}.npz", FIXTURES / f"{name}.json"


def load_fixture(name: str) -> tuple[dict, dict]:
    """The authors' arrays and manifest for `name`; a missing fixture is an error that says how to make it."""
    arrays_path, manifest_path = fixture_paths(name)
    for path in (arrays_path, manifest_path):
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: regenerate it with `python -m experiments."
                                    f"authors_equivalence authors {name} --repo <authors' checkout>`")
    with np.load(arrays_path, allow_pickle=False) as blob:
        arrays = {key: blob[key] for key in blob.files}
    return arrays, json.loads(manifest_path.read_text())


def save_fixture(name: str, arrays: dict, manifest: dict) -> None:
    arrays_path, manifest_path = fixture_paths(name)
    arrays_path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(arrays_path, **{k: np.asarray(v) for k, v in arrays.items()})
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


# Each fixture's tolerances are measured on the machine that wrote it (a multiple of the authors' own
# float32-vs-float64 noise there). Another CPU rounds float32 differently (other vector kernels, other
# summation orders), and over many optimiser steps that can exceed the writing machine's noise (Diffusion-TS's
# parameters after 125 Adam steps, by 18x, on an AVX-512 Xeon, while its 125 losses agree to 1e-6). Such a
# machine is measured (`python -m experiments.authors_equivalence machine NAME`: the largest difference per
# tolerance prefix, recorded in the fixture's manifest under "other_machines"), and the tolerance becomes
# CROSS_MACHINE_FACTOR times that where it is larger.
CROSS_MACHINE_FACTOR = 4.0


def tolerances(manifest: dict) -> dict:
    """The tolerance of each prefix: the fixture machine's, widened by what other CPUs measured."""
    merged = dict(manifest["tolerances"])
    for record in manifest.get("other_machines", []):
        for prefix, measured in record["largest_relative"].items():
            merged[prefix] = max(merged.get(prefix, 0.0), CROSS_MACHINE_FACTOR * measured)
    return merged


def largest_by_prefix(rows: list, tolerances: dict) -> dict:
    """{tolerance prefix: the largest relative difference among the outputs it governs}."""
    out = {}
    for row in rows:
        prefix = max((p for p in tolerances if row.key.startswith(p)), key=len)
        out[prefix] = max(out.get(prefix, 0.0), row.relative)
    return out


def tolerance_for(key: str, tolerances: dict) -> float:
    """The tolerance of the longest prefix of `key` in `tolerances` (e.g. "grad/" or "grad/embedder")."""
    matches = [prefix for prefix in tolerances if key.startswith(prefix)]
    if not matches:
        raise KeyError(f"no tolerance declared for {key!r}; the manifest has {sorted(tolerances)}")
    return float(tolerances[max(matches, key=len)])


@dataclass
class Row:
    key: str
    max_abs: float      # max |authors - ours|
    scale: float        # max |authors|
    relative: float     # max_abs / scale: the number held to the tolerance
    tolerance: float

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.relative) and self.relative <= self.tolerance)


def compare(fixture: dict, ours: dict, tolerances: dict) -> list[Row]:
    """One row per authors' output: its largest difference from ours, relative to the output's own scale."""
    rows = []
    for key in sorted(k for k in fixture if k.startswith("authors/")):
        name = key[len("authors/"):]
        if name not in ours:
            raise KeyError(f"ours has no output {name!r} (it has {sorted(ours)})")
        a = np.asarray(fixture[key], np.float64)
        o = np.asarray(ours[name], np.float64)
        if a.shape != o.shape:
            raise ValueError(f"{name}: authors' shape {a.shape} but ours {o.shape}")
        max_abs = float(np.max(np.abs(a - o))) if a.size else 0.0
        scale = float(np.max(np.abs(a))) if a.size else 0.0
        relative = max_abs / scale if scale > 0 else max_abs
        rows.append(Row(name, max_abs, scale, relative, tolerance_for(name, tolerances)))
    return rows


def format_rows(rows: list[Row]) -> str:
    lines = ["| output | max abs diff | scale | relative | tolerance | ok |", "|---|---|---|---|---|---|"]
    lines += [f"| {r.key} | {r.max_abs:.3g} | {r.scale:.3g} | {r.relative:.3g} | {r.tolerance:.3g} | "
              f"{'yes' if r.ok else 'NO'} |" for r in rows]
    return "\n".join(lines)
