"""BioDiffusion (Li, Sakevych, Atkinson, Ngu; arXiv 2401.10282), classifier-free-guidance 1-D variant,
rebuilt from imics-lab/biodiffusion (MIT).

Read from `src/signal/modules/modules1D_cls_free.py` (`Unet1D_cls_free`, `GaussianDiffusion1D_cls_free`),
`src/signal/ddpm1d_cls_free.py` (their training script), `src/signal/MITBIH.py` (their data) and
`examples/signal_example_code/sample_csl_free.ipynb` (their sampling) at commit bca1f9a:
- UNet (lucidrains's 1-D UNet with class conditioning): a 7-tap input conv to `dim` channels; per level
  (channels dim·mults) two ResnetBlocks, a residual pre-LayerNorm linear attention (4 heads of 32) and a
  strided 4-tap conv halving the length (a 3-tap conv at the last level); a middle of ResnetBlock, residual
  pre-LayerNorm full attention (4 heads of 32), ResnetBlock; the mirror-image up path (two ResnetBlocks
  each after concatenating a skip, linear attention, nearest ×2 upsampling + 3-tap conv, a 3-tap conv at the
  last level); the input conv's output concatenated back before a final ResnetBlock and a 1×1 conv.
  ResnetBlock = two Blocks (weight-standardised 3-tap conv, GroupNorm(8), SiLU) and a 1×1 residual conv;
  the first Block's GroupNorm output is scaled and shifted by Linear(SiLU([time emb, class emb])).
  Time: sinusoidal(dim) -> Linear(4·dim) -> GELU -> Linear; class: Embedding(dim) -> Linear(4·dim) -> GELU
  -> Linear, with a learned null embedding swapped in for a dropped label (classifier-free guidance).
- Diffusion: 1,000 steps, cosine schedule (s = 0.008, betas clipped to 0.999), ε-prediction, L1 loss,
  p2 weight (γ = 0, i.e. 1), data mapped to [-1, 1] by `normalize_to_neg_one_to_one` of [0, 1] data;
  labels dropped (null embedding) with probability `cond_drop_prob` = 0.5 in training.
- Sampling: `sample(classes, cond_scale=3)`, full ancestral sampling over all 1,000 steps (x0 clipped to
  [-1, 1], the posterior mean and its clipped log variance); DDIM (η = `ddim_sampling_eta` = 1) when
  `sampling_timesteps` < timesteps. The guided noise is null + (cond − null) · cond_scale.
- Training: AdamW (lr 3e-4, PyTorch defaults otherwise: weight decay 0.01), batch 64, 300 epochs over a
  shuffled loader (the last batch partial), no EMA, no gradient clipping, no lr schedule.

Held to their code (experiments/authors_equivalence/biodiffusion.py, results/authors_equivalence/biodiffusion.md):
on the same weights, batches, time steps, noise and label-dropout masks, their module and training loop and
ours (`train_step`, `GuidedDenoiser` + `p_sample`, `sample_from`) give the same losses, gradients, parameters
after 20 AdamW steps, guided predictions and ancestral and DDIM runs, within float32 rounding.

Departures, each with its reason:
- A bug mended at sampling: their `forward_with_cond_scale` runs its "conditional" pass with the model's
  training `cond_drop_prob` (0.5) where lucidrains's original, which theirs copies, passes 0; so as released
  each sequence keeps its label at a sampling step with probability 0.5 only and otherwise gets the unguided
  (null) prediction, which is not the classifier-free guidance their paper describes (on a two-class check the
  released sampler's class means were 0.60 / 1.41 against real −0.01 / 1.99; full guidance 0.05 / 1.77).
  `sample_cond_drop_prob` = 0.0 (default) samples as described; 0.5 as released.
- Data scaling: the authors train on the Kaggle MIT-BIH heartbeat csv (the first 128 of its 187 samples),
  which its makers distribute already scaled to [0, 1]; their loader scales nothing, the diffusion applies
  `normalize_to_neg_one_to_one`. ICU stays are not pre-scaled, so this class min-max scales each feature
  over stays and time to [-1, 1] (Scaler "minmax11", the same map on [0, 1] data) and maps samples back.
- Channels = the number of features F (their ECG had 1); `n_classes` = the largest label + 1. Fitted without
  labels (y=None) it is one class (label 0) under the same machinery: labels dropped half the time in
  training, guided towards class 0 at sampling.
- Lengths: their UNet needs T divisible by 2 ** (len(dim_mults) − 1) (each strided conv halves it, and the
  skips must match). Other lengths are padded on the right by repeating the last step, trained with the
  padded steps in the loss (they are a fixed function of the stay, so the model learns them), and cropped
  from the samples; divisible lengths are untouched.
- Randomness comes from a seeded torch.Generator (time steps, noise, label dropout, shuffling) instead of the
  global RNG, drawn in their order, so an interrupted fit resumes bit-identically; their per-epoch sample
  plots and checkpoints are not made.
- `max_steps` caps training at a number of optimiser steps (off by default): the stated reductions of the
  benchmarks and the default profile count steps, which epochs do not (their length depends on the data).
- `sampling_timesteps`, `ddim_sampling_eta`, `cond_scale` and `sample_cond_drop_prob` are read from the
  generator's config when sampling, so a fitted model can be sampled otherwise (e.g. with fewer DDIM steps).
- Same network and arithmetic, computed faster (equal to theirs within float32 rounding, checked against
  their module; same parameter names, and one seed builds the same weights in both):
  the weight standardisation and the channel LayerNorm use `F.layer_norm` (their `torch.var` is several
  times slower, forward and backward); the attention blocks run channels-last, where the 1×1 convs are
  matmuls and the softmaxes run along contiguous rows; AdamW is torch's fused kernel (the same update).
  Sampling: a dropped label's "conditional" pass is the null pass, so only the sequences that kept their
  label run it, batched with the null pass (1.5 instead of 2 passes per step, as released; the guided
  output of a dropped one is its null output, as theirs); the class part of each ResnetBlock's
  conditioning and the standardised kernels are computed once per sampling run, the time part once per
  step for the whole batch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tardiff.generators.base import Checkpoint, Generator, progress_bar
from tardiff.settings import SettingError, check, count, each, number, one_of, optional, positive


@dataclass
class BioDiffusionConfig:
    dim: int = 64
    dim_mults: tuple = (1, 2, 4, 8)
    resnet_block_groups: int = 8
    attn_heads: int = 4
    attn_dim_head: int = 32
    cond_drop_prob: float = 0.5            # label dropout in training (classifier-free guidance)
    timesteps: int = 1000
    beta_schedule: str = "cosine"          # or "linear"
    objective: str = "pred_noise"          # or "pred_x0", "pred_v"
    loss_type: str = "l1"                  # or "l2"
    p2_loss_weight_gamma: float = 0.0
    p2_loss_weight_k: float = 1.0
    lr: float = 3e-4
    weight_decay: float = 0.01             # torch.optim.AdamW's default, which they keep
    batch_size: int = 64
    epochs: int = 300
    max_steps: int | None = None           # a cap on optimiser steps (a stated reduction); None: the epochs decide
    sampling_timesteps: int | None = None  # None or = timesteps: ancestral sampling; fewer: DDIM
    ddim_sampling_eta: float = 1.0
    cond_scale: float = 3.0
    sample_cond_drop_prob: float = 0.0     # full guidance, as described; 0.5: as released (module docstring)
    sample_batch_size: int = 1000

    RANGES: ClassVar[dict] = {
        "dim": count(), "dim_mults": each(count(), min_items=1),
        "resnet_block_groups": count(why="dividing dim x each of dim_mults"), "attn_heads": count(),
        "attn_dim_head": count(), "cond_drop_prob": number(0, 1), "timesteps": count(),
        "beta_schedule": one_of("cosine", "linear"), "objective": one_of("pred_noise", "pred_x0", "pred_v"),
        "loss_type": one_of("l1", "l2"), "p2_loss_weight_gamma": number(0), "p2_loss_weight_k": number(0),
        "lr": positive(), "weight_decay": number(0), "batch_size": count(), "epochs": count(),
        "max_steps": optional(count()), "sampling_timesteps": optional(count(why="at most timesteps")),
        "ddim_sampling_eta": number(0, 1), "cond_scale": number(0), "sample_cond_drop_prob": number(0, 1),
        "sample_batch_size": count(),
    }

    def __post_init__(self):
        check(self)
        if any(self.dim * m % self.resnet_block_groups for m in (1, *self.dim_mults)):  # GroupNorm per level
            raise SettingError(type(self), "resnet_block_groups", self.resnet_block_groups,
                               f"a divisor of every level's channels (dim {self.dim} x dim_mults {self.dim_mults})")
        if self.sampling_timesteps is not None and self.sampling_timesteps > self.timesteps:
            raise SettingError(type(self), "sampling_timesteps", self.sampling_timesteps,
                               f"None or an integer in 1..timesteps ({self.timesteps})")

    @classmethod
    def tiny(cls) -> "BioDiffusionConfig":
        """Seconds on a CPU: for the tests and the smoke profile."""
        return cls(dim=8, dim_mults=(1, 2), attn_heads=2, attn_dim_head=8, timesteps=20, batch_size=32,
                   epochs=4, max_steps=40)


# --------------------------------------------------------------------------- the network


class WeightStandardizedConv1d(nn.Conv1d):
    """Conv1d whose kernel is standardised per output channel (Qiao et al. 2019, arXiv 1903.10520)."""

    frozen_weight: torch.Tensor | None = None  # set while sampling: the standardised kernel, computed once

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.frozen_weight if self.frozen_weight is not None else self.standardized_weight(x.dtype)
        return F.conv1d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def standardized_weight(self, dtype: torch.dtype) -> torch.Tensor:
        """(w − mean) / sqrt(var + eps) over each output channel's (in, kernel) weights, biased var, as theirs;
        layer_norm computes exactly this, several times faster than torch.var (forward and backward)."""
        eps = 1e-5 if dtype == torch.float32 else 1e-3
        w = self.weight
        return F.layer_norm(w.reshape(len(w), -1), (w[0].numel(),), eps=eps).reshape(w.shape)


class LayerNorm(nn.Module):
    """Normalises over channels, with a gain and no bias: (x − mean_C) / sqrt(var_C + eps) · g, as theirs."""

    def __init__(self, dim: int):
        super().__init__()
        self.g = nn.Parameter(torch.ones(1, dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T) -> (B, C, T)."""
        return self.channels_last(x.transpose(1, 2)).transpose(1, 2)

    def channels_last(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> (B, T, C): layer_norm's fused kernel, several times faster than torch.var."""
        eps = 1e-5 if x.dtype == torch.float32 else 1e-3
        return F.layer_norm(x, (x.shape[-1],), eps=eps) * self.g.view(-1)


class Residual(nn.Module):
    def __init__(self, fn: nn.Module):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x) + x


