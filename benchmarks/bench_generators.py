"""Speed of the five baseline generators on the PhysioNet 2012 default data, and of the authors' own PyTorch code.

    python benchmarks/bench_generators.py [--data-dir DIR] [--threads 1] [--repeats 3]
        [--authors-diffusion-ts DIR] [--authors-biodiffusion DIR] [--authors-site DIR]

Data: the mortality task's training split (3,600 stays, 24 h × 8 channels, model space) with its labels, as
notebook 03 trains on it. Each generator at its authors' sizes (the `paper` profile) is fitted twice, for a
short and a longer run, and the difference gives seconds per 1,000 units of training (the unit each method
counts in: TimeGAN iterations of each phase, TimeVAE epochs, TimeVQVAE steps of each stage, Diffusion-TS and
BioDiffusion optimiser steps), so set-up cost drops out; sampling is timed on a few stays and scaled to 1,000.
One thread by default, as notebook 03 trains each model (in its own one-thread process).

The authors' code (not part of this repository) is timed in the same run on the same configuration where its
PyTorch runs here: Diffusion-TS (Y-debug-sys/Diffusion-TS, their Trainer) and BioDiffusion (imics-lab/
biodiffusion, their training step), when --authors-* point to extracted snapshots of their repositories and
--authors-site to a folder with what they import beyond this project's dependencies (einops; ema-pytorch
0.2.1 for Diffusion-TS's Trainer). Ours and theirs alternate, `--repeats` times; medians are reported, and the
ratio ours / theirs per training step (goal: at most 1).
Writes outputs/benchmarks/generators.json.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from tardiff import real_data
from tardiff.config import get_profile
from tardiff.generators import GENERATORS, get_generator
from tardiff.utils import write_manifest

# a short run of each generator: (settings for n units, the unit)
UNITS = {
    "timegan": (lambda n: {"iterations": n}, "iteration of each of the three phases"),
    "timevae": (lambda n: {"max_epochs": n, "callbacks": False}, "epoch"),
    "timevqvae": (lambda n: {"max_steps_stage1": n, "max_steps_stage2": n}, "step of each of the two stages"),
    "diffusion_ts": (lambda n: {"train_steps": n}, "optimiser step (2 accumulated batches)"),
    "biodiffusion": (lambda n: {"epochs": n}, "epoch"),
}
SHORT_LONG = {"timegan": (2, 12), "timevae": (1, 3), "timevqvae": (2, 22), "diffusion_ts": (2, 22),
              "biodiffusion": (1, 2)}
SAMPLE_STAYS = {"timegan": 1000, "timevae": 1000, "timevqvae": 256, "diffusion_ts": 40, "biodiffusion": 6}


def physionet_task(data_dir: str | None):
    """The mortality task of the default profile, extracted into a temporary folder from the archives."""
    from tardiff import data

    folder = Path(tempfile.mkdtemp(prefix="bench_generators_"))
    data.extract(data.resolve_data_dir(data_dir), folder)
    return real_data.load_real(folder, "mortality", get_profile("default"), seed=0)


def time_training(name: str, config, X, y, n_short: int, n_long: int) -> dict:
    """Seconds per unit of training from two fits (long − short), and the fitted short model."""
    settings, unit = UNITS[name]
    fits = {}
    for n in (n_short, n_long):
        gen = get_generator(name, replace(config, **settings(n)))
        start = time.perf_counter()
        gen.fit(X, y, seed=0, device="cpu", progress=False)
        fits[n] = (time.perf_counter() - start, gen)
    steps = {n: sum(p.history.get("steps", 0) for p in gen.parts.values()) for n, (_, gen) in fits.items()}
    per_unit = (fits[n_long][0] - fits[n_short][0]) / (n_long - n_short)
    per_step = (fits[n_long][0] - fits[n_short][0]) / max(1, steps[n_long] - steps[n_short])
    return {"unit": unit, "s_per_1000_units": 1000 * per_unit, "s_per_1000_optimiser_steps": 1000 * per_step,
            "optimiser_steps_per_unit": (steps[n_long] - steps[n_short]) / (n_long - n_short)}, fits[n_short][1]


def time_sampling(gen, y: np.ndarray, n: int) -> float:
    """Seconds per 1,000 stays, the labels in the training set's proportions."""
    labels = np.random.default_rng(0).choice(y, n)
    start = time.perf_counter()
    gen.sample(labels, seed=1, device="cpu", progress=False)
    return 1000 * (time.perf_counter() - start) / n


