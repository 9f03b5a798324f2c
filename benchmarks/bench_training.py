"""Training speed of the two models, per profile: classifier seconds per epoch, diffusion seconds per step;
and notebook 03's three diffusion models trained one after another in this process vs at once in one-thread
processes (`pipeline.train_generative_models`), both in the same run.

    python benchmarks/bench_training.py [--device cuda] [--profiles default paper] [--parallel-steps 300]

Random data of PhysioNet's shape (3,600 training stays, 24 h x 8 channels): timing does not depend on
values. Writes outputs/benchmarks/training.json and prints the same figures.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from tardiff import pipeline
from tardiff.classifier import train_classifier
from tardiff.config import get_profile
from tardiff.diffusion import GaussianDiffusion
from tardiff.unet1d import UNet1D
from tardiff.utils import get_device, seed_everything, write_manifest


def classifier_epoch_s(profile, X, y, device, epochs: int) -> float:
    train = replace(profile.guide_train, max_epochs=epochs, patience=epochs)
    _, history = train_classifier(X, y, X[:400], y[:400], config=profile.guide_classifier, train=train,
                                  device=device, progress=False)
    return history["wall_time_s"] / history["epochs_run"]


def diffusion_step_s(profile, X, device, steps: int) -> float:
    model = UNet1D(X.shape[-1], profile.unet).to(device)
    diffusion = GaussianDiffusion(profile.diffusion)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = X[:profile.diffusion_train.batch_size].to(device)
    for i in range(steps + 1):  # the first step warms up and is not timed
        if i == 1:
            start = time.perf_counter()
        loss = diffusion.loss(model, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / steps


def parallel_diffusion(profile, X, y, device, steps: int) -> dict:
    """Notebook 03's jobs (an unconditional model, two class-conditional ones) for `steps` steps each, one after
    another in this process and then at once in one-thread processes; process start-up is included."""
    profile = replace(profile, diffusion_train=replace(profile.diffusion_train, steps=steps,
                                                       checkpoint_every=steps))
    timings = {}
    for name, parallel in (("one_after_another_s", False), ("one_thread_processes_s", True)):
        with tempfile.TemporaryDirectory() as folder:
            jobs = {Path(folder) / "ddpm.pt": ("diffusion", X, None), Path(folder) / "cfg_a.pt": ("diffusion", X, y),
                    Path(folder) / "cfg_b.pt": ("diffusion", X, 1 - y)}
            start = time.perf_counter()
            pipeline.train_generative_models(jobs, profile, device=device, progress=False, parallel=parallel)
            timings[name] = time.perf_counter() - start
    return {"models": 3, "steps_each": steps, **timings,
            "speedup": timings["one_after_another_s"] / timings["one_thread_processes_s"]}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None)
    parser.add_argument("--profiles", nargs="+", default=["default", "paper"])
    parser.add_argument("--stays", type=int, default=3600)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--parallel-steps", type=int, default=300,
                        help="steps per model for the three-model comparison (0: skip it)")
    parser.add_argument("--out", default="outputs/benchmarks/training.json")
    args = parser.parse_args(argv)
    device = get_device(args.device)
    seed_everything(0)
    X = torch.randn(args.stays, 24, 8)
    y = (torch.rand(args.stays) < 0.14).long()
    y[:2] = torch.tensor([0, 1])
    started, results = time.perf_counter(), {}
    for name in args.profiles:
        profile = get_profile(name)
        epoch = classifier_epoch_s(profile, X, y, device, args.epochs)
        step = diffusion_step_s(profile, X, device, args.steps)
        total = step * profile.diffusion_train.steps
        results[name] = {"classifier": str(profile.guide_classifier), "classifier_epoch_s": epoch,
                         "unet": str(profile.unet), "diffusion_batch": profile.diffusion_train.batch_size,
                         "diffusion_step_s": step, "diffusion_steps": profile.diffusion_train.steps,
                         "diffusion_training_projected_min": total / 60}
        print(f"[{name}] classifier {profile.guide_classifier.hidden}x{profile.guide_classifier.layers}: "
              f"{epoch:.2f} s/epoch on {args.stays} stays | diffusion: {step * 1000:.0f} ms/step at batch "
              f"{profile.diffusion_train.batch_size}, {profile.diffusion_train.steps} steps ~ {total / 60:.1f} min")
    parallel = None
    if args.parallel_steps and device.type == "cpu":
        parallel = parallel_diffusion(get_profile("default"), X, y, device, args.parallel_steps)
        print(f"[default] three diffusion models x {args.parallel_steps} steps: one after another "
              f"{parallel['one_after_another_s']:.1f} s, one-thread processes "
              f"{parallel['one_thread_processes_s']:.1f} s ({parallel['speedup']:.2f}x)")
    write_manifest(args.out, config=vars(args), seed=0, wall_time_s=time.perf_counter() - started,
                   device=str(device), torch=torch.__version__, num_threads=torch.get_num_threads(),
                   profiles=results, diffusion_models_parallel=parallel)
    print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main()