class PreNorm(nn.Module):
    """LayerNorm, then the attention `fn`; both run channels-last (B, T, C), where the 1×1 convs are matmuls
    and the softmaxes run along contiguous rows; (B, C, T) in and out."""

    def __init__(self, dim: int, fn: nn.Module):
        super().__init__()
        self.fn = fn
        self.norm = LayerNorm(dim)

    def forward(self, x):
        return self.fn(self.norm.channels_last(x.transpose(1, 2))).transpose(1, 2)


def sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """(B,) integer steps -> (B, dim): [sin, cos] of t · 10000^(-i / (dim/2 - 1)), as theirs."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=t.device) * -(math.log(10000) / (half - 1)))
    args = t[:, None] * freqs[None, :]
    return torch.cat((args.sin(), args.cos()), dim=-1)


class SinusoidalPosEmb(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, t):
        return sinusoidal_embedding(t, self.dim)


class Block(nn.Module):
    def __init__(self, dim: int, dim_out: int, groups: int):
        super().__init__()
        self.proj = WeightStandardizedConv1d(dim, dim_out, 3, padding=1)
        self.norm = nn.GroupNorm(groups, dim_out)
        self.act = nn.SiLU()

    def forward(self, x, scale_shift=None):
        x = self.norm(self.proj(x))
        if scale_shift is not None:
            scale, shift = scale_shift
            x = torch.addcmul(shift, x, scale + 1)                       # x · (scale + 1) + shift
        return self.act(x)


class ResnetBlock(nn.Module):
    def __init__(self, dim: int, dim_out: int, *, time_emb_dim: int, classes_emb_dim: int, groups: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(time_emb_dim + classes_emb_dim, dim_out * 2))
        self.block1 = Block(dim, dim_out, groups)
        self.block2 = Block(dim_out, dim_out, groups)
        self.res_conv = nn.Conv1d(dim, dim_out, 1) if dim != dim_out else nn.Identity()

    def forward(self, x, emb):
        """x (B, C, T); emb (B, 2·dim_out): this block's projection of [time emb, class emb] (`self.mlp`)."""
        h = self.block2(self.block1(x, emb[:, :, None].chunk(2, dim=1)))
        return h + self.res_conv(x)


