"""The files of a models folder, named in one place (the notebooks, the sampler, the API and the experiments).

    classifier_<task>.pt    f_theta (notebook 02)                 influence_<task>.pt  its cross-fit references
    ddpm.pt                 the unconditional DDPM (03)           cfg_<task>.pt        the class-conditional DDPM
    <generator>_<task>/     a baseline generator's folder (generator.pt + manifest.json; 03)
"""
from __future__ import annotations

from pathlib import Path


def classifier(models_dir: Path, task: str) -> Path:
    return Path(models_dir) / f"classifier_{task}.pt"


def influence(models_dir: Path, task: str) -> Path:
    return Path(models_dir) / f"influence_{task}.pt"


def diffusion(models_dir: Path, backbone: str, task: str) -> Path:
    """"uncond": the task-free DDPM; "cond": the task's class-conditional one."""
    if backbone == "uncond":
        return Path(models_dir) / "ddpm.pt"
    if backbone == "cond":
        return Path(models_dir) / f"cfg_{task}.pt"
    raise ValueError(f"unknown diffusion backbone {backbone!r}; 'uncond' or 'cond'")


def generator(models_dir: Path, name: str, task: str) -> Path:
    return Path(models_dir) / f"{name}_{task}"


CHECKPOINTS = "_ckpt"  # suffix of a diffusion model's resumable checkpoint folder (not part of a saved fit)


def checkpoints(model_path: Path, profile_name: str) -> Path:
    """Where a diffusion model's training checkpoints go (per profile: another profile's never resume it)."""
    return Path(model_path).parent / f"{Path(model_path).stem}_{profile_name}{CHECKPOINTS}"


# what notebook 02 and 03 write, as globs under outputs/ (tardiff.reproduce checks their checksums)
CLASSIFIER_GLOBS = ("models/classifier_*.pt", "models/influence_*.pt")
GENERATIVE_GLOBS = ("models/ddpm.pt", "models/cfg_*.pt", "models/*_*/generator.pt")
