"""TimeVQVAE (Lee, Malacarne, Aune; AISTATS 2023), rebuilt in PyTorch from ML4ITS/TimeVQVAE (MIT).

Read at v1.0.1 (commit 39f98e9): `configs/config.yaml`, `src/timevqvae/{vqvae.py, maskgit.py,
models/vq_vae_encdec.py, models/bidirectional_transformer.py, vector_quantization/vq.py, utils/signal.py,
utils/nn.py}`, its tests; and, for the training loop, schedule and data scaling that v1.0.1 no longer
ships, the parent of commit b3d87ed: `experiments/exp_stage1.py`, `experiments/exp_stage2.py`,
`stage1.py`, `stage2.py`, `utils/optim.py`, `preprocessing/preprocess_ucr.py`.

Stage 1, a VQ-VAE per frequency band:
- STFT (n_fft 4, hop 1, Hann, centred, normalised) of each channel -> (B, 2C, 3, L+1), real and imaginary
  parts as channels. The low-frequency (LF) branch sees bin 0, the high-frequency (HF) branch bins 1-2.
  The targets x_l, x_h are the inverse STFTs of the spectrum with the other band zeroed (x_l + x_h = x).
- Encoder: a strided depthwise-separable block (replicate padding) to init_dim 4, then per further
  halving a block and n_resnet_blocks 2 residual blocks (Snake activations, weight norm, BatchNorm,
  dropout .3), a residual block to hid_dim 128, L2-normalised over channels. Kernels (1, k) for LF
  (frequency-independent), (3, k) for HF. Halvings: round(log2(rate)) with rate = round(L / width).
- Quantiser (their `vq.py`, from lucidrains' vector-quantize-pytorch of 2022): Linear 128 -> 8, a
  Euclidean codebook of 1,024 codes, nearest code by argmax of -||x - e||², no gradient to the codes,
  which follow an EMA (decay .8, Laplace smoothing eps 1e-5); k-means (10 iterations) on the first batch
  initialises them, and then `embed_avg` = the means, not means × counts, as in their file; no dead-code
  replacement; commitment loss MSE(sg[e], x) with weight 1; straight-through; Linear 8 -> 128.
- Decoder: residual block from hid_dim, per halving two residual blocks and a transposed-conv block, then
  two more stride-2 transposed convs (so the spectrogram comes out at twice the encoded width), the other
  band's rows zero-padded, inverse STFT, linear interpolation to L.
- Loss: MSE(x_l, x̂_l) + L1(x_h, x̂_h) + both commitment losses.

Stage 2, a MaskGIT prior per band (VQ-VAE frozen, in eval mode):
- LF: token embedding (1,024 + mask, dim hid_dim 128) + learned positions, a class token in front,
  Linear to hidden 128, 4 blocks of (pre-LayerNorm attention with a learned null key/value, l2-normalised
  q and k with learned scales, dim_head 64, 2 heads, LayerNorm after; then a feed-forward LayerNorm,
  Linear to int(2/3 · ff_mult · dim), GELU, weight-normed LayerNorm, Linear back), head
  Linear-GELU-LayerNorm-Linear to 1,024 logits. HF: the LF tokens' embeddings upsampled (nearest, then
  two convs through 256 channels) beside the HF tokens' embeddings (dim 256), hidden 32, 1 block, 1 head.
- Training: tokens masked by the cosine schedule (kept count floor(cos(r π/2) n), r ~ U(0, 1), at most
  n - 1), cross-entropy on the masked tokens, LF + HF; embedding dropout .3 on the unmasked tokens; the
  class replaced by the null class with p_unconditional .2 (classifier-free guidance). The HF prior sees
  the true LF tokens.
- Sampling: iterative decoding, LF then HF, 10 steps each: sample every token from the logits, keep the
  known ones, re-mask the floor(n cos(π/2 · t/T)) least confident (log p + choice temperature · (1 − t/T)
  · Gumbel; temperature 10 LF, 0 HF); logits = uncond + cfg_scale (cond − uncond), cfg_scale 1 (the
  conditional logits alone). Decoded x = x̂_l + x̂_h.
- AdamW (lr 5e-3, torch defaults otherwise), batch 32 shuffled, 20,000 steps stage 1 and 40,000 stage 2,
  each with their `linear_warmup_cosine_annealingLR` (linear warm-up over 5 % of the steps, cosine to
  min_lr 5e-4) stepped in `training_step`, and stepped once more at every epoch's end by Lightning
  (a scheduler returned from `configure_optimizers` has interval "epoch"): `scheduler_epoch_step`.
- Data: `DatasetImporterUCR(data_scaling=True)` standardises each channel by its mean and (population)
  std over the training stays and time. There is no such Scaler kind, so `scaling` is "none" and the
  model keeps the mean and std as buffers, standardising in `train` and inverting in `generate`.

Labels: class-conditional, one model for all labels (native_labels). With y=None (n_classes None) the
model has a single class, label 0, trained with the same null-class dropout and sampled conditioned on it.

Length 24 (their widths were chosen for UCR series of 60-2,844 steps): their code needs no change, and
none is made. Their rule gives LF rate round(24 / 8) = 3, i.e. round(log2 3) = 2 halvings, so 25 STFT
frames -> 12 -> 6 LF tokens (not 8); HF width 32 > 24 gives rate 1, and their encoder halves once anyway:
2 bins × 12 = 24 HF tokens. The decoders produce 48 frames (47 samples), interpolated linearly to 24.
A series shorter than n_fft is refused (the centred STFT's reflect padding needs L > n_fft / 2).

Departures, each with its reason:
- The configuration's `use_rmsnorm` and `model_dropout` are not here: their v1.0.1 transformer accepts and
  ignores both (they fed the x-transformers encoder of earlier versions), so it has no RMSNorm and no
  dropout inside the blocks; only `emb_dropout` acts. The 2023 release's time-frequency reconstruction
  losses are not here either: the code that goes with these sizes computes the two time-domain ones.
- Their Snake activations draw their initial frequencies from numpy's global generator, their masking
  ratios from numpy's and the rest from torch's global one; here all come from torch, under the fit's
  seed (torch.Generator for data order, k-means, masking, class dropout, sampling), so fits are seeded
  and resumable. Tokens are drawn by inverting the CDF: the distribution of their Categorical, whose
  torch.multinomial is 15× slower on a CPU.
- Their k-means initialisation runs on the first batch the quantiser sees, which under Lightning is the
  sanity-check validation batch (test split); we have no test split, so it is the first training batch.
  Their validation every 1,000 steps (which changes no weight) is not run.
- Speed, with the same result: their per-sample Python loops (masking, top-k re-masking) are vectorised;
  the nearest code drops the constant -||x||²; the prediction head skips the class token it discards;
  sampling computes the HF prior's LF context once, not at each of the 10 steps (eval: no dropout); AdamW
  runs fused; sampling batches are 256 (theirs 32).
- A constant channel (std 0) is divided by 1, not 0.

Held to their code by experiments/authors_equivalence/timevqvae.py (tests/test_authors_equivalence.py;
results/authors_equivalence/timevqvae.md): on the same weights, batches, dropout masks and random draws,
every stage-1 and stage-2 loss term over K = 24 AdamW steps per stage (their schedule with its epoch-end
steps), every gradient, the parameters, codebooks (k-means start, EMA) and BatchNorm statistics after those
steps, and iterative decoding with cfg scale 2 (each step's logits, the tokens, the series) equal theirs
within each output's measured float32 noise, most of them bitwise; the sampled tokens exactly.
vector-quantize-pytorch 1.32.0 does not reproduce their quantiser (its k-means start sets embed_avg to
means × counts), so it is not used.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from tardiff.generators.base import Checkpoint, Generator, progress_bar
from tardiff.settings import check, count, fraction, number, positive


@dataclass
class TimeVQVAEConfig:
    # stage 1 (config.yaml: encoder, decoder, VQ-VAE)
    n_fft: int = 4
    init_dim: int = 4
    hid_dim: int = 128                   # also the transformers' token-embedding dim, as in exp_stage2.py
    encoder_n_resnet_blocks: int = 2
    decoder_n_resnet_blocks: int = 2
    downsampled_width_lf: int = 8
    downsampled_width_hf: int = 32
    encdec_dropout: float = 0.3          # the residual blocks' dropout (their encoder/decoder default)
    codebook_size_lf: int = 1024
    codebook_size_hf: int = 1024
    codebook_dim: int = 8
    kmeans_init: bool = True
    kmeans_iters: int = 10
    codebook_decay: float = 0.8
    commitment_weight: float = 1.0
    # stage 2 (config.yaml: MaskGIT.prior_model_l / prior_model_h)
    lf_hidden_dim: int = 128
    lf_n_layers: int = 4
    lf_heads: int = 2
    hf_hidden_dim: int = 32
    hf_n_layers: int = 1
    hf_heads: int = 1
    dim_head: int = 64                   # fixed in their BidirectionalTransformer
    ff_mult: int = 1
    emb_dropout: float = 0.3
    p_unconditional: float = 0.2
    cfg_scale: float = 1.0               # read in training too: their masked_prediction applies it there
    # training (config.yaml: dataset, exp_params, trainer_params)
    batch_size: int = 32
    lr: float = 5e-3
    weight_decay: float = 0.01           # torch AdamW's default, which they keep
    linear_warmup_rate: float = 0.05
    min_lr: float = 5e-4
    max_steps_stage1: int = 20_000
    max_steps_stage2: int = 40_000
    scheduler_epoch_step: bool = True    # Lightning's extra scheduler step at each epoch's end
    data_scaling: bool = True
    # sampling (config.yaml: MaskGIT.choice_temperatures, MaskGIT.T)
    choice_temperature_lf: float = 10.0
    choice_temperature_hf: float = 0.0
    sampling_steps_lf: int = 10
    sampling_steps_hf: int = 10
    sample_batch_size: int = 256          # CPU: larger batches are slower (the (B, n, 1024) logits leave the cache)

    RANGES: ClassVar[dict] = {
        "n_fft": count(2, why="bin 0 and at least one more"), "init_dim": count(), "hid_dim": count(),
        "encoder_n_resnet_blocks": count(), "decoder_n_resnet_blocks": count(), "downsampled_width_lf": count(),
        "downsampled_width_hf": count(), "encdec_dropout": fraction(), "codebook_size_lf": count(),
        "codebook_size_hf": count(), "codebook_dim": count(), "kmeans_iters": count(0), "codebook_decay": fraction(),
        "commitment_weight": number(0), "lf_hidden_dim": count(), "lf_n_layers": count(), "lf_heads": count(),
        "hf_hidden_dim": count(), "hf_n_layers": count(), "hf_heads": count(), "dim_head": count(),
        "ff_mult": count(), "emb_dropout": fraction(), "p_unconditional": fraction(), "cfg_scale": number(0),
        "batch_size": count(), "lr": positive(), "weight_decay": number(0), "linear_warmup_rate": number(0, 1),
        "min_lr": number(0), "max_steps_stage1": count(), "max_steps_stage2": count(),
        "choice_temperature_lf": number(0), "choice_temperature_hf": number(0), "sampling_steps_lf": count(),
        "sampling_steps_hf": count(), "sample_batch_size": count(),
    }

    def __post_init__(self):
        check(self)

    @classmethod
    def tiny(cls) -> "TimeVQVAEConfig":
        """Seconds on a CPU: for the tests and the smoke profile."""
        return cls(hid_dim=16, encoder_n_resnet_blocks=1, decoder_n_resnet_blocks=1, codebook_size_lf=32,
                   codebook_size_hf=32, codebook_dim=4, lf_hidden_dim=16, lf_n_layers=1, lf_heads=1,
                   hf_hidden_dim=8, dim_head=8, max_steps_stage1=12, max_steps_stage2=12,
                   sampling_steps_lf=4, sampling_steps_hf=4)


# --------------------------------------------------------------------------- the frequency split

def stft(x: torch.Tensor, n_fft: int) -> torch.Tensor:
    """(B, C, L) -> (B, 2C, n_fft/2 + 1, L + 1): their `time_to_timefreq`, channels (c, real/imag)."""
    B, C, L = x.shape
    spec = torch.stft(x.reshape(B * C, L), n_fft, normalized=True, return_complex=True,
                      window=torch.hann_window(n_fft, device=x.device))
    spec = torch.view_as_real(spec)                                      # (B C, H, W, 2)
    return spec.reshape(B, C, *spec.shape[1:]).permute(0, 1, 4, 2, 3).reshape(B, 2 * C, *spec.shape[1:3])


def istft(u: torch.Tensor, n_fft: int) -> torch.Tensor:
    """(B, 2C, H, W) -> (B, C, W - 1): their `timefreq_to_time`."""
    B, C2, H, W = u.shape
    spec = u.reshape(B, C2 // 2, 2, H, W).permute(0, 1, 3, 4, 2).reshape(B * C2 // 2, H, W, 2)
    x = torch.istft(torch.view_as_complex(spec.contiguous()), n_fft, normalized=True,
                    window=torch.hann_window(n_fft, device=u.device))
    return x.reshape(B, C2 // 2, -1)


def split_bands(x: torch.Tensor, n_fft: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x (B, C, L) -> (x_l, x_h): the inverse STFTs of bin 0 alone and of bins 1.. alone."""
    spec = stft(x, n_fft)
    low, high = torch.zeros_like(spec), torch.zeros_like(spec)
    low[:, :, 0], high[:, :, 1:] = spec[:, :, 0], spec[:, :, 1:]
    L = x.shape[-1]
    return (F.interpolate(istft(low, n_fft), L, mode="linear"), F.interpolate(istft(high, n_fft), L, mode="linear"))


