"""Diffusion-TS (Yuan & Qiao, ICLR 2024), rebuilt in PyTorch from Y-debug-sys/Diffusion-TS (MIT).

Read at commit 566307e: `Models/interpretable_diffusion/{gaussian_diffusion,transformer,model_utils}.py`,
`engine/{solver,lr_sch}.py`, `Config/{sines,stocks}.yaml`, `Utils/Data_utils/{real_datasets,sine_dataset}.py`,
`Data/build_dataloader.py`, `main.py`, and ema-pytorch 0.2.1 (the version their requirements pin):
- Denoiser: a transformer encoder-decoder on (B, T, F). Conv1d(k 3) embedding, learnable positional
  encodings (one for the encoder, one for the decoder), blocks whose first norm is an AdaLayerNorm on a
  sinusoidal embedding of t. Each decoder block (self-attention, cross-attention to the encoder, MLP) splits
  Conv1d_{T -> 2T}(x) into a polynomial trend (Conv1d over time to 3 coefficients, GELU, Conv1d over channels,
  times the basis ((1..T)/(T+1))^p, p = 1, 2, 3) and a seasonal part (the top int(log K) of the K Fourier
  bins between DC and Nyquist of each channel, extrapolated back to time), and leaves its time mean for a
  level term. Output x0 = combine_m(level means) + trend + combine_s(seasonal) + residual.
- Predicts x0; loss L1 + √T/5 · L1 of the real and imaginary parts of the (norm "forward") FFT over time,
  each stay's mean weighted by √α_t √(1 − ᾱ_t) / β_t / 100; cosine β schedule (s = 0.008, clipped at 0.999).
- Settings (sines.yaml, stocks.yaml): d_model 64, 4 heads, MLP ×4, no dropout, kernel 1 / padding 0, 500
  diffusion and 500 sampling steps; Sines 1 encoder / 2 decoder layers, 12,000 steps, batch 128, patience
  3,000; Stocks 2 / 2, 10,000 steps, batch 64, patience 2,000; both accumulate 2 batches per step.
- Solver: Adam (betas 0.9, 0.96) from lr 1e-5, gradient norm clipped at 1, ReduceLROnPlateauWithWarmup on the
  step's training loss (+7.9e-4 / 500 per step for 500 steps, then ×0.5 after `patience` steps without a 10 %
  relative improvement, floor 1e-5); ema-pytorch EMA (beta 0.995, update_every 10 and its defaults
  update_after_step 100, inv_gamma 1, power 2/3: a copy on every 10th step up to step 100, then a decay
  ramping 1 − (1 + n)^(−2/3) up to 0.995); samples from the EMA model.
- Sampling: ancestral over all steps, x0 clipped to [−1, 1] (their `sample`); with fewer sampling steps
  than diffusion steps, their `fast_sample` (DDIM with `eta`, x0 clipped).
- Data: per-feature MinMaxScaler, then 2x − 1 (`scaling = "minmax11"`, their CustomDataset for Stocks and
  every real data set); shuffled batches of a cycled loader, the last partial batch dropped.

Departures, each with its reason. The denoiser keeps their modules, names and initialisation order (their
state_dict loads into `DiffusionTSModel.denoiser`, one seed draws the same initial weights, outputs and
gradients agree to float rounding); the first four only compute the same thing faster on a CPU. Held to their
code on the same weights and draws by experiments/authors_equivalence/diffusion_ts.py: losses, gradients, the
parameters and EMA after 125 solver steps, ancestral and DDIM samples agree to float32 rounding
(results/authors_equivalence/diffusion_ts.md).
- The seasonal part's DFT and its extrapolation Σ |X_k| cos(2π (k/T) t + ∠X_k) over the kept bins and their
  conjugates are two small matmuls with fixed (2K, T) / (T, 2K) bases; theirs is an rFFT plus a
  (B, 2k, T, d) tensor of cosines built from `abs` and `angle`. Bins are ranked by |X_k|² (the same order;
  as in any reimplementation, a near-tie can rank the other way at float rounding and change the output).
- The decoder's Conv1d(T, 2T, kernel 1) runs as the matmul it is; the time embedding is computed once per
  forward, not in each AdaLayerNorm; the Fourier loss takes one FFT of (x̂0 − x0), not two (it is linear).
- Adam runs its `foreach` implementation (the same update); the EMA is ema-pytorch 0.2.1's rule written
  out (the same counter, copies and decays) as two fused in-place ops.
- Sampling runs `sample_batch_size` (256) stays at a time: on a CPU that is faster than their 2,001.
- Data order, t and noise come from the fit's own torch.Generator (theirs: the global RNG); each epoch's
  order is drawn from (seed, epoch), so a resumed fit replays it.
- Sines (`sines()`): their SineDataset skips the MinMaxScaler and feeds 2x − 1 (its series lie in about
  [0.5, 1], so the model sees about [0, 1]); `scaling="two_x_minus_1"` does the same here.
- With fewer stays than a batch, the batch is all stays (their drop_last loader would yield nothing). At
  T = 2 the seasonal part is zero (no bin between DC and Nyquist; theirs fails on log 0), as theirs is for
  T ≤ 6, where int(log K) = 0 bins are kept.
- The EMA model samples in eval mode (theirs stays in train mode: it differs only with dropout > 0).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tardiff.generators.base import Checkpoint, Generator, Scaler, progress_bar
from tardiff.settings import SettingError, check, count, each, fraction, number, one_of, optional, positive


@dataclass
class DiffusionTSConfig:
    """The authors' Stocks setting (Config/stocks.yaml) by default: their real-data setting, whose scaling
    (MinMaxScaler, then 2x − 1) is the one used here; `sines()` gives Config/sines.yaml."""

    # the denoiser (`model.params`)
    d_model: int = 64
    n_heads: int = 4
    n_layer_enc: int = 2
    n_layer_dec: int = 2
    mlp_hidden_times: int = 4
    attn_pdrop: float = 0.0
    resid_pdrop: float = 0.0
    kernel_size: int | None = 1         # combine_s; None: their rule (1 if F < 32 and T < 64, else 5)
    padding_size: int | None = 0
    # the diffusion
    timesteps: int = 500
    beta_schedule: str = "cosine"       # or "linear"
    loss_type: str = "l1"               # or "l2"
    use_ff: bool = True                 # the Fourier-domain loss term
    reg_weight: float | None = None     # its weight; None: sqrt(seq_len) / 5
    # the solver (`solver`, `dataloader`)
    train_steps: int = 10000            # their `max_epochs` counts optimiser steps
    batch_size: int = 64
    gradient_accumulate_every: int = 2
    base_lr: float = 1e-5
    adam_betas: tuple = (0.9, 0.96)
    clip_grad_norm: float = 1.0
    warmup: int = 500
    warmup_lr: float = 8e-4
    lr_factor: float = 0.5
    lr_patience: int = 2000
    lr_threshold: float = 0.1           # relative, mode min
    lr_cooldown: int = 0
    min_lr: float = 1e-5
    ema_decay: float = 0.995
    ema_update_every: int = 10
    ema_update_after_step: int = 100    # ema-pytorch 0.2.1's defaults, which their solver keeps
    ema_inv_gamma: float = 1.0
    ema_power: float = 2 / 3
    # sampling (never read by training)
    sampling_timesteps: int | None = None  # None: all `timesteps`, ancestral; fewer: their DDIM fast_sample
    eta: float = 0.0                       # DDIM noise of fast_sample
    sample_batch_size: int = 256          # a CPU samples faster in batches of this size than of their 2,001
    scaling: str | None = None            # None: the class's "minmax11"; "two_x_minus_1": their SineDataset

    RANGES: ClassVar[dict] = {
        "d_model": count(4, why="even and a multiple of n_heads"), "n_heads": count(), "n_layer_enc": count(),
        "n_layer_dec": count(), "mlp_hidden_times": count(), "attn_pdrop": fraction(), "resid_pdrop": fraction(),
        "kernel_size": optional(count()), "padding_size": optional(count(0)), "timesteps": count(),
        "beta_schedule": one_of("cosine", "linear"), "loss_type": one_of("l1", "l2"),
        "reg_weight": optional(number(0)), "train_steps": count(), "batch_size": count(),
        "gradient_accumulate_every": count(), "base_lr": positive(), "adam_betas": each(fraction(), length=2),
        "clip_grad_norm": positive(), "warmup": count(0), "warmup_lr": positive(),
        "lr_factor": number(0, 1, True, True), "lr_patience": count(0), "lr_threshold": number(0),
        "lr_cooldown": count(0), "min_lr": number(0), "ema_decay": fraction(), "ema_update_every": count(),
        "ema_update_after_step": count(0), "ema_inv_gamma": positive(), "ema_power": positive(),
        "sampling_timesteps": optional(count(why="at most timesteps")), "eta": number(0, 1),
        "sample_batch_size": count(),
        "scaling": optional(one_of(*Scaler.KINDS)),
    }

    def __post_init__(self):
        check(self)
        if self.d_model % 2 or self.d_model % self.n_heads:
            raise SettingError(type(self), "d_model", self.d_model, f"even and a multiple of n_heads ({self.n_heads})")
        if self.sampling_timesteps is not None and self.sampling_timesteps > self.timesteps:
            raise SettingError(type(self), "sampling_timesteps", self.sampling_timesteps,
                               f"None or an integer in 1..timesteps ({self.timesteps})")

    @classmethod
    def stocks(cls) -> "DiffusionTSConfig":
        """Config/stocks.yaml."""
        return cls()

    @classmethod
    def sines(cls) -> "DiffusionTSConfig":
        """Config/sines.yaml."""
        return cls(n_layer_enc=1, n_layer_dec=2, train_steps=12000, batch_size=128, lr_patience=3000,
                   scaling="two_x_minus_1")

    @classmethod
    def tiny(cls) -> "DiffusionTSConfig":
        """Seconds on a CPU: for the tests and the smoke profile."""
        return cls(d_model=16, n_heads=2, n_layer_enc=1, n_layer_dec=1, timesteps=20, train_steps=12,
                   batch_size=16, warmup=4, ema_update_every=2, ema_update_after_step=4, sample_batch_size=64)


# --------------------------------------------------------------------------- schedule

def cosine_beta_schedule(timesteps: int, s: float = 0.008) -> torch.Tensor:
    """β_t = 1 − ᾱ_t / ᾱ_{t−1}, ᾱ(x) = cos²((x/T + s)/(1 + s) · π/2), clipped to [0, 0.999]; float64."""
    x = torch.linspace(0, timesteps, timesteps + 1, dtype=torch.float64)
    alphas_cumprod = torch.cos(((x / timesteps) + s) / (1 + s) * math.pi * 0.5) ** 2
    alphas_cumprod = alphas_cumprod / alphas_cumprod[0]
    return torch.clip(1 - alphas_cumprod[1:] / alphas_cumprod[:-1], 0, 0.999)


def linear_beta_schedule(timesteps: int) -> torch.Tensor:
    scale = 1000 / timesteps
    return torch.linspace(scale * 1e-4, scale * 0.02, timesteps, dtype=torch.float64)


# --------------------------------------------------------------------------- the denoiser's pieces

def sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """(B,) steps -> (B, dim): [sin(t ω_i), cos(t ω_i)], ω_i = 10000^(−i / (dim/2 − 1))."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=t.device) * -(math.log(10000) / (half - 1)))
    angles = t[:, None] * freqs[None, :]
    return torch.cat((angles.sin(), angles.cos()), dim=-1)


