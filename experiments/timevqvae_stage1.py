"""Where TimeVQVAE loses on Sines: its stage 1 (the VQ-VAE) or its stage 2 (the MaskGIT prior)?

    python experiments/timevqvae_stage1.py [--work outputs/generator_benchmarks] [--out results/generator_benchmarks]
        [--repeats 5] [--seed 0] [--device auto]

Reads the TimeVQVAE that `generator_benchmarks.py` fitted on Sines at its authors' settings (--work/sines/timevqvae)
and puts the Sines series through stage 1 only: tokens of the encoder, decoded again (x -> Q(E(x)) -> D). The
prior can do no better than these reconstructions, so if they already score like the samples on the benchmark's
metrics, the gap is in stage 1, and it shows in the codebooks' use and in what the decoder adds (the curvature
sign changes of a smooth sine are rare). Writes --out/timevqvae_stage1.{csv,md} and its manifest; the metrics
are cached beside the benchmark's (same protocol, same TS2Vec encoders).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: the repository's experiments/
from experiments.generator_benchmarks import METRICS, _commit, context_encoders, score
from tardiff import benchmark_data, field_metrics
from tardiff.generators import load_generator
from tardiff.generators.timevqvae import split_bands
from tardiff.utils import write_manifest


def reconstruct(model, X: np.ndarray, batch: int = 1000) -> tuple[np.ndarray, dict]:
    """Stage-1 reconstructions of X (n, L, C) in data units, and per band the tokens and relative errors."""
    model = model.eval()
    mean, sd = model.data_mean, model.data_std
    parts = {"lf": [], "hf": [], "tokens_lf": [], "tokens_hf": [], "target_lf": [], "target_hf": []}
    with torch.no_grad():
        for start in range(0, len(X), batch):
            z = (torch.as_tensor(X[start:start + batch], dtype=torch.float32).transpose(1, 2) - mean) / sd
            tokens_lf, tokens_hf = model.vqvae.tokens(z)
            target_lf, target_hf = split_bands(z, model.vqvae.n_fft)
            for key, value in (("lf", model.vqvae.decode_tokens("lf", tokens_lf)),
                               ("hf", model.vqvae.decode_tokens("hf", tokens_hf)), ("tokens_lf", tokens_lf),
                               ("tokens_hf", tokens_hf), ("target_lf", target_lf), ("target_hf", target_hf)):
                parts[key].append(value)
    cat = {k: torch.cat(v) for k, v in parts.items()}
    rec = ((cat["lf"] + cat["hf"]) * sd + mean).transpose(1, 2).numpy()
    info = {}
    for band in ("lf", "hf"):
        embed = model.vqvae.branch(band)[1].embed
        info[f"{band}_codebook_size"] = len(embed)
        info[f"{band}_codes_used"] = int(torch.unique(cat[f"tokens_{band}"]).numel())
        # codes the EMA shrank towards 0 (down to denormals), never revived: no dead-code replacement
        info[f"{band}_codes_collapsed"] = int((embed.norm(dim=1) < 1e-6).sum())
        target = cat[f"target_{band}"]
        info[f"{band}_relative_mse"] = float(((cat[band] - target) ** 2).mean() / (target ** 2).mean())
    return rec.astype(np.float32), info


def curvature_sign_changes(X: np.ndarray) -> float:
    """Mean count per series and channel of sign changes of the second difference (a smooth sine: about 0)."""
    d2 = np.sign(np.diff(X, 2, axis=1))
    return float((np.diff(d2, axis=1) != 0).sum(axis=1).mean())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="outputs/generator_benchmarks")
    parser.add_argument("--out", default="results/generator_benchmarks")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    work, out = Path(args.work), Path(args.out)
    folder = work / "sines" / "timevqvae"
    if not (folder / "samples.npy").exists():
        print(f"timevqvae_stage1: no fitted Sines TimeVQVAE with samples in {folder}; run "
              "`python experiments/generator_benchmarks.py --generators timevqvae --benchmarks sines` first",
              file=sys.stderr)
        return 2
    start = time.perf_counter()
    real = benchmark_data.sines()
    samples = np.load(folder / "samples.npy")
    generator = load_generator(folder, device="cpu")
    reconstructions, info = reconstruct(generator.parts[None].model, real)
    encoders = context_encoders(real, work, "sines", args.repeats, args.seed, args.device)
    rows = []
    for name, X in (("timevqvae", samples), ("timevqvae stage 1 (reconstructions)", reconstructions)):
        scores = score(name, real, X, encoders, work, "sines", args.repeats, args.seed, args.device)
        row = {"set": name, "curvature_sign_changes": curvature_sign_changes(X)}
        for metric in METRICS:
            summary = field_metrics.Summary.of(scores[metric])
            row[metric], row[f"{metric}_ci"] = summary.mean, summary.half_width
        rows.append(row)
    rows.append({"set": "real (Sines)", "curvature_sign_changes": curvature_sign_changes(real)})
    table = pd.DataFrame(rows)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "timevqvae_stage1.csv", index=False)
    lines = ["| set | " + " | ".join(METRICS) + " | curvature sign changes per channel |",
             "|---|" + "---|" * (len(METRICS) + 1)]
    for _, row in table.iterrows():
        cells = [f"{row[m]:.3f} ± {row[m + '_ci']:.3f}" if pd.notna(row.get(m)) else "" for m in METRICS]
        lines.append(f"| {row['set']} | " + " | ".join(cells) + f" | {row['curvature_sign_changes']:.1f} |")
    lines += ["", "Stage 1 of the fitted model: " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                                                              for k, v in info.items())]
    (out / "timevqvae_stage1.md").write_text("\n".join(lines) + "\n")
    write_manifest(out / "timevqvae_stage1.json", config={"repeats": args.repeats, "model": str(folder)},
                   seed=args.seed, wall_time_s=time.perf_counter() - start, commit=_commit(), stage1=info)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