def downsample_rate(seq_len: int, n_fft: int, width: int) -> int:
    """Their `compute_downsample_rate`."""
    if seq_len < width:
        return 1
    return round(seq_len / (np.log2(n_fft) - 1) / width)


def n_halvings(rate: int) -> int:
    """round(log2 rate) in their encoder, which always halves at least once."""
    return int(round(np.log2(rate)))


def token_grid(seq_len: int, n_fft: int, width: int, kind: str) -> tuple[int, int]:
    """(H', W') of a band's token map: W = L + 1 STFT frames, halved by (kernel 4, stride 2, pad 1) convs."""
    W = seq_len + 1
    for _ in range(max(n_halvings(downsample_rate(seq_len, n_fft, width)) - 1, 0) + 1):
        W = (W + 2 - 4) // 2 + 1
    return (1 if kind == "lf" else n_fft // 2), W


# --------------------------------------------------------------------------- stage 1 networks

class Snake(nn.Module):
    """x + sin²(a x) / a with a learned frequency per channel, a ~ U(0.2, 0.5) at the start."""

    def __init__(self, channels: int):
        super().__init__()
        self.a = nn.Parameter(torch.empty(1, channels, 1, 1).uniform_(0.2, 0.5))

    def forward(self, x):
        return x + (1 / self.a) * torch.sin(self.a * x) ** 2


def _kernel(freq_independent: bool, width: int) -> tuple[tuple[int, int], tuple[int, int]]:
    return ((1, width), (0, 1)) if freq_independent else ((3, width), (1, 1))


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, freq_independent: bool, dropout: float):
        super().__init__()
        k, p = _kernel(freq_independent, 3)
        self.convs = nn.Sequential(
            Snake(c_in), weight_norm(nn.Conv2d(c_in, c_in, k, padding=p, groups=c_in)),
            weight_norm(nn.Conv2d(c_in, c_out, 1)), nn.BatchNorm2d(c_out),
            Snake(c_out), weight_norm(nn.Conv2d(c_out, c_out, k, padding=p, groups=c_out)),
            weight_norm(nn.Conv2d(c_out, c_out, 1)), nn.Dropout(dropout))
        self.proj = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)

    def forward(self, x):
        return self.proj(x) + self.convs(x)


