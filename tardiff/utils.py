"""Small shared helpers: device choice, seeding, checksums and run manifests."""
from __future__ import annotations

import hashlib
import json
import os
import platform
import random
import time
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np


def get_device(name: str | None = None):
    """`cuda` when available, else `cpu`; an explicit name (e.g. 'cpu', 'cuda:1') wins."""
    import torch

    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} asked for, but torch sees no CUDA device; use 'cpu' or 'auto'")
    return device


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so a run with the same seed and profile repeats on CPU."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def package_versions() -> dict[str, str]:
    """Versions that decide whether a result can be reproduced."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version()}
    for name in ("tardiff", "torch", "numpy", "pandas", "scikit-learn"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            pass
    return versions


def to_jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(asdict(value))
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def json_digest(value: Any) -> str:
    """sha256 of a value's canonical JSON (sorted keys): a key that changes whenever any setting in it does."""
    return hashlib.sha256(json.dumps(to_jsonable(value), sort_keys=True).encode()).hexdigest()


def git_state(paths=("tardiff",)) -> tuple[str, bool]:
    """HEAD of the checkout this package runs from, and whether `paths` (relative to its root) differ from it:
    what a manifest's `commit` can promise. ("", False) where there is no git or no checkout."""
    import subprocess
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", *paths],
                               capture_output=True, text=True).stdout.strip()
    except OSError:
        return "", False
    return commit, bool(dirty)


def write_manifest(path: str | os.PathLike, *, config: Any, seed: int | None = None,
                   inputs: dict[str, str] | None = None, wall_time_s: float | None = None,
                   **extra: Any) -> dict:
    """Write the JSON manifest every artifact carries: config, seed, versions, input checksums, wall time."""
    manifest = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": to_jsonable(config),
        "seed": seed,
        "versions": package_versions(),
        "inputs": inputs or {},
        "wall_time_s": None if wall_time_s is None else round(float(wall_time_s), 3),
        **to_jsonable(extra),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)  # atomic: a failure never leaves a half-written manifest
    return manifest


def read_manifest(path: str | os.PathLike) -> dict | None:
    path = Path(path)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def save_model(path: str | os.PathLike, model, config_key: str, **extra) -> Path:
    """Config (under `config_key`) + n_features + weights + extras, written atomically: a failed save
    leaves the previous checkpoint intact. Shared by the classifier and the diffusion model."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({config_key: asdict(model.config), "n_features": model.n_features,
                "state_dict": {k: v.cpu() for k, v in model.state_dict().items()}, "extra": extra}, tmp)
    os.replace(tmp, path)
    return path


def largest_remainder(sizes, n: int) -> np.ndarray:
    """`n` split in proportion to `sizes` as integers that sum to exactly `n` (largest remainder, ties by order)."""
    sizes = np.asarray(sizes, dtype=np.float64)
    exact = n * sizes / sizes.sum()
    counts = np.floor(exact).astype(int)
    counts[np.argsort(-(exact - counts), kind="stable")[: n - counts.sum()]] += 1
    return counts