# --------------------------------------------------------------------------- the authors' code

def authors_diffusion_ts_step(root: Path, Z: np.ndarray, config, steps: int) -> float:
    """Seconds per training step of Diffusion-TS's own Trainer (their Adam, scheduler, EMA, accumulation) on the
    same configuration, from runs of steps + 2 and 2 steps; Z in [-1, 1] as their loader feeds it."""
    import yaml
    from torch.utils.data import DataLoader

    sys.path.insert(0, str(root))
    from engine.solver import Trainer
    from Models.interpretable_diffusion.gaussian_diffusion import Diffusion_TS

    cfg = yaml.full_load(open(root / "Config" / "stocks.yaml"))
    params = cfg["model"]["params"]
    params.update(seq_length=Z.shape[1], feature_size=Z.shape[2], n_layer_enc=config.n_layer_enc,
                  n_layer_dec=config.n_layer_dec, d_model=config.d_model, timesteps=config.timesteps,
                  sampling_timesteps=config.timesteps, n_heads=config.n_heads)
    cfg["dataloader"]["batch_size"] = config.batch_size

    class Args:
        name, save_dir, tensorboard, gpu = "bench", "bench", False, None

    seconds = {}
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as scratch:
        os.chdir(scratch)
        try:
            for n in (2, steps + 2):
                torch.manual_seed(0)
                cfg["solver"]["max_epochs"] = n
                model = Diffusion_TS(**params)
                loader = DataLoader(torch.from_numpy(Z), batch_size=config.batch_size, shuffle=True, drop_last=True)
                trainer = Trainer(config=cfg, args=Args(), model=model,
                                  dataloader={"dataloader": loader, "dataset": None})
                start = time.perf_counter()
                trainer.train()
                seconds[n] = time.perf_counter() - start
        finally:
            os.chdir(cwd)
    return (seconds[steps + 2] - seconds[2]) / steps


def ours_diffusion_ts_step(config, X, steps: int) -> float:
    seconds = {}
    for n in (2, steps + 2):
        gen = get_generator("diffusion_ts", replace(config, train_steps=n))
        start = time.perf_counter()
        gen.fit(X, None, seed=0, device="cpu", progress=False)
        seconds[n] = time.perf_counter() - start
    return (seconds[steps + 2] - seconds[2]) / steps