def _pointwise(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """A 1×1 Conv1d applied to channels-last x (B, T, C_in) -> (B, T, C_out)."""
    return F.linear(x, conv.weight[:, :, 0], conv.bias)


class _QKV(nn.Module):
    """The projection both attentions share (their names and construction order: to_qkv, then to_out)."""

    def __init__(self, dim: int, heads: int, dim_head: int):
        super().__init__()
        self.scale = dim_head ** -0.5
        self.heads, self.dim_head = heads, dim_head
        self.to_qkv = nn.Conv1d(dim, dim_head * heads * 3, 1, bias=False)


class LinearAttention(_QKV):
    """Linear attention: queries softmaxed over their features, keys over positions. (B, T, C) in and out."""

    def __init__(self, dim: int, heads: int = 4, dim_head: int = 32):
        super().__init__(dim, heads, dim_head)
        self.to_out = nn.Sequential(nn.Conv1d(dim_head * heads, dim, 1), LayerNorm(dim))

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = _pointwise(self.to_qkv, x).view(b, n, 3, self.heads, self.dim_head).unbind(2)  # (B, T, h, d)
        q = q.softmax(dim=-1) * self.scale
        k = k.softmax(dim=1)
        context = torch.einsum("bnhd,bnhe->bhde", k, v)
        out = torch.einsum("bhde,bnhd->bnhe", context, q).reshape(b, n, -1)          # (B, T, h·e)
        return self.to_out[1].channels_last(_pointwise(self.to_out[0], out))


class Attention(_QKV):
    """Full softmax self-attention over positions. (B, T, C) in and out."""

    def __init__(self, dim: int, heads: int = 4, dim_head: int = 32):
        super().__init__(dim, heads, dim_head)
        self.to_out = nn.Conv1d(dim_head * heads, dim, 1)

    def forward(self, x):
        b, n, _ = x.shape
        qkv = _pointwise(self.to_qkv, x).view(b, n, 3, self.heads, self.dim_head).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(*qkv.unbind(0), scale=self.scale)      # (B, h, T, d)
        return _pointwise(self.to_out, out.transpose(1, 2).reshape(b, n, -1))


def Upsample(dim: int, dim_out: int) -> nn.Module:
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv1d(dim, dim_out, 3, padding=1))