def seasonal_bases(seq_len: int, low_freq: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """The real DFT over time restricted to the bins their FourierLayer ranks, and its inverse for one-sided bins.

    Bins k = low_freq .. K_end − 1, K_end the Nyquist bin (T even) or T // 2 + 1 (T odd), as their slice
    `rfft[low_freq:-1]` / `rfft[low_freq:]`. forward (2K, T): rows cos(2πkt/T), then −sin(2πkt/T), so that
    forward @ x = (Re X_k; Im X_k) of X_k = Σ_t x_t e^{−2πikt/T}. inverse (T, 2K): 2 cos, −2 sin, so that
    inverse @ (Re; Im) = Σ_k 2 |X_k| cos(2πkt/T + ∠X_k), a bin and its conjugate.
    """
    high = seq_len // 2 if seq_len % 2 == 0 else seq_len // 2 + 1
    k = torch.arange(low_freq, max(high, low_freq), dtype=torch.float64)[:, None]
    angle = 2 * math.pi * k * torch.arange(seq_len, dtype=torch.float64)[None, :] / seq_len  # (K, T)
    forward = torch.cat([angle.cos(), -angle.sin()])
    inverse = torch.cat([2 * angle.cos(), -2 * angle.sin()]).t()
    return forward.float(), inverse.float().contiguous()


def topk_seasonal(x: torch.Tensor, forward: torch.Tensor, inverse: torch.Tensor, factor: float = 1.0) -> torch.Tensor:
    """(B, T, d) -> (B, T, d): each channel rebuilt from its int(factor · log K) largest Fourier bins.

    Their FourierLayer: rFFT over time, keep the top-k bins by |X_k| among the K of `seasonal_bases`, and
    extrapolate Σ over kept bins and conjugates of |X_k| cos(2π (k/T) t + ∠X_k). At these T the DFT and its
    inverse are cheaper as two small matmuls than as FFTs, and the sum needs no (B, 2k, T, d) tensor.
    """
    n_bins = forward.shape[0] // 2
    top_k = int(factor * math.log(n_bins)) if n_bins > 0 else 0
    if top_k <= 0:
        return torch.zeros_like(x)
    coefficients = torch.matmul(forward, x)                             # (B, 2K, d): Re X_k, then Im X_k
    power = coefficients.detach().square()
    index = (power[:, :n_bins] + power[:, n_bins:]).topk(top_k, dim=1).indices   # ranks |X_k|²: same order
    keep = torch.zeros(power.shape[0], n_bins, power.shape[2], dtype=x.dtype, device=x.device).scatter_(1, index, 1.0)
    return torch.matmul(inverse, coefficients * keep.repeat(1, 2, 1))


def trend_basis(seq_len: int, order: int = 3) -> torch.Tensor:
    """(order, T): row p is ((1, ..., T) / (T + 1)) ** (p + 1)."""
    grid = torch.arange(1, seq_len + 1, 1) / (seq_len + 1)
    return torch.stack([grid ** float(p + 1) for p in range(order)], dim=0)


class _Transpose(nn.Module):
    """A parameterless slot, so that module indices (and state_dict keys) are the authors'."""

    def forward(self, x):
        return x.transpose(1, 2)


class ConvMLP(nn.Module):
    """Conv1d (kernel 3, padding 1) over time on (B, T, C) -> (B, T, C')."""

    def __init__(self, c_in: int, c_out: int, dropout: float):
        super().__init__()
        self.sequential = nn.Sequential(_Transpose(), nn.Conv1d(c_in, c_out, 3, stride=1, padding=1),
                                        nn.Dropout(dropout))

    def forward(self, x):
        return self.sequential(x).transpose(1, 2)


class AdaLayerNorm(nn.Module):
    """LayerNorm without affine, then (1 + scale) and shift from Linear(SiLU(time embedding))."""

    def __init__(self, d_model: int):
        super().__init__()
        self.linear = nn.Linear(d_model, 2 * d_model)

    def forward(self, x, time_silu):                                    # time_silu (B or 1, d)
        scale, shift = self.linear(time_silu)[:, None, :].chunk(2, dim=2)
        return F.layer_norm(x, x.shape[-1:]) * (1 + scale) + shift


class Attention(nn.Module):
    """Multi-head attention, as theirs (separate key / query / value / proj layers, softmax(q kᵀ / √d_h) v)."""

    def __init__(self, d_model: int, n_heads: int, attn_pdrop: float, resid_pdrop: float):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} must be a multiple of n_heads {n_heads}")
        self.key = nn.Linear(d_model, d_model)
        self.query = nn.Linear(d_model, d_model)
        self.value = nn.Linear(d_model, d_model)
        self.attn_drop = nn.Dropout(attn_pdrop)
        self.resid_drop = nn.Dropout(resid_pdrop)
        self.proj = nn.Linear(d_model, d_model)
        self.n_heads = n_heads

    def forward(self, x, context=None):                                 # (B, T, C); context (B, S, C) or None
        B, T, C = x.shape
        context = x if context is None else context
        S, h = context.shape[1], self.n_heads
        q = self.query(x).view(B, T, h, C // h).transpose(1, 2)         # (B, h, T, C/h)
        k = self.key(context).view(B, S, h, C // h).transpose(1, 2)
        v = self.value(context).view(B, S, h, C // h).transpose(1, 2)
        att = self.attn_drop(((q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(C // h))).softmax(dim=-1))
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        return self.resid_drop(self.proj(y))


def _mlp(d_model: int, hidden_times: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_model, hidden_times * d_model), nn.GELU(),
                         nn.Linear(hidden_times * d_model, d_model), nn.Dropout(dropout))


class EncoderBlock(nn.Module):
    def __init__(self, d_model, n_heads, attn_pdrop, resid_pdrop, mlp_hidden_times):
        super().__init__()
        self.ln1 = AdaLayerNorm(d_model)
        self.ln2 = nn.LayerNorm(d_model)
        self.attn = Attention(d_model, n_heads, attn_pdrop, resid_pdrop)
        self.mlp = _mlp(d_model, mlp_hidden_times, resid_pdrop)

    def forward(self, x, time_silu):
        x = x + self.attn(self.ln1(x, time_silu))
        return x + self.mlp(self.ln2(x))


class TrendBlock(nn.Module):
    """Polynomial trend: Conv1d over time to 3 coefficients per channel, GELU, Conv1d over channels to F."""

    def __init__(self, seq_len: int, d_model: int, n_features: int, order: int = 3):
        super().__init__()
        self.trend = nn.Sequential(nn.Conv1d(seq_len, order, kernel_size=3, padding=1), nn.GELU(), _Transpose(),
                                   nn.Conv1d(d_model, n_features, 3, stride=1, padding=1))
        self.register_buffer("poly_space", trend_basis(seq_len, order), persistent=False)  # (order, T)

    def forward(self, x):                                               # (B, T, d) -> (B, T, F)
        coefficients = self.trend(x)                                    # (B, F, order)
        return torch.matmul(self.poly_space.t(), coefficients.transpose(1, 2))


class DecoderBlock(nn.Module):
    def __init__(self, seq_len, n_features, d_model, n_heads, attn_pdrop, resid_pdrop, mlp_hidden_times):
        super().__init__()
        self.ln1 = AdaLayerNorm(d_model)
        self.ln2 = nn.LayerNorm(d_model)
        self.attn1 = Attention(d_model, n_heads, attn_pdrop, resid_pdrop)
        self.attn2 = Attention(d_model, n_heads, attn_pdrop, resid_pdrop)
        self.ln1_1 = AdaLayerNorm(d_model)
        self.trend = TrendBlock(seq_len, d_model, n_features)
        self.mlp = _mlp(d_model, mlp_hidden_times, resid_pdrop)
        forward, inverse = seasonal_bases(seq_len)
        self.register_buffer("dft", forward, persistent=False)         # the seasonal part's DFT and inverse
        self.register_buffer("idft", inverse, persistent=False)
        self.proj = nn.Conv1d(seq_len, 2 * seq_len, 1)                   # mixes time steps (channels: the length)
        self.linear = nn.Linear(d_model, n_features)

    def forward(self, x, encoded, time_silu):
        x = x + self.attn1(self.ln1(x, time_silu))
        x = x + self.attn2(self.ln1_1(x, time_silu), encoded)
        # their Conv1d(T, 2T, kernel 1) over (B, T, d), as the matmul it is (mkldnn is slower at these sizes)
        mixed = torch.matmul(self.proj.weight[:, :, 0], x) + self.proj.bias[:, None]     # (B, 2T, d)
        x1, x2 = mixed.chunk(2, dim=1)
        trend, season = self.trend(x1), topk_seasonal(x2, self.dft, self.idft)
        x = x + self.mlp(self.ln2(x))
        level = x.mean(dim=1, keepdim=True)                             # (B, 1, d)
        return x - level, self.linear(level), trend, season


class LearnablePositionalEncoding(nn.Module):
    def __init__(self, d_model: int, dropout: float, max_len: int):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.pe = nn.Parameter(torch.empty(1, max_len, d_model))
        nn.init.uniform_(self.pe, -0.02, 0.02)

    def forward(self, x):
        return self.dropout(x + self.pe)


class _Blocks(nn.Module):
    def __init__(self, blocks):
        super().__init__()
        self.blocks = nn.Sequential(*blocks)


class Denoiser(nn.Module):
    """Their `Transformer`: x_t (B, T, F), t (B,) or (1,) -> x̂0 (B, T, F) (trend + seasonal + residual)."""

    def __init__(self, n_features: int, seq_len: int, c: DiffusionTSConfig):
        super().__init__()
        d = c.d_model
        self.d_model = d
        # construction order is theirs, so that one seed draws the same initial weights
        self.emb = ConvMLP(n_features, d, c.resid_pdrop)
        self.inverse = ConvMLP(d, n_features, c.resid_pdrop)
        kernel, padding = c.kernel_size, c.padding_size
        if kernel is None:
            kernel, padding = (1, 0) if n_features < 32 and seq_len < 64 else (5, 2)
        self.combine_s = nn.Conv1d(d, n_features, kernel_size=kernel, stride=1, padding=padding,
                                   padding_mode="circular", bias=False)
        self.combine_m = nn.Conv1d(c.n_layer_dec, 1, kernel_size=1, stride=1, padding=0, padding_mode="circular",
                                   bias=False)
        self.encoder = _Blocks([EncoderBlock(d, c.n_heads, c.attn_pdrop, c.resid_pdrop, c.mlp_hidden_times)
                                for _ in range(c.n_layer_enc)])
        self.pos_enc = LearnablePositionalEncoding(d, c.resid_pdrop, seq_len)
        self.decoder = _Blocks([DecoderBlock(seq_len, n_features, d, c.n_heads, c.attn_pdrop, c.resid_pdrop,
                                             c.mlp_hidden_times) for _ in range(c.n_layer_dec)])
        self.pos_dec = LearnablePositionalEncoding(d, c.resid_pdrop, seq_len)

    def forward(self, x, t):
        time_silu = F.silu(sinusoidal_embedding(t, self.d_model))       # shared by every AdaLayerNorm
        emb = self.emb(x)                                               # (B, T, d)
        encoded = self.pos_enc(emb)
        for block in self.encoder.blocks:
            encoded = block(encoded, time_silu)
        h = self.pos_dec(emb)
        levels, trend, season = [], 0, 0
        for block in self.decoder.blocks:
            h, level, block_trend, block_season = block(h, encoded, time_silu)
            levels.append(level)
            trend, season = trend + block_trend, season + block_season
        res = self.inverse(h)                                           # (B, T, F)
        res_m = res.mean(dim=1, keepdim=True)
        if self.combine_s.kernel_size[0] == 1 and self.combine_s.padding[0] == 0:
            season = F.linear(season, self.combine_s.weight[:, :, 0])   # a 1x1 conv over time, as a matmul
        else:
            season = self.combine_s(season.transpose(1, 2)).transpose(1, 2)
        season_error = season + res - res_m
        trend = self.combine_m(torch.cat(levels, dim=1)) + res_m + trend
        return trend + season_error


# --------------------------------------------------------------------------- the diffusion model

def reconstruction_loss(x0_hat, x0, ff_weight: float, loss_type: str = "l1") -> torch.Tensor:
    """(B,): per stay, the mean over (t, f) of |x̂0 − x0| + ff_weight · (|Re ΔX| + |Im ΔX|) (squares for "l2"),
    ΔX the FFT over time (norm "forward", 1/T) of x̂0 − x0, which is FFT(x̂0) − FFT(x0) as theirs takes it."""
    error = x0_hat - x0                                                 # (B, T, F)
    distance = error.abs() if loss_type == "l1" else error.square()
    if ff_weight:
        spectrum = torch.fft.fft(error, dim=1, norm="forward")
        fourier = spectrum.real.abs() + spectrum.imag.abs() if loss_type == "l1" else \
            spectrum.real.square() + spectrum.imag.square()
        distance = distance + ff_weight * fourier
    return distance.mean(dim=(1, 2))


def ddim_times(timesteps: int, sampling_timesteps: int) -> list[tuple[int, int]]:
    """Their fast_sample's (t, t_next) pairs: linspace(−1, T − 1, S + 1) truncated toward zero, descending."""
    times = torch.linspace(-1, timesteps - 1, steps=sampling_timesteps + 1).int().tolist()[::-1]
    return list(zip(times[:-1], times[1:]))


class DiffusionTSModel(nn.Module):
    """The denoiser, its EMA copy (what samples) and the schedule's buffers."""

    def __init__(self, n_features: int, seq_len: int, config: DiffusionTSConfig):
        super().__init__()
        c = self.config = config
        self.n_features, self.seq_len = n_features, seq_len
        self.denoiser = Denoiser(n_features, seq_len, c)
        self.ema_denoiser = copy.deepcopy(self.denoiser).requires_grad_(False)
        if c.beta_schedule == "cosine":
            betas = cosine_beta_schedule(c.timesteps)
        elif c.beta_schedule == "linear":
            betas = linear_beta_schedule(c.timesteps)
        else:
            raise ValueError(f"unknown beta_schedule {c.beta_schedule!r}; 'cosine' or 'linear'")
        alphas = 1 - betas
        ac = torch.cumprod(alphas, dim=0)
        ac_prev = F.pad(ac[:-1], (1, 0), value=1.0)
        posterior_variance = betas * (1 - ac_prev) / (1 - ac)
        buffers = {  # computed in float64, kept in float32, as theirs
            "betas": betas, "alphas_cumprod": ac,
            "sqrt_alphas_cumprod": ac.sqrt(), "sqrt_one_minus_alphas_cumprod": (1 - ac).sqrt(),
            "sqrt_recip_alphas_cumprod": (1 / ac).sqrt(), "sqrt_recipm1_alphas_cumprod": (1 / ac - 1).sqrt(),
            "posterior_log_variance_clipped": posterior_variance.clamp(min=1e-20).log(),
            "posterior_mean_coef1": betas * ac_prev.sqrt() / (1 - ac),
            "posterior_mean_coef2": (1 - ac_prev) * alphas.sqrt() / (1 - ac),
            "loss_weight": alphas.sqrt() * (1 - ac).sqrt() / betas / 100,
        }
        for name, value in buffers.items():
            self.register_buffer(name, value.to(torch.float32), persistent=False)
        self.ff_weight = c.reg_weight if c.reg_weight is not None else math.sqrt(seq_len) / 5

    def training_loss(self, x0, t, noise):
        """Their _train_loss with target x0: the reconstruction loss of x̂0(x_t, t), weighted by loss_weight[t]."""
        x_t = self.sqrt_alphas_cumprod[t, None, None] * x0 + self.sqrt_one_minus_alphas_cumprod[t, None, None] * noise
        c = self.config
        per_stay = reconstruction_loss(self.denoiser(x_t, t), x0, self.ff_weight if c.use_ff else 0.0, c.loss_type)
        return (per_stay * self.loss_weight[t]).mean()

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator, sampling_timesteps: int | None = None, eta: float = 0.0,
               progress: bool = False, randn=None) -> torch.Tensor:
        """(n, T, F) from the EMA denoiser: ancestral over every step, or DDIM over `sampling_timesteps`.

        `randn(shape)` draws each Gaussian in turn (default: from `generator`), so a comparison can feed given noise.
        """
        T = self.config.timesteps
        steps = T if sampling_timesteps is None else int(sampling_timesteps)
        if not 1 <= steps <= T:
            raise ValueError(f"sampling_timesteps must be in 1..{T} (timesteps), got {steps}")
        device = self.betas.device
        if randn is None:
            def randn(shape):
                return torch.randn(shape, generator=generator, device=device)
        x = randn((n, self.seq_len, self.n_features))
        if steps == T:  # their `sample`
            for t in _steps(reversed(range(T)), T, progress):
                x = self.ancestral_step(x, t, randn(x.shape) if t > 0 else None)
            return x
        for time, time_next in _steps(ddim_times(T, steps), steps, progress):  # their `fast_sample`
            x = self.ddim_step(x, time, time_next, eta, randn(x.shape) if eta > 0 and time_next >= 0 else None)
        return x

    @torch.no_grad()
    def ancestral_step(self, x, t: int, noise):
        """Their p_sample: x_{t−1} ~ q(x_{t−1} | x_t, x̂0), x̂0 the EMA denoiser's, clipped to [−1, 1]; the
        posterior mean alone at t = 0 (noise None)."""
        x0 = self.ema_denoiser(x, torch.full((1,), t, device=x.device)).clamp_(-1.0, 1.0)
        mean = self.posterior_mean_coef1[t] * x0 + self.posterior_mean_coef2[t] * x
        return mean if noise is None else mean + (0.5 * self.posterior_log_variance_clipped[t]).exp() * noise

    @torch.no_grad()
    def ddim_step(self, x, time: int, time_next: int, eta: float, noise):
        """One step of their fast_sample (DDIM) from `time` to `time_next` through the clipped x̂0; x̂0 itself
        when time_next < 0; `noise` (None when eta = 0) scaled by σ."""
        x0 = self.ema_denoiser(x, torch.full((1,), time, device=x.device)).clamp_(-1.0, 1.0)
        if time_next < 0:
            return x0
        pred_noise = (self.sqrt_recip_alphas_cumprod[time] * x - x0) / self.sqrt_recipm1_alphas_cumprod[time]
        alpha, alpha_next = self.alphas_cumprod[time], self.alphas_cumprod[time_next]
        sigma = eta * ((1 - alpha / alpha_next) * (1 - alpha_next) / (1 - alpha)).sqrt()
        x = x0 * alpha_next.sqrt() + (1 - alpha_next - sigma ** 2).sqrt() * pred_noise
        return x if noise is None else x + sigma * noise


def _steps(iterable, total: int, progress: bool):
    bar = progress_bar(total, 0, "Diffusion-TS sampling", progress)
    for item in iterable:
        yield item
        bar.update(1)
    bar.close()


# --------------------------------------------------------------------------- the solver's pieces

class WarmupPlateau:
    """Their engine/lr_sch.ReduceLROnPlateauWithWarmup (mode min): a linear warm-up for `warmup` steps,
    then the lr times `factor` after more than `patience` steps without a `threshold` improvement."""

    def __init__(self, optimizer, factor, patience, threshold, threshold_mode, cooldown, min_lr, warmup_lr,
                 warmup, eps=1e-8):
        if factor >= 1.0:
            raise ValueError("lr_factor must be < 1")
        self.optimizer = optimizer
        self.factor, self.patience, self.threshold, self.threshold_mode = factor, patience, threshold, threshold_mode
        self.cooldown, self.min_lr, self.warmup, self.eps = cooldown, min_lr, warmup, eps
        self.last_epoch, self.best, self.num_bad_epochs, self.cooldown_counter = 0, math.inf, 0, 0
        self.warmup_lr_steps = [max(0.0, (warmup_lr - g["lr"]) / float(warmup)) for g in optimizer.param_groups] \
            if warmup > 0 else None

    def is_better(self, a: float, best: float) -> bool:
        return a < best * (1.0 - self.threshold) if self.threshold_mode == "rel" else a < best - self.threshold

    def step(self, metric: float) -> None:
        self.last_epoch += 1
        if self.last_epoch <= self.warmup:
            for group, inc in zip(self.optimizer.param_groups, self.warmup_lr_steps):
                group["lr"] = max(float(group["lr"]) + inc, self.min_lr)
            return
        if self.is_better(metric, self.best):
            self.best, self.num_bad_epochs = metric, 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            for group in self.optimizer.param_groups:
                old = float(group["lr"])
                new = max(old * self.factor, self.min_lr)
                if old - new > self.eps:
                    group["lr"] = new
            self.cooldown_counter, self.num_bad_epochs = self.cooldown, 0

    _STATE = ("last_epoch", "best", "num_bad_epochs", "cooldown_counter", "warmup_lr_steps")

    def state_dict(self) -> dict:
        return {k: copy.copy(getattr(self, k)) for k in self._STATE}

    def load_state_dict(self, state: dict) -> None:
        for k in self._STATE:
            setattr(self, k, copy.copy(state[k]))


def ema_decay(step: int, c: DiffusionTSConfig) -> float:
    """ema-pytorch 0.2.1's get_current_decay, `step` being its counter after the increment."""
    epoch = max(step - c.ema_update_after_step - 1, 0)
    if epoch <= 0:
        return 0.0
    return min(max(1 - (1 + epoch / c.ema_inv_gamma) ** -c.ema_power, 0.0), c.ema_decay)


def epoch_order(n: int, seed: int, epoch: int, device) -> torch.Tensor:
    """The shuffled order of epoch `epoch`, a function of (seed, epoch) alone, so a resumed fit replays it."""
    generator = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0]))
    return torch.randperm(n, generator=generator).to(device)


# --------------------------------------------------------------------------- the generator

class DiffusionTS(Generator, name="diffusion_ts", config=DiffusionTSConfig, native_labels=False,
                  scaling="minmax11", sampling_fields=("sample_batch_size", "sampling_timesteps", "eta"),
                  budget_fields=("train_steps",)):

    def build(self, n_features, seq_len, n_classes):
        return DiffusionTSModel(n_features, seq_len, self.config)  # its settings checked: DiffusionTSConfig

    def train(self, model: DiffusionTSModel, X, y, seed, device, checkpoint: Checkpoint, progress):
        c = self.config
        optimizer, scheduler = self.optimiser(model)
        generator = torch.Generator(device=device).manual_seed(seed)
        state = {"steps": 0, "loss": [], "lr": [], "epoch": 0, "batch": 0, "ema_initted": False}
        state.update(checkpoint.restore(model=model, optimizer=optimizer, scheduler=scheduler, generator=generator))
        X_all = torch.as_tensor(X).to(device)
        n = len(X_all)
        batch = min(c.batch_size, n)            # their loader drops the last partial batch
        per_epoch = n // batch
        order = epoch_order(n, seed, state["epoch"], device)
        bar = progress_bar(c.train_steps, state["steps"], "Diffusion-TS steps", progress)
        model.denoiser.train()
        while state["steps"] < c.train_steps:
            micro_batches = []
            for _ in range(c.gradient_accumulate_every):  # consecutive batches of their cycled loader
                if state["batch"] == per_epoch:
                    state["epoch"], state["batch"] = state["epoch"] + 1, 0
                    order = epoch_order(n, seed, state["epoch"], device)
                x0 = X_all[order[state["batch"] * batch:(state["batch"] + 1) * batch]]   # (batch, T, F)
                state["batch"] += 1
                t = torch.randint(0, c.timesteps, (len(x0),), generator=generator, device=device)
                noise = torch.randn(x0.shape, generator=generator, device=device)
                micro_batches.append((x0, t, noise))
            total = self.optimiser_step(model, optimizer, scheduler, state, micro_batches)
            bar.update(1)
            if state["steps"] % 50 == 0:
                bar.set_postfix(loss=f"{total:.4f}")
            checkpoint.step(state, state["steps"], final=state["steps"] == c.train_steps)
        bar.close()
        return {"steps": state["steps"], "epochs": state["epoch"], "loss": state["loss"], "lr": state["lr"],
                "final_lr": optimizer.param_groups[0]["lr"]}

    def optimiser(self, model: DiffusionTSModel) -> tuple:
        """Their solver's Adam (betas 0.9, 0.96) on the denoiser and its ReduceLROnPlateauWithWarmup."""
        c = self.config
        optimizer = torch.optim.Adam(model.denoiser.parameters(), lr=c.base_lr, betas=tuple(c.adam_betas),
                                     foreach=True)
        scheduler = WarmupPlateau(optimizer, c.lr_factor, c.lr_patience, c.lr_threshold, "rel", c.lr_cooldown,
                                  c.min_lr, c.warmup_lr, c.warmup)
        return optimizer, scheduler

    def optimiser_step(self, model: DiffusionTSModel, optimizer, scheduler, state: dict, micro_batches) -> float:
        """One step of their solver on `micro_batches` [(x0, t, noise)]: the summed loss / accumulate, its
        gradient norm clipped, Adam, the scheduler on the step's loss, the EMA; returns the step's loss."""
        c = self.config
        params = list(model.denoiser.parameters())
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for x0, t, noise in micro_batches:
            loss = model.training_loss(x0, t, noise) / c.gradient_accumulate_every
            loss.backward()
            total += loss.item()
        torch.nn.utils.clip_grad_norm_(params, c.clip_grad_norm)
        optimizer.step()
        scheduler.step(total)
        self._ema_update(state, list(model.ema_denoiser.parameters()), params)
        state["steps"] += 1
        state["loss"].append(total)
        state["lr"].append(optimizer.param_groups[0]["lr"])
        return total

    def _ema_update(self, state: dict, ema_params: list, params: list) -> None:
        """ema-pytorch 0.2.1's EMA.update after optimiser step `state["steps"]` (0-based), as their solver calls it."""
        c = self.config
        step = state["steps"]                  # the EMA's own counter, which their solver advances once a step
        if step % c.ema_update_every:
            return
        with torch.no_grad():
            if step <= c.ema_update_after_step or not state["ema_initted"]:
                torch._foreach_copy_(ema_params, params)
                if step <= c.ema_update_after_step:
                    return
                state["ema_initted"] = True
            torch._foreach_lerp_(ema_params, params, 1.0 - ema_decay(step + 1, c))

    def generate(self, model: DiffusionTSModel, n, y, seed, device, progress):
        c = self.config
        generator = torch.Generator(device=device).manual_seed(seed)
        out = [model.sample(min(c.sample_batch_size, n - start), generator, c.sampling_timesteps, c.eta,
                            progress).cpu() for start in range(0, n, c.sample_batch_size)]
        return torch.cat(out).numpy()