def authors_biodiffusion_step(root: Path, Z: np.ndarray, y: np.ndarray, config, steps: int) -> float:
    """Seconds per training step of BioDiffusion's own model and loop body (ddpm1d_cls_free.train: loss,
    zero_grad, backward, AdamW step), the same batches; Z in [0, 1] (their diffusion maps it to [-1, 1])."""
    sys.path.insert(0, str(root / "src" / "signal"))
    from modules.modules1D_cls_free import GaussianDiffusion1D_cls_free, Unet1D_cls_free

    torch.manual_seed(0)
    unet = Unet1D_cls_free(dim=config.dim, dim_mults=config.dim_mults, num_classes=int(y.max()) + 1,
                           cond_drop_prob=config.cond_drop_prob, channels=Z.shape[2])
    diffusion = GaussianDiffusion1D_cls_free(unet, seq_length=Z.shape[1], timesteps=config.timesteps)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=config.lr)
    signals = torch.from_numpy(Z).transpose(1, 2).contiguous()
    labels = torch.from_numpy(y)
    order = torch.randperm(len(Z))
    start = None
    for i in range(steps + 1):  # the first step warms up
        if i == 1:
            start = time.perf_counter()
        idx = order[(i * config.batch_size) % len(Z):][:config.batch_size]
        loss = diffusion(signals[idx], classes=labels[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - start) / steps


def ours_biodiffusion_step(config, X, y, steps: int) -> float:
    """Our training loop's seconds per step: a fit of two epochs less one, divided by one epoch's steps."""
    per_epoch = -(-len(X) // config.batch_size)
    epochs = max(1, round(steps / per_epoch))
    seconds = {}
    for n in (1, 1 + epochs):
        gen = get_generator("biodiffusion", replace(config, epochs=n))
        start = time.perf_counter()
        gen.fit(X, y, seed=0, device="cpu", progress=False)
        seconds[n] = time.perf_counter() - start
    return (seconds[1 + epochs] - seconds[1]) / (epochs * per_epoch)


def authors_comparison(args, real, profile) -> dict:
    out = {}
    if args.authors_site:
        sys.path.insert(0, str(Path(args.authors_site).resolve()))
    X, y = real.X_train, real.y_train
    if args.authors_diffusion_ts:
        config = profile.generators.diffusion_ts
        # both see the same data in [-1, 1]: one label's stays, as the per-label model trains
        Z = (2 * (X - X.min((0, 1))) / (X.max((0, 1)) - X.min((0, 1)) + 1e-7) - 1).astype(np.float32)
        ours, theirs = [], []
        for _ in range(args.repeats):
            theirs.append(authors_diffusion_ts_step(Path(args.authors_diffusion_ts).resolve(), Z, config,
                                                    args.authors_steps))
            ours.append(ours_diffusion_ts_step(config, X, args.authors_steps))
        out["diffusion_ts"] = _ratio(ours, theirs, config)
    if args.authors_biodiffusion:
        config = profile.generators.biodiffusion
        Z01 = ((X - X.min((0, 1))) / (X.max((0, 1)) - X.min((0, 1)) + 1e-7)).astype(np.float32)
        ours, theirs = [], []
        for _ in range(args.repeats):
            theirs.append(authors_biodiffusion_step(Path(args.authors_biodiffusion).resolve(), Z01, y, config,
                                                    args.authors_steps))
            ours.append(ours_biodiffusion_step(config, X, y, args.authors_steps))
        out["biodiffusion"] = _ratio(ours, theirs, config)
    return out


def _ratio(ours: list, theirs: list, config) -> dict:
    o, t = float(np.median(ours)), float(np.median(theirs))
    return {"ours_s_per_step": o, "theirs_s_per_step": t, "ours_over_theirs": o / t,
            "goal_ours_no_slower": bool(o <= t), "ours_runs": ours, "theirs_runs": theirs, "config": config}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="PhysioNet 2012 archives (default: $TARDIFF_DATA_DIR)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--generators", default=",".join(GENERATORS))
    parser.add_argument("--authors-diffusion-ts", default=None, help="extracted Y-debug-sys/Diffusion-TS")
    parser.add_argument("--authors-biodiffusion", default=None, help="extracted imics-lab/biodiffusion")
    parser.add_argument("--authors-site", default=None, help="a folder with einops and ema_pytorch (0.2.1)")
    parser.add_argument("--authors-steps", type=int, default=10)
    parser.add_argument("--out", default="outputs/benchmarks/generators.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    real = physionet_task(args.data_dir)
    profile = get_profile("paper")  # the authors' settings
    X, y = real.X_train, real.y_train
    results = {}
    for name in [g for g in args.generators.split(",") if g]:
        config = getattr(profile.generators, name)
        timing, gen = time_training(name, config, X, y, *SHORT_LONG[name])
        timing["sample_s_per_1000_stays"] = time_sampling(gen, y, SAMPLE_STAYS[name])
        if name == "biodiffusion":  # also with their own DDIM path, the reduction the benchmarks use
            gen.config = replace(gen.config, sampling_timesteps=50)
            timing["sample_s_per_1000_stays_ddim50"] = time_sampling(gen, y, 4 * SAMPLE_STAYS[name])
        results[name] = timing
        print(name, {k: (round(v, 2) if isinstance(v, float) else v) for k, v in timing.items()}, flush=True)
    authors = authors_comparison(args, real, profile)
    for name, row in authors.items():
        print(f"{name}: ours {row['ours_s_per_step']:.3f} s/step, theirs {row['theirs_s_per_step']:.3f} s/step, "
              f"ours/theirs {row['ours_over_theirs']:.2f}", flush=True)
    report = {"data": {"stays": len(X), "shape": list(X.shape), "labels": np.bincount(y).tolist()},
              "threads": args.threads, "generators": results, "authors_code": authors or "not timed (pass --authors-*)"}
    write_manifest(args.out, config={"profile": "paper", "threads": args.threads, "repeats": args.repeats,
                                     "authors_steps": args.authors_steps},
                   wall_time_s=time.perf_counter() - start, **report)
    return report


if __name__ == "__main__":
    main()