def Downsample(dim: int, dim_out: int) -> nn.Module:
    return nn.Conv1d(dim, dim_out, 4, 2, 1)


class Unet1DClsFree(nn.Module):
    """Their `Unet1D_cls_free` at its defaults (init_dim = dim, no learned variance, fixed sinusoids)."""

    def __init__(self, dim: int, num_classes: int, channels: int, dim_mults=(1, 2, 4, 8),
                 resnet_block_groups: int = 8, attn_heads: int = 4, attn_dim_head: int = 32):
        super().__init__()
        self.channels = self.out_dim = channels
        self.init_conv = nn.Conv1d(channels, dim, 7, padding=3)
        dims = [dim, *(dim * m for m in dim_mults)]
        in_out = list(zip(dims[:-1], dims[1:]))
        time_dim = classes_dim = dim * 4
        block = lambda d_in, d_out: ResnetBlock(d_in, d_out, time_emb_dim=time_dim, classes_emb_dim=classes_dim,
                                                groups=resnet_block_groups)
        attention = dict(heads=attn_heads, dim_head=attn_dim_head)
        self.time_mlp = nn.Sequential(SinusoidalPosEmb(dim), nn.Linear(dim, time_dim), nn.GELU(),
                                      nn.Linear(time_dim, time_dim))
        self.classes_emb = nn.Embedding(num_classes, dim)
        self.null_classes_emb = nn.Parameter(torch.randn(dim))
        self.classes_mlp = nn.Sequential(nn.Linear(dim, classes_dim), nn.GELU(), nn.Linear(classes_dim, classes_dim))

        self.downs, self.ups = nn.ModuleList(), nn.ModuleList()
        for i, (dim_in, dim_out) in enumerate(in_out):
            last = i == len(in_out) - 1
            self.downs.append(nn.ModuleList([
                block(dim_in, dim_in), block(dim_in, dim_in),
                Residual(PreNorm(dim_in, LinearAttention(dim_in, **attention))),
                nn.Conv1d(dim_in, dim_out, 3, padding=1) if last else Downsample(dim_in, dim_out)]))
        mid_dim = dims[-1]
        self.mid_block1 = block(mid_dim, mid_dim)
        self.mid_attn = Residual(PreNorm(mid_dim, Attention(mid_dim, **attention)))
        self.mid_block2 = block(mid_dim, mid_dim)
        for i, (dim_in, dim_out) in enumerate(reversed(in_out)):
            last = i == len(in_out) - 1
            self.ups.append(nn.ModuleList([
                block(dim_out + dim_in, dim_out), block(dim_out + dim_in, dim_out),
                Residual(PreNorm(dim_out, LinearAttention(dim_out, **attention))),
                nn.Conv1d(dim_out, dim_in, 3, padding=1) if last else Upsample(dim_out, dim_in)]))
        self.final_res_block = block(dim * 2, dim)
        self.final_conv = nn.Conv1d(dim, channels, 1)

    def class_embedding(self, classes: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        """(B,) labels -> (B, 4·dim); the null embedding where keep is False (classifier-free dropout)."""
        emb = self.classes_emb(classes)
        if keep is not None:
            emb = torch.where(keep[:, None], emb, self.null_classes_emb)
        return self.classes_mlp(emb)

    def time_embedding(self, time: torch.Tensor) -> torch.Tensor:
        """(B,) steps -> (B, 4·dim); their sinusoids are float32, cast here to the weights' dtype."""
        sinusoids = self.time_mlp[0](time)
        return self.time_mlp[1:](sinusoids.to(self.time_mlp[1].weight.dtype))

    def resnet_blocks(self) -> list[ResnetBlock]:
        """Every ResnetBlock, in the order the forward pass uses them."""
        blocks = [b for level in self.downs for b in level[:2]] + [self.mid_block1, self.mid_block2]
        return blocks + [b for level in self.ups for b in level[:2]] + [self.final_res_block]

    def forward(self, x: torch.Tensor, time: torch.Tensor, classes: torch.Tensor,
                keep: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, F, T), time (B,), classes (B,) -> predicted noise (B, F, T); keep (B,) bool: label kept
        (None: all kept), else the null embedding (classifier-free dropout)."""
        cond = torch.cat((self.time_embedding(time), self.class_embedding(classes, keep)), dim=-1)  # (B, 8·dim)
        return self.denoise(x, [block.mlp(cond) for block in self.resnet_blocks()])

    def denoise(self, x: torch.Tensor, embs: list[torch.Tensor]) -> torch.Tensor:
        """The UNet proper: x (B, F, T), embs[i] (B, 2·dim_out) the i-th ResnetBlock's conditioning."""
        embs = iter(embs)
        x = self.init_conv(x)
        r = x
        h = []
        for block1, block2, attn, downsample in self.downs:
            x = block1(x, next(embs))
            h.append(x)
            x = attn(block2(x, next(embs)))
            h.append(x)
            x = downsample(x)
        x = self.mid_block1(x, next(embs))
        x = self.mid_block2(self.mid_attn(x), next(embs))
        for block1, block2, attn, upsample in self.ups:
            x = block1(torch.cat((x, h.pop()), dim=1), next(embs))
            x = attn(block2(torch.cat((x, h.pop()), dim=1), next(embs)))
            x = upsample(x)
        x = self.final_res_block(torch.cat((x, r), dim=1), next(embs))
        return self.final_conv(x)


class GuidedDenoiser:
    """The guided noise prediction of one sampling run, without recomputing what the run holds fixed.

    A ResnetBlock's conditioning is W [SiLU(t_emb), SiLU(c_emb)] + b = W_t SiLU(t_emb) + (W_c SiLU(c_emb) + b):
    the class part is computed once per run (for the labels and the null embedding), the time part once per
    step for the whole batch; the standardised conv kernels are computed once per run.
    """

    def __init__(self, unet: Unet1DClsFree, classes: torch.Tensor):
        self.unet, self.b = unet, len(classes)
        self.blocks = unet.resnet_blocks()
        c = torch.cat((unet.class_embedding(classes, torch.zeros_like(classes, dtype=torch.bool)),  # null rows
                       unet.class_embedding(classes, None)))                                       # label rows
        time_dim = unet.time_mlp[-1].out_features
        self.class_parts = [F.linear(F.silu(c), blk.mlp[1].weight[:, time_dim:], blk.mlp[1].bias)
                            for blk in self.blocks]                                               # (2B, 2·dim_out)
        self.time_weights = [blk.mlp[1].weight[:, :time_dim] for blk in self.blocks]
        self.convs = [m for m in unet.modules() if isinstance(m, WeightStandardizedConv1d)]

    def __call__(self, x: torch.Tensor, t: int, keep: torch.Tensor, cond_scale: float) -> torch.Tensor:
        """null + (cond − null) · cond_scale, their `forward_with_cond_scale`; keep (B,) bool: whether the
        conditional pass kept the label. A dropped label's conditional pass is the null pass, so its output
        is the null output: only the kept ones run the conditional pass, batched with the null pass."""
        b = self.b
        kept = keep.nonzero().squeeze(1)
        null_rows = torch.arange(b, device=x.device)                     # rows of class_parts; + b: labels
        if cond_scale == 1:                                               # theirs: the conditional pass only
            rows, x_in = torch.where(keep, null_rows + b, null_rows), x
        else:
            rows, x_in = torch.cat((null_rows, kept + b)), torch.cat((x, x[kept]))
        t_emb = F.silu(self.unet.time_embedding(torch.full((1,), t, device=x.device)))   # (1, time_dim)
        embs = [part[rows] + F.linear(t_emb, w) for part, w in zip(self.class_parts, self.time_weights)]
        out = self.unet.denoise(x_in, embs)
        if cond_scale == 1:
            return out
        null, cond = out[:b], out[b:]
        return null.index_add(0, kept, (cond - null[kept]) * cond_scale)   # rows not kept stay null

    def __enter__(self):
        for conv in self.convs:
            conv.frozen_weight = conv.standardized_weight(conv.weight.dtype)
        return self

    def __exit__(self, *exc):
        for conv in self.convs:
            conv.frozen_weight = None


# --------------------------------------------------------------------------- the diffusion


def linear_beta_schedule(timesteps: int) -> torch.Tensor:
    scale = 1000 / timesteps
    return torch.linspace(scale * 0.0001, scale * 0.02, timesteps, dtype=torch.float64)


def cosine_beta_schedule(timesteps: int, s: float = 0.008) -> torch.Tensor:
    """Nichol & Dhariwal's cosine schedule: alpha_bar(t) = cos²((t/T + s) / (1 + s) · π/2), normalised."""
    x = torch.linspace(0, timesteps, timesteps + 1, dtype=torch.float64)
    alphas_cumprod = torch.cos(((x / timesteps) + s) / (1 + s) * math.pi * 0.5) ** 2
    alphas_cumprod = alphas_cumprod / alphas_cumprod[0]
    betas = 1 - (alphas_cumprod[1:] / alphas_cumprod[:-1])
    return torch.clip(betas, 0, 0.999)


class BioDiffusionModel(nn.Module):
    """Their `GaussianDiffusion1D_cls_free` around the UNet: schedule, loss, ancestral and DDIM samplers."""

    def __init__(self, n_features: int, seq_len: int, n_classes: int, config: BioDiffusionConfig):
        super().__init__()
        c = config  # objective, loss_type and beta_schedule checked: BioDiffusionConfig.RANGES
        schedules = {"cosine": cosine_beta_schedule, "linear": linear_beta_schedule}
        self.config, self.n_features, self.seq_len = c, n_features, seq_len
        factor = 2 ** (len(c.dim_mults) - 1)
        self.padded_len = -(-seq_len // factor) * factor                  # next multiple of the UNet's factor
        self.model = Unet1DClsFree(c.dim, n_classes, n_features, tuple(c.dim_mults), c.resnet_block_groups,
                                   c.attn_heads, c.attn_dim_head)
        self.num_timesteps = c.timesteps

        betas = schedules[c.beta_schedule](c.timesteps)                   # float64, cast to float32 as theirs
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        alphas_cumprod_prev = F.pad(alphas_cumprod[:-1], (1, 0), value=1.0)
        posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
        buffers = {
            "betas": betas, "alphas_cumprod": alphas_cumprod, "alphas_cumprod_prev": alphas_cumprod_prev,
            "sqrt_alphas_cumprod": alphas_cumprod.sqrt(), "sqrt_one_minus_alphas_cumprod": (1 - alphas_cumprod).sqrt(),
            "sqrt_recip_alphas_cumprod": (1.0 / alphas_cumprod).sqrt(),
            "sqrt_recipm1_alphas_cumprod": (1.0 / alphas_cumprod - 1).sqrt(),
            "posterior_variance": posterior_variance,
            "posterior_log_variance_clipped": posterior_variance.clamp(min=1e-20).log(),
            "posterior_mean_coef1": betas * alphas_cumprod_prev.sqrt() / (1.0 - alphas_cumprod),
            "posterior_mean_coef2": (1.0 - alphas_cumprod_prev) * (1.0 - betas).sqrt() / (1.0 - alphas_cumprod),
            "p2_loss_weight": (c.p2_loss_weight_k + alphas_cumprod / (1 - alphas_cumprod)) ** -c.p2_loss_weight_gamma,
        }
        for name, value in buffers.items():  # a function of the config: not saved with the weights
            self.register_buffer(name, value.to(torch.float32), persistent=False)

    # ---- shapes
    def to_model_space(self, X: torch.Tensor) -> torch.Tensor:
        """(N, T, F) -> (N, F, T'), padded on the right with the last step to the UNet's length T'."""
        x = X.transpose(1, 2)
        if self.padded_len > self.seq_len:
            x = F.pad(x, (0, self.padded_len - self.seq_len), mode="replicate")
        return x.contiguous()

    def from_model_space(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, :self.seq_len].transpose(1, 2)

    # ---- training
    def q_sample(self, x_start, t, noise):
        return self.sqrt_alphas_cumprod[t][:, None, None] * x_start + \
            self.sqrt_one_minus_alphas_cumprod[t][:, None, None] * noise

    def loss(self, x_start, t, noise, classes, keep) -> torch.Tensor:
        """Their `p_losses`: x_start (B, F, T') in [-1, 1], t (B,), noise like x_start, keep (B,) bool."""
        x = self.q_sample(x_start, t, noise)
        model_out = self.model(x, t, classes, keep)
        if self.config.objective == "pred_noise":
            target = noise
        elif self.config.objective == "pred_x0":
            target = x_start
        else:
            target = self.sqrt_alphas_cumprod[t][:, None, None] * noise - \
                self.sqrt_one_minus_alphas_cumprod[t][:, None, None] * x_start
        loss_fn = F.l1_loss if self.config.loss_type == "l1" else F.mse_loss
        loss = loss_fn(model_out, target, reduction="none").mean(dim=(1, 2))    # (B,)
        return (loss * self.p2_loss_weight[t]).mean()

    # ---- sampling
    def model_predictions(self, x, t: int, model_output, clip_x_start: bool):
        """(pred_noise, x_start) from the network's output at step t, as their `model_predictions`."""
        objective = self.config.objective
        if objective == "pred_noise":
            pred_noise = model_output
            x_start = self.sqrt_recip_alphas_cumprod[t] * x - self.sqrt_recipm1_alphas_cumprod[t] * pred_noise
            return pred_noise, (x_start.clamp(-1.0, 1.0) if clip_x_start else x_start)
        if objective == "pred_x0":
            x_start = model_output
        else:
            x_start = self.sqrt_alphas_cumprod[t] * x - self.sqrt_one_minus_alphas_cumprod[t] * model_output
        x_start = x_start.clamp(-1.0, 1.0) if clip_x_start else x_start
        pred_noise = (self.sqrt_recip_alphas_cumprod[t] * x - x_start) / self.sqrt_recipm1_alphas_cumprod[t]
        return pred_noise, x_start

    def p_sample(self, x, t: int, model_output, noise) -> torch.Tensor:
        """One ancestral step x_t -> x_{t-1}: posterior mean at the clipped x0, plus σ_t · noise (none at t = 0)."""
        _, x_start = self.model_predictions(x, t, model_output, clip_x_start=True)
        mean = self.posterior_mean_coef1[t] * x_start + self.posterior_mean_coef2[t] * x
        if t == 0:
            return mean
        return mean + (0.5 * self.posterior_log_variance_clipped[t]).exp() * noise

    def ddim_step(self, x, t: int, t_next: int, model_output, noise, eta: float) -> torch.Tensor:
        """One DDIM step t -> t_next (their `ddim_sample` body); t_next < 0 returns the clipped x0."""
        pred_noise, x_start = self.model_predictions(x, t, model_output, clip_x_start=True)
        if t_next < 0:
            return x_start
        alpha, alpha_next = self.alphas_cumprod[t], self.alphas_cumprod[t_next]
        sigma = eta * ((1 - alpha / alpha_next) * (1 - alpha_next) / (1 - alpha)).sqrt()
        c = (1 - alpha_next - sigma ** 2).sqrt()
        return x_start * alpha_next.sqrt() + c * pred_noise + sigma * noise

    def ddim_times(self, sampling_timesteps: int) -> list[tuple[int, int]]:
        """Their (t, t_next) pairs: linspace(-1, T − 1, S + 1) truncated to integers, reversed."""
        times = torch.linspace(-1, self.num_timesteps - 1, steps=sampling_timesteps + 1)
        times = list(reversed(times.int().tolist()))
        return list(zip(times[:-1], times[1:]))

    def sampling_pairs(self, sampling: BioDiffusionConfig) -> list[tuple[int, int]]:
        """The (t, t_next) steps of a run: every step ancestrally, or their DDIM pairs at fewer steps."""
        steps = sampling.sampling_timesteps if sampling.sampling_timesteps is not None else self.num_timesteps
        if not 1 <= steps <= self.num_timesteps:
            raise ValueError(f"sampling_timesteps must be in 1..{self.num_timesteps}, got {steps}")
        if steps == self.num_timesteps:
            return [(t, t - 1) for t in reversed(range(self.num_timesteps))]
        return self.ddim_times(steps)

    @torch.no_grad()
    def sample(self, classes: torch.Tensor, generator: torch.Generator, sampling: BioDiffusionConfig | None = None,
               bar=None) -> torch.Tensor:
        """(B,) labels -> (B, F, T') in [-1, 1] model space; noise and label dropout from `generator`.
        sampling: the config whose sampling fields to use (default: the one the model was built with)."""
        c, b = sampling or self.config, len(classes)
        pairs = self.sampling_pairs(c)
        shape = (b, self.n_features, self.padded_len)
        x = torch.randn(shape, generator=generator)

        def draws():  # their order of draws: the label-dropout mask (in the conditional pass), then the noise
            for _, t_next in pairs:
                keep = _keep_mask(b, c.sample_cond_drop_prob, generator)
                yield keep, (torch.randn(shape, generator=generator) if t_next >= 0 else None)

        return self.sample_from(x.to(classes.device), classes, draws(), c, bar)

    @torch.no_grad()
    def sample_from(self, x: torch.Tensor, classes: torch.Tensor, draws, sampling: BioDiffusionConfig | None = None,
                    bar=None) -> torch.Tensor:
        """x_T (B, F, T') -> x_0 given each step's draws, (keep (B,) bool, noise like x or None at the last
        step), in step order: `sample` draws them from a generator, a check can hand in recorded ones."""
        c, device = sampling or self.config, x.device
        pairs = self.sampling_pairs(c)
        ancestral = len(pairs) == self.num_timesteps
        with GuidedDenoiser(self.model, classes) as denoiser:
            for (t, t_next), (keep, noise) in zip(pairs, draws, strict=True):
                output = denoiser(x, t, keep.to(device), c.cond_scale)
                noise = noise.to(device) if noise is not None else None
                if ancestral:
                    x = self.p_sample(x, t, output, noise)
                else:
                    x = self.ddim_step(x, t, t_next, output, noise, c.ddim_sampling_eta)
                if bar is not None:
                    bar.update(1)
        return x


def _keep_mask(b: int, drop_prob: float, generator: torch.Generator) -> torch.Tensor:
    """(b,) bool, True where the label is kept: uniform < 1 − drop_prob, as their `prob_mask_like`."""
    if drop_prob == 0:
        return torch.ones(b, dtype=torch.bool)
    if drop_prob == 1:
        return torch.zeros(b, dtype=torch.bool)
    return torch.rand(b, generator=generator) < 1 - drop_prob


# --------------------------------------------------------------------------- the generator


def make_optimizer(model: BioDiffusionModel, config: BioDiffusionConfig, device: torch.device):
    """Their AdamW (lr 3e-4, torch's defaults otherwise), as torch's fused kernel where it has one: the same
    update in one kernel."""
    return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                             fused=device.type in ("cpu", "cuda"))


def train_step(model: BioDiffusionModel, optimizer, x_start, t, noise, classes, keep) -> torch.Tensor:
    """One optimiser step on one batch and its draws, their loop body (no EMA, clipping or lr schedule); the
    parameters' .grad hold this step's gradient afterwards."""
    loss = model.loss(x_start, t, noise, classes, keep)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss


class BioDiffusion(Generator, name="biodiffusion", config=BioDiffusionConfig, native_labels=True,
                   scaling="minmax11", sampling_fields=("sample_batch_size", "sampling_timesteps",
                                                        "ddim_sampling_eta", "cond_scale", "sample_cond_drop_prob"),
                   budget_fields=("max_steps",)):

    def build(self, n_features, seq_len, n_classes):
        c = self.config  # GroupNorm groups dividing every level: BioDiffusionConfig.__post_init__
        return BioDiffusionModel(n_features, seq_len, n_classes if n_classes is not None else 1, c)

    def train(self, model, X, y, seed, device, checkpoint: Checkpoint, progress):
        c = self.config
        optimizer = make_optimizer(model, c, device)
        generator = torch.Generator().manual_seed(seed)
        n = len(X)
        per_epoch = math.ceil(n / c.batch_size)
        state = {"epoch": 0, "steps": 0, "loss": [], "epoch_loss_sum": 0.0, "order": None}
        state.update(checkpoint.restore(model=model, optimizer=optimizer, generator=generator))
        X_all = model.to_model_space(torch.as_tensor(X)).to(device)      # (N, F, T')
        labels = torch.as_tensor(y if y is not None else np.zeros(n, np.int64)).to(device)
        total = c.epochs * per_epoch if c.max_steps is None else min(c.max_steps, c.epochs * per_epoch)
        bar = progress_bar(total, state["steps"], "BioDiffusion steps", progress)
        model.train()
        while state["epoch"] < c.epochs and state["steps"] < total:
            within = state["steps"] - state["epoch"] * per_epoch          # batches of this epoch already done
            if within == 0:                                               # a shuffled loader; kept for a resume
                state["order"] = torch.randperm(n, generator=generator)
            order = state["order"]
            for start in range(within * c.batch_size, n, c.batch_size):
                idx = order[start:start + c.batch_size]
                b = len(idx)
                t = torch.randint(0, model.num_timesteps, (b,), generator=generator)   # their order of draws
                noise = torch.randn((b, X_all.shape[1], X_all.shape[2]), generator=generator)
                keep = _keep_mask(b, c.cond_drop_prob, generator)
                idx = idx.to(device)
                loss = train_step(model, optimizer, X_all[idx], t.to(device), noise.to(device), labels[idx],
                                  keep.to(device))
                state["epoch_loss_sum"] += loss.item()
                state["steps"] += 1
                if start + c.batch_size >= n:
                    state["loss"].append(state["epoch_loss_sum"] / per_epoch)
                    state["epoch"] += 1
                    state["epoch_loss_sum"] = 0.0
                bar.update(1)
                checkpoint.step(state, state["steps"], final=state["epoch"] == c.epochs or state["steps"] == total)
                if state["steps"] == total:
                    break
        bar.close()
        return {"steps": state["steps"], "epochs": state["epoch"], "loss": state["loss"]}

    def generate(self, model, n, y, seed, device, progress):
        c = self.config
        generator = torch.Generator().manual_seed(seed)
        classes = torch.as_tensor(y if y is not None else np.zeros(n, np.int64))
        steps = c.sampling_timesteps if c.sampling_timesteps is not None else c.timesteps
        bar = progress_bar(steps * math.ceil(n / c.sample_batch_size), 0, "BioDiffusion sampling", progress)
        out = []
        for start in range(0, n, c.sample_batch_size):
            x = model.sample(classes[start:start + c.sample_batch_size].to(device), generator, c, bar)
            out.append(model.from_model_space(x).cpu())
        bar.close()
        return torch.cat(out).numpy()

