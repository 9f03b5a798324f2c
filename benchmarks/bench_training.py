"""Training speed of the two models, per profile: classifier seconds per epoch, diffusion seconds per step.

    python benchmarks/bench_training.py [--device cuda] [--profiles default paper]

Random data of PhysioNet's shape (3,600 training stays, 24 h x 8 channels): timing does not depend on
values. Writes outputs/benchmarks/training.json and prints the same figures.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch

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


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None)
    parser.add_argument("--profiles", nargs="+", default=["default", "paper"])
    parser.add_argument("--stays", type=int, default=3600)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
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
    write_manifest(args.out, config=vars(args), seed=0, wall_time_s=time.perf_counter() - started,
                   device=str(device), torch=torch.__version__, num_threads=torch.get_num_threads(),
                   profiles=results)
    print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main()