def _down_block(c_in: int, c_out: int, freq_independent: bool) -> nn.Sequential:
    """Halves the width: their VQVAEEncBlock (dropout 0)."""
    k, p = _kernel(freq_independent, 4)
    return nn.Sequential(weight_norm(nn.Conv2d(c_in, c_in, k, stride=(1, 2), padding=p, padding_mode="replicate",
                                               groups=c_in)),
                         weight_norm(nn.Conv2d(c_in, c_out, 1)), nn.BatchNorm2d(c_out), Snake(c_out))


def _up_block(c_in: int, c_out: int, freq_independent: bool) -> nn.Sequential:
    """Doubles the width: their VQVAEDecBlock (dropout 0)."""
    k, p = _kernel(freq_independent, 4)
    return nn.Sequential(weight_norm(nn.ConvTranspose2d(c_in, c_in, k, stride=(1, 2), padding=p, groups=c_in)),
                         weight_norm(nn.ConvTranspose2d(c_in, c_out, 1)), nn.BatchNorm2d(c_out), Snake(c_out))


class Encoder(nn.Module):
    """The STFT (B, 2C, n_fft/2 + 1, L+1) -> its band's rows encoded (B, hid_dim, H', W'), unit length over
    channels."""

    def __init__(self, kind: str, n_channels: int, rate: int, c: TimeVQVAEConfig):
        super().__init__()
        self.kind, fi = kind, kind == "lf"
        layers, d = [_down_block(n_channels, c.init_dim, fi)], 2 * c.init_dim
        for _ in range(n_halvings(rate) - 1):
            layers.append(_down_block(d // 2, d, fi))
            layers += [ResBlock(d, d, fi, c.encdec_dropout) for _ in range(c.encoder_n_resnet_blocks)]
            d *= 2
        layers.append(ResBlock(d // 2, c.hid_dim, fi, c.encdec_dropout))
        self.encoder = nn.Sequential(*layers)

    def forward(self, spec):
        rows = spec[:, :, :1] if self.kind == "lf" else spec[:, :, 1:]
        return F.normalize(self.encoder(rows), dim=1)


class Decoder(nn.Module):
    """(B, hid_dim, H, W') -> the band's time series (B, C, L)."""

    def __init__(self, kind: str, n_channels: int, rate: int, seq_len: int, c: TimeVQVAEConfig):
        super().__init__()
        self.kind, self.seq_len, self.n_fft, fi = kind, seq_len, c.n_fft, kind == "lf"
        h = n_halvings(rate)
        d = c.init_dim * 2 ** max(h - 1, 0)
        layers = [ResBlock(c.hid_dim, d, fi, c.encdec_dropout)]
        for _ in range(h - 1):
            layers += [ResBlock(d, d, fi, c.encdec_dropout) for _ in range(c.decoder_n_resnet_blocks)]
            d //= 2
            layers.append(_up_block(2 * d, d, fi))
        k, p = _kernel(fi, 4)
        layers.append(nn.Sequential(nn.ConvTranspose2d(d, d, k, stride=(1, 2), padding=p, groups=d),
                                    nn.ConvTranspose2d(d, n_channels, 1)))
        layers.append(nn.Sequential(nn.ConvTranspose2d(n_channels, n_channels, k, stride=(1, 2), padding=p),
                                    nn.ConvTranspose2d(n_channels, n_channels, 1)))
        self.decoder = nn.Sequential(*layers)

    def forward(self, z):
        out = self.decoder(z)                                                # (B, 2C, H, 2 W'')
        spec = out.new_zeros(out.shape[0], out.shape[1], self.n_fft // 2 + 1, out.shape[-1])
        if self.kind == "lf":
            spec[:, :, :1] = out
        else:
            spec[:, :, 1:] = out
        return F.interpolate(istft(spec, self.n_fft), self.seq_len, mode="linear")  # (B, C, L)


class VectorQuantizer(nn.Module):
    """Their VectorQuantize: Linear to codebook_dim, a Euclidean codebook that follows an EMA of its
    assigned vectors (no gradient), k-means initialisation on the first batch, commitment loss."""

    def __init__(self, dim: int, codebook_size: int, codebook_dim: int, decay: float = 0.8, eps: float = 1e-5,
                 kmeans_init: bool = True, kmeans_iters: int = 10, commitment_weight: float = 1.0):
        super().__init__()
        self.codebook_size, self.decay, self.eps = codebook_size, decay, eps
        self.kmeans_iters, self.commitment_weight = kmeans_iters, commitment_weight
        self.project_in = nn.Linear(dim, codebook_dim) if codebook_dim != dim else nn.Identity()
        self.project_out = nn.Linear(codebook_dim, dim) if codebook_dim != dim else nn.Identity()
        embed = torch.zeros(codebook_size, codebook_dim) if kmeans_init else torch.randn(codebook_size, codebook_dim)
        self.register_buffer("initted", torch.tensor(not kmeans_init))
        self.register_buffer("cluster_size", torch.zeros(codebook_size))
        self.register_buffer("embed_avg", embed.clone())
        self.register_buffer("embed", embed)

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """(N, d) -> (N,) index of the closest code: argmax of -||x - e||², less its constant -||x||²."""
        return torch.addmm(-self.embed.pow(2).sum(1), flat, self.embed.t(), alpha=2).argmax(dim=-1)

    @torch.no_grad()
    def init_embed_(self, flat: torch.Tensor, generator: torch.Generator | None) -> None:
        """k-means from codes sampled among the batch (with replacement if it has fewer vectors than codes)."""
        N, K = len(flat), self.codebook_size
        pick = torch.randperm(N, generator=generator)[:K] if N >= K else torch.randint(0, N, (K,), generator=generator)
        means = flat[pick.to(flat.device)]
        for _ in range(self.kmeans_iters):
            buckets = (-((flat[:, None] - means[None]) ** 2).sum(-1)).argmax(dim=-1)
            bins = torch.bincount(buckets, minlength=K)
            new_means = flat.new_zeros(K, flat.shape[1]).index_add_(0, buckets, flat)
            new_means = new_means / bins.masked_fill(bins == 0, 1)[:, None]
            means = torch.where((bins == 0)[:, None], means, new_means)
        self.embed.copy_(means)
        self.embed_avg.copy_(means)                    # the means, not means × counts: their vq.py
        self.cluster_size.copy_(bins)
        self.initted.fill_(True)

    @torch.no_grad()
    def ema_update_(self, flat: torch.Tensor, index: torch.Tensor) -> None:
        counts = torch.bincount(index, minlength=self.codebook_size).to(flat.dtype)
        sums = flat.new_zeros(self.codebook_size, flat.shape[1]).index_add_(0, index, flat)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_avg.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (total + self.codebook_size * self.eps) * total
        self.embed.copy_(self.embed_avg / smoothed[:, None])

    def forward(self, z: torch.Tensor, generator: torch.Generator | None = None):
        """z (B, N, dim) -> (z_q (B, N, dim), index (B, N), commitment loss, perplexity)."""
        x = self.project_in(z)                                               # (B, N, d)
        flat = x.reshape(-1, x.shape[-1])
        if not self.initted:
            self.init_embed_(flat.detach(), generator)
        index = self.nearest(flat.detach())
        quantized = self.embed[index].view_as(x)                             # the codes before this update
        commit = x.new_zeros(())
        if self.training:
            self.ema_update_(flat.detach(), index)
            quantized = x + (quantized - x).detach()                          # straight-through
            commit = F.mse_loss(quantized.detach(), x) * self.commitment_weight
        probs = torch.bincount(index, minlength=self.codebook_size).float() / len(index)
        perplexity = torch.exp(-(probs * torch.log(probs + 1e-10)).sum())
        return self.project_out(quantized), index.view(x.shape[:-1]), commit, perplexity


class VQVAE(nn.Module):
    """Stage 1: an encoder, quantiser and decoder for each of the LF and HF bands."""

    def __init__(self, n_features: int, seq_len: int, c: TimeVQVAEConfig):
        super().__init__()
        self.n_fft = c.n_fft
        self.grids = {}
        for kind, width, size in (("lf", c.downsampled_width_lf, c.codebook_size_lf),
                                  ("hf", c.downsampled_width_hf, c.codebook_size_hf)):
            rate = downsample_rate(seq_len, c.n_fft, width)
            setattr(self, f"encoder_{kind[0]}", Encoder(kind, 2 * n_features, rate, c))
            setattr(self, f"vq_model_{kind[0]}", VectorQuantizer(c.hid_dim, size, c.codebook_dim, c.codebook_decay,
                                                                kmeans_init=c.kmeans_init, kmeans_iters=c.kmeans_iters,
                                                                commitment_weight=c.commitment_weight))
            setattr(self, f"decoder_{kind[0]}", Decoder(kind, 2 * n_features, rate, seq_len, c))
            self.grids[kind] = token_grid(seq_len, c.n_fft, width, kind)

    def branch(self, kind: str):
        return (getattr(self, f"encoder_{kind[0]}"), getattr(self, f"vq_model_{kind[0]}"),
                getattr(self, f"decoder_{kind[0]}"))

    def quantize(self, kind: str, x: torch.Tensor, generator=None):
        """x (B, C, L) -> (z_q (B, hid, H', W'), tokens (B, H'W'), commitment loss, perplexity)."""
        encoder, vq, _ = self.branch(kind)
        z = encoder(stft(x, self.n_fft))                                      # (B, hid, H', W')
        B, D, H, W = z.shape
        z_q, tokens, commit, perplexity = vq(z.flatten(2).transpose(1, 2), generator)  # tokens in (h w) order
        return z_q.transpose(1, 2).reshape(B, D, H, W), tokens, commit, perplexity

    def loss(self, x: torch.Tensor, generator=None) -> dict:
        x_l, x_h = split_bands(x, self.n_fft)
        z_l, _, commit_l, perplexity_l = self.quantize("lf", x, generator)
        z_h, _, commit_h, perplexity_h = self.quantize("hf", x, generator)
        out = {"LF.time": F.mse_loss(self.decoder_l(z_l), x_l), "HF.time": F.l1_loss(self.decoder_h(z_h), x_h),
               "commit.LF": commit_l, "commit.HF": commit_h}
        out["loss"] = out["LF.time"] + out["HF.time"] + commit_l + commit_h
        out["perplexity.LF"], out["perplexity.HF"] = perplexity_l.detach(), perplexity_h.detach()
        return out

    @torch.no_grad()
    def tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.quantize("lf", x)[1], self.quantize("hf", x)[1]

    def decode_tokens(self, kind: str, tokens: torch.Tensor) -> torch.Tensor:
        """(B, H'W') code indices -> the band's series (B, C, L)."""
        _, vq, decoder = self.branch(kind)
        z = vq.project_out(vq.embed[tokens])                                  # (B, N, hid)
        H, W = self.grids[kind]
        return decoder(z.transpose(1, 2).reshape(len(tokens), -1, H, W))


# --------------------------------------------------------------------------- stage 2 networks

class Attention(nn.Module):
    """Their Attention: pre-LayerNorm, a learned null key/value, l2-normalised q and k with learned
    per-dimension scales, softmax(q k^T / sqrt(dim_head)) v, LayerNorm after the output projection."""

    def __init__(self, dim: int, dim_head: int, heads: int):
        super().__init__()
        self.heads, inner = heads, dim_head * heads
        self.norm = nn.LayerNorm(dim)
        self.null_kv = nn.Parameter(torch.randn(2, heads, 1, dim_head))
        self.to_q = weight_norm(nn.Linear(dim, inner, bias=False))
        self.to_kv = weight_norm(nn.Linear(dim, 2 * inner, bias=False))
        self.q_scale = nn.Parameter(torch.ones(dim_head))
        self.k_scale = nn.Parameter(torch.ones(dim_head))
        self.to_out = weight_norm(nn.Linear(inner, dim, bias=False))
        self.norm_out = nn.LayerNorm(dim)

    def forward(self, x):
        B, N, _ = x.shape
        x = self.norm(x)
        q, k, v = (self.to_q(x), *self.to_kv(x).chunk(2, dim=-1))
        q, k, v = (t.reshape(B, N, self.heads, -1).transpose(1, 2) for t in (q, k, v))   # (B, h, N, d)
        k = torch.cat((self.null_kv[0].expand(B, -1, -1, -1), k), dim=2)
        v = torch.cat((self.null_kv[1].expand(B, -1, -1, -1), v), dim=2)
        q, k = F.normalize(q, dim=-1) * self.q_scale, F.normalize(k, dim=-1) * self.k_scale
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, -1)
        return self.norm_out(self.to_out(out))


def feed_forward(dim: int, mult: int) -> nn.Sequential:
    inner = int(dim * mult * 2 / 3)
    return nn.Sequential(nn.LayerNorm(dim), weight_norm(nn.Linear(dim, inner, bias=False)), nn.GELU(),
                         weight_norm(nn.LayerNorm(inner)), nn.Linear(inner, dim, bias=False))


class TransformerBlocks(nn.Module):
    def __init__(self, dim: int, depth: int, dim_head: int, heads: int, ff_mult: int):
        super().__init__()
        self.layers = nn.ModuleList(nn.ModuleList([Attention(dim, dim_head, heads), feed_forward(dim, ff_mult)])
                                    for _ in range(depth))

    def forward(self, x):
        for attn, ff in self.layers:
            x = x + attn(x)
            x = x + ff(x)
        return x


class Upscale(nn.Module):
    """The LF token embeddings (B, n, d) stretched to the HF token count m (nearest), then two convs."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.conv = nn.Sequential(weight_norm(nn.Conv1d(dim, hidden, 7, padding=3)), nn.GELU(), nn.BatchNorm1d(hidden),
                                  weight_norm(nn.Conv1d(hidden, dim, 7, dilation=2, padding=6)))

    def forward(self, x, size: int):
        return self.conv(F.interpolate(x.transpose(1, 2), size=(size,), mode="nearest")).transpose(1, 2)


class PriorTransformer(nn.Module):
    """Their BidirectionalTransformer: the logits of every token of one band given the masked tokens
    (and, for HF, the LF tokens) and a class token; class n_classes is the null class."""

    def __init__(self, kind: str, num_tokens: int, codebook_sizes: dict, n_classes: int, hidden_dim: int,
                 n_layers: int, heads: int, c: TimeVQVAEConfig):
        super().__init__()
        self.kind, self.n_classes = kind, n_classes
        self.p_unconditional, self.emb_dropout = c.p_unconditional, c.emb_dropout
        self.mask_id = dict(codebook_sizes)                                   # the mask token = codebook size
        in_dim = c.hid_dim if kind == "lf" else 2 * c.hid_dim
        self.tok_emb_l = nn.Embedding(codebook_sizes["lf"] + 1, c.hid_dim)
        if kind == "hf":
            self.tok_emb_h = nn.Embedding(codebook_sizes["hf"] + 1, c.hid_dim)
        self.pos_emb = nn.Embedding(num_tokens + 1, in_dim)
        self.class_condition_emb = nn.Embedding(n_classes + 1, in_dim)
        self.proj_in = nn.Linear(in_dim, hidden_dim)
        self.blocks = TransformerBlocks(hidden_dim, n_layers, c.dim_head, heads, c.ff_mult)
        self.pred_head = nn.Sequential(weight_norm(nn.Linear(hidden_dim, hidden_dim)), nn.GELU(),
                                       nn.LayerNorm(hidden_dim, eps=1e-12),
                                       weight_norm(nn.Linear(hidden_dim, codebook_sizes[kind])))
        if kind == "hf":
            self.projector = Upscale(c.hid_dim, 2 * c.hid_dim)

    def class_embedding(self, class_condition, batch: int, device, generator=None):
        """(B, 1, in_dim); in training each label is replaced by the null class with p_unconditional."""
        if class_condition is None:
            return self.class_condition_emb(torch.full((batch, 1), self.n_classes, device=device))
        if self.training:
            keep = torch.rand(class_condition.shape, generator=generator).to(device) > self.p_unconditional
            class_condition = torch.where(keep, class_condition.long(), self.n_classes)
        return self.class_condition_emb(class_condition.long())

    def _embedding_dropout(self, tokens, emb, kind):
        """Dropout on the embeddings of unmasked tokens only (training)."""
        if not self.training:
            return emb
        return torch.where((tokens == self.mask_id[kind])[..., None], emb, F.dropout(emb, self.emb_dropout))

    def lf_context(self, tokens_l: torch.Tensor, size: int) -> torch.Tensor:
        """HF only: the LF tokens' embeddings stretched to the HF token count (B, m, d); fixed while the
        HF tokens are decoded, so sampling computes it once."""
        return self.projector(self._embedding_dropout(tokens_l, self.tok_emb_l(tokens_l), "lf"), size)

    def forward(self, tokens_l, tokens_h=None, class_condition=None, generator=None, context=None):
        if self.kind == "lf":
            emb = self._embedding_dropout(tokens_l, self.tok_emb_l(tokens_l), "lf")  # (B, n, d)
        else:
            emb_h = self._embedding_dropout(tokens_h, self.tok_emb_h(tokens_h), "hf")
            context = self.lf_context(tokens_l, emb_h.shape[1]) if context is None else context
            emb = torch.cat((context, emb_h), dim=-1)                                   # (B, m, 2d)
        cls = self.class_embedding(class_condition, len(tokens_l), tokens_l.device, generator)
        h = torch.cat((cls, emb + self.pos_emb.weight[:emb.shape[1]]), dim=1)       # (B, 1 + n, in_dim)
        return self.pred_head(self.blocks(self.proj_in(h))[:, 1:])                  # (B, n, codebook size)


def guided_logits(logits_cond: torch.Tensor, logits_uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: uncond + scale (cond - uncond)."""
    return logits_uncond + scale * (logits_cond - logits_uncond)


# --------------------------------------------------------------------------- MaskGIT's masking and decoding

def cosine_schedule(r):
    """γ(r) = cos(r π/2): the share of tokens masked at progress r (training) or after step r T (sampling)."""
    return np.cos(np.asarray(r, dtype=np.float64) * np.pi / 2)


def random_token_mask(tokens: torch.Tensor, mask_id: int, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Training masks (B, n) -> (masked tokens, known): floor(γ(r) n) tokens kept, r ~ U(0, 1), at most n − 1."""
    B, n = tokens.shape
    ratios = torch.rand(B, generator=generator, dtype=torch.float64)
    n_known = torch.floor(torch.cos(ratios * math.pi / 2) * n).clamp(0, n - 1).long()
    scores = torch.rand((B, n), generator=generator)
    rank = scores.argsort(dim=1, descending=True).argsort(dim=1)           # 0 for the highest score
    known = (rank < n_known[:, None]).to(tokens.device)
    return torch.where(known, tokens, torch.full_like(tokens, mask_id)), known


def masked_count(n_tokens: int, step: int, n_steps: int) -> int:
    """Tokens still masked after decoding step `step` (0-based): floor(n γ((step + 1) / T)), in float32 as theirs."""
    return int(torch.floor(torch.tensor(n_tokens) * float(cosine_schedule((step + 1) / n_steps))).clamp(min=0))


def sample_categorical(probs: torch.Tensor, generator=None) -> torch.Tensor:
    """One draw per row of probs (..., K) by inverting the CDF: torch's Categorical distribution, without
    torch.multinomial's cost on a CPU (15× faster at K = 1,024)."""
    cdf = probs.cumsum(dim=-1)
    u = torch.rand((*probs.shape[:-1], 1), generator=generator, device=probs.device) * cdf[..., -1:]
    return torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp(max=probs.shape[-1] - 1)


def _gumbel(shape, generator, device) -> torch.Tensor:
    u = torch.rand(shape, generator=generator, device=device)
    return -torch.log((-torch.log(u.clamp(min=1e-20))).clamp(min=1e-20))


def decoding_step(tokens: torch.Tensor, logits: torch.Tensor, step: int, n_steps: int, n_tokens: int, mask_id: int,
                  choice_temperature: float, generator=None) -> torch.Tensor:
    """One iterative-decoding step: sample every token, keep the known ones, re-mask the
    masked_count(...) least confident new ones (confidence log p + temperature (1 − t/T) Gumbel)."""
    probs = logits.softmax(dim=-1)                                            # (B, n, K)
    sampled = sample_categorical(probs, generator)
    unknown = tokens == mask_id
    sampled = torch.where(unknown, sampled, tokens)
    ratio = (step + 1) / n_steps
    chosen = probs.gather(-1, sampled[..., None]).squeeze(-1)
    chosen = torch.where(unknown, chosen, torch.full_like(chosen, math.inf))
    confidence = torch.log(chosen + 1e-5) + choice_temperature * (1 - ratio) * _gumbel(chosen.shape, generator,
                                                                                        chosen.device)
    remask = torch.zeros_like(unknown)
    k = masked_count(n_tokens, step, n_steps)
    if k:
        remask.scatter_(1, confidence.topk(k, dim=-1, largest=False).indices, True)
    return torch.where(remask, torch.full_like(sampled, mask_id), sampled)


def iterative_decoding(predict, n: int, n_tokens: int, mask_id: int, n_steps: int, choice_temperature: float,
                       generator=None, device="cpu") -> torch.Tensor:
    """(n, n_tokens) tokens decoded from all-masked in n_steps; predict(tokens) -> logits (n, n_tokens, K)."""
    tokens = torch.full((n, n_tokens), mask_id, dtype=torch.long, device=device)
    for step in range(n_steps):
        tokens = decoding_step(tokens, predict(tokens), step, n_steps, n_tokens, mask_id, choice_temperature,
                               generator)
    return tokens


# --------------------------------------------------------------------------- the whole model

class TimeVQVAEModel(nn.Module):
    def __init__(self, n_features: int, seq_len: int, n_classes: int, c: TimeVQVAEConfig):
        super().__init__()
        self.config, self.n_classes = c, n_classes
        self.vqvae = VQVAE(n_features, seq_len, c)
        self.num_tokens = {k: H * W for k, (H, W) in self.vqvae.grids.items()}
        sizes = {"lf": c.codebook_size_lf, "hf": c.codebook_size_hf}
        self.mask_id = sizes
        self.transformer_l = PriorTransformer("lf", self.num_tokens["lf"], sizes, n_classes, c.lf_hidden_dim,
                                              c.lf_n_layers, c.lf_heads, c)
        self.transformer_h = PriorTransformer("hf", self.num_tokens["hf"], sizes, n_classes, c.hf_hidden_dim,
                                              c.hf_n_layers, c.hf_heads, c)
        self.register_buffer("data_mean", torch.zeros(1, n_features, 1))   # their per-channel standardisation
        self.register_buffer("data_std", torch.ones(1, n_features, 1))

    def prior_logits(self, kind: str, class_condition, *tokens, generator=None, context=None) -> torch.Tensor:
        """Their masked_prediction: the conditional logits, or guided ones when cfg_scale != 1."""
        transformer = self.transformer_l if kind == "lf" else self.transformer_h
        if class_condition is None:
            return transformer(*tokens, class_condition=None, context=context)
        cond = transformer(*tokens, class_condition=class_condition, generator=generator, context=context)
        if self.config.cfg_scale == 1.0:
            return cond
        return guided_logits(cond, transformer(*tokens, class_condition=None, context=context), self.config.cfg_scale)

    def prior_loss(self, x: torch.Tensor, class_condition: torch.Tensor, generator=None) -> dict:
        """Masked-token cross-entropy of both priors on x (B, C, L), the VQ-VAE frozen."""
        self.vqvae.eval()
        tokens_l, tokens_h = self.vqvae.tokens(x)
        masked_l, known_l = random_token_mask(tokens_l, self.mask_id["lf"], generator)
        masked_h, known_h = random_token_mask(tokens_h, self.mask_id["hf"], generator)
        logits_l = self.prior_logits("lf", class_condition, masked_l, generator=generator)
        logits_h = self.prior_logits("hf", class_condition, tokens_l, masked_h, generator=generator)
        out = {"LF": F.cross_entropy(logits_l[~known_l], tokens_l[~known_l]),
               "HF": F.cross_entropy(logits_h[~known_h], tokens_h[~known_h])}
        out["loss"] = out["LF"] + out["HF"]
        return out

    @torch.no_grad()
    def sample(self, class_condition: torch.Tensor, generator=None) -> torch.Tensor:
        """(B, 1) labels -> (B, C, L) series in the data's scale."""
        c, n, device = self.config, len(class_condition), class_condition.device
        tokens_l = iterative_decoding(lambda t: self.prior_logits("lf", class_condition, t), n, self.num_tokens["lf"],
                                      self.mask_id["lf"], c.sampling_steps_lf, c.choice_temperature_lf, generator,
                                      device)
        context = self.transformer_h.lf_context(tokens_l, self.num_tokens["hf"])           # eval: deterministic
        tokens_h = iterative_decoding(lambda t: self.prior_logits("hf", class_condition, tokens_l, t, context=context),
                                      n, self.num_tokens["hf"], self.mask_id["hf"], c.sampling_steps_hf,
                                      c.choice_temperature_hf, generator, device)
        x = self.vqvae.decode_tokens("lf", tokens_l) + self.vqvae.decode_tokens("hf", tokens_h)
        return x * self.data_std + self.data_mean


class WarmupCosine:
    """LambdaLR's factor after t steps: f(t + 1) / lr, with f(s) their linear_warmup_cosine_annealingLR's rate
    after s steps (lr s / W for s < W, then cosine from lr to min_lr over max_steps - W); + 1 because their
    training_step steps the scheduler before the optimiser."""

    def __init__(self, max_steps: int, warmup_rate: float, min_lr_ratio: float):
        self.max_steps, self.warmup = max_steps, int(max_steps * warmup_rate)
        self.min_lr_ratio = min_lr_ratio

    def __call__(self, t: int) -> float:
        s = t + 1
        if s < self.warmup:
            return s / self.warmup
        progress = (s - self.warmup) / max(1, self.max_steps - self.warmup)
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * (1 + math.cos(math.pi * progress)) / 2


def stage_optimizer(params, max_steps: int, c: TimeVQVAEConfig):
    """A stage's AdamW and warm-up-cosine schedule (their configure_optimizers)."""
    optimizer = torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay, fused=True)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(max_steps, c.linear_warmup_rate,
                                                                                c.min_lr / c.lr))


def train_step(model: TimeVQVAEModel, stage: int, xb: torch.Tensor, yb: torch.Tensor, optimizer, scheduler,
               generator=None, end_of_epoch: bool = False) -> dict:
    """One optimiser step of stage 1 (the VQ-VAE) or 2 (the priors) on a batch xb (B, C, L), labels yb (B, 1);
    end_of_epoch adds Lightning's epoch-end scheduler step. The grads stay in .grad (the equivalence reads them)."""
    losses = model.vqvae.loss(xb, generator) if stage == 1 else model.prior_loss(xb, yb, generator)
    optimizer.zero_grad(set_to_none=True)
    losses["loss"].backward()
    optimizer.step()
    scheduler.step()
    if end_of_epoch:
        scheduler.step()                                                    # Lightning's epoch-end step
    return losses


def epoch_order(n: int, seed: int, stage: int, epoch: int) -> torch.Tensor:
    """The shuffled order of one epoch, a function of (seed, stage, epoch) so a resumed fit finds it again."""
    state = np.random.SeedSequence([seed, stage, epoch]).generate_state(1)[0]
    return torch.randperm(n, generator=torch.Generator().manual_seed(int(state)))


# scaling "none": they standardise per channel; the model holds the mean and std (module docstring)
class TimeVQVAE(Generator, name="timevqvae", config=TimeVQVAEConfig, native_labels=True, scaling="none",
                sampling_fields=("sample_batch_size", "choice_temperature_lf", "choice_temperature_hf",
                                 "sampling_steps_lf", "sampling_steps_hf"),
                budget_fields=("max_steps_stage1", "max_steps_stage2")):

    def build(self, n_features, seq_len, n_classes):
        if seq_len < self.config.n_fft:
            raise ValueError(f"TimeVQVAE needs series of at least n_fft = {self.config.n_fft} steps, got {seq_len}")
        return TimeVQVAEModel(n_features, seq_len, 1 if n_classes is None else n_classes, self.config)

    def train(self, model, X, y, seed, device, checkpoint: Checkpoint, progress):
        c = self.config
        x_all = torch.as_tensor(X).transpose(1, 2).contiguous()             # (N, C, L)
        if c.data_scaling:
            mean = x_all.double().mean(dim=(0, 2), keepdim=True)
            std = x_all.double().std(dim=(0, 2), keepdim=True, unbiased=False)
            model.data_mean.copy_(mean.float())
            model.data_std.copy_(torch.where(std > 0, std, torch.ones_like(std)).float())
        x_all = ((x_all.to(device) - model.data_mean) / model.data_std)
        y_all = torch.as_tensor(y if y is not None else np.zeros(len(X), np.int64)).to(device)[:, None]
        transformers = list(model.transformer_l.parameters()) + list(model.transformer_h.parameters())
        stages = {}
        for stage, params, max_steps in ((1, model.vqvae.parameters(), c.max_steps_stage1),
                                         (2, transformers, c.max_steps_stage2)):
            stages[stage] = (*stage_optimizer(params, max_steps, c), max_steps)
        generator = torch.Generator().manual_seed(seed)
        state = {"stage1_steps": 0, "stage2_steps": 0, "loss": {"stage1": [], "stage2": []}}
        state.update(checkpoint.restore(model=model, optimizer1=stages[1][0], scheduler1=stages[1][1],
                                        optimizer2=stages[2][0], scheduler2=stages[2][1], generator=generator))
        N, per_epoch = len(X), math.ceil(len(X) / c.batch_size)
        total = c.max_steps_stage1 + c.max_steps_stage2
        bar = progress_bar(total, state["stage1_steps"] + state["stage2_steps"], "TimeVQVAE steps", progress)
        order = (None, None)                                                # ((stage, epoch), its order)
        for stage in (1, 2):
            optimizer, scheduler, max_steps = stages[stage]
            key = f"stage{stage}_steps"
            model.train()
            while state[key] < max_steps:
                epoch, position = divmod(state[key], per_epoch)
                if order[0] != (stage, epoch):
                    order = ((stage, epoch), epoch_order(N, seed, stage, epoch))
                index = order[1][position * c.batch_size:(position + 1) * c.batch_size]
                end_of_epoch = c.scheduler_epoch_step and (state[key] + 1) % per_epoch == 0
                losses = train_step(model, stage, x_all[index.to(device)], y_all[index.to(device)], optimizer,
                                    scheduler, generator, end_of_epoch)
                state[key] += 1
                state["loss"][f"stage{stage}"].append(losses["loss"].item())
                bar.update(1)
                done = state["stage1_steps"] + state["stage2_steps"]
                checkpoint.step(state, done, final=state[key] == max_steps)
        bar.close()
        return {"steps": state["stage1_steps"] + state["stage2_steps"], "stage1_steps": state["stage1_steps"],
                "stage2_steps": state["stage2_steps"], "loss": state["loss"]}

    def generate(self, model, n, y, seed, device, progress):
        generator = torch.Generator(device=device).manual_seed(seed)
        labels = torch.as_tensor(y if y is not None else np.zeros(n, np.int64)).to(device)[:, None]
        batch = self.config.sample_batch_size
        out, bar = [], progress_bar(n, 0, "TimeVQVAE sampling", progress)
        for start in range(0, n, batch):
            out.append(model.sample(labels[start:start + batch], generator).transpose(1, 2).cpu())  # (b, L, C)
            bar.update(len(out[-1]))
        bar.close()
        return torch.cat(out).numpy()
