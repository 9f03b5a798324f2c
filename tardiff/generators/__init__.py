"""The paper's five baseline generators behind one interface (`tardiff.generators.base.Generator`).

    from tardiff.generators import get_generator, load_generator
    gen = get_generator("timegan").fit(X, y, seed=0)
    X_syn = gen.sample(y_wanted, seed=1)

Each lives in its own module, written from its authors' code (the module docstring names the repository
and every departure); the modules are imported on first use.
"""
from __future__ import annotations

import importlib
from pathlib import Path

import torch

from tardiff.generators.base import MODEL_FILE, Generator

GENERATORS = {  # name -> "module:class"
    "timegan": "tardiff.generators.timegan:TimeGAN",
    "timevae": "tardiff.generators.timevae:TimeVAE",
    "timevqvae": "tardiff.generators.timevqvae:TimeVQVAE",
    "diffusion_ts": "tardiff.generators.diffusion_ts:DiffusionTS",
    "biodiffusion": "tardiff.generators.biodiffusion:BioDiffusion",
}


def generator_class(name: str) -> type[Generator]:
    if name not in GENERATORS:
        raise ValueError(f"unknown generator {name!r}; one of {sorted(GENERATORS)}")
    module, cls = GENERATORS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def get_generator(name: str, config=None, **overrides) -> Generator:
    """An unfitted generator with its authors' defaults (or `config`), fields replaced by `overrides`."""
    return generator_class(name)(config, **overrides)


def load_generator(folder: str | Path, device=None) -> Generator:
    """A fitted generator from `Generator.save`'s folder."""
    path = Path(folder) / MODEL_FILE
    if not path.exists():
        raise FileNotFoundError(f"{folder} holds no fitted generator (no {MODEL_FILE}); fit and save one first")
    blob = torch.load(path, map_location="cpu", weights_only=False)
    return generator_class(blob["generator"])._from_blob(blob, device)
