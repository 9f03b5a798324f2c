"""The denoising network eps_phi(x_t, t[, y]): a 1D UNet over the hours of a stay.

Layout after openai/guided-diffusion and lucidrains' 1D UNet: residual blocks with
scale-shift GroupNorm conditioning on the time (and label) embedding, self-attention
at chosen levels, strided-conv down / nearest+conv up sampling with skip connections.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from tardiff.settings import check, count, each, fraction, optional


@dataclass
class UNetConfig:
    model_channels: int = 32
    channel_mult: tuple = (1, 2, 2)      # one entry per resolution level; T halves between levels
    num_res_blocks: int = 1
    attention_levels: tuple = (1,)       # level indices (0 = full resolution) that get self-attention
    num_heads: int = 4
    dropout: float = 0.0
    num_classes: int | None = None       # set for class-conditional (CFG) models; label num_classes = null

    RANGES: ClassVar[dict] = {"model_channels": count(), "channel_mult": each(count(), min_items=1),
                              "num_res_blocks": count(), "attention_levels": each(count(0)), "num_heads": count(),
                              "dropout": fraction(), "num_classes": optional(count())}

    def __post_init__(self):
        check(self)

    @classmethod
    def smoke(cls, **overrides) -> "UNetConfig":
        """Tiny network for tests and smoke runs."""
        return cls(**{"model_channels": 16, "channel_mult": (1, 2), "num_res_blocks": 1,
                      "attention_levels": (1,), "num_heads": 2, **overrides})

    @classmethod
    def paper(cls, **overrides) -> "UNetConfig":
        """The original's size: 64 channels, 4 levels (24 -> 12 -> 6 -> 3), 2 res blocks, 8 heads,
        attention at downsampling factors 1, 2, 4 (its `attention_resolutions: [1, 2, 4]`)."""
        return cls(**{"model_channels": 64, "channel_mult": (1, 2, 4, 4), "num_res_blocks": 2,
                      "attention_levels": (0, 1, 2), "num_heads": 8, **overrides})


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps, (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, dim % 2))


def _norm(channels: int) -> nn.GroupNorm:
    groups = math.gcd(channels, 8)  # 8 groups when possible; small test models still work
    return nn.GroupNorm(groups, channels)


def _zero(module: nn.Module) -> nn.Module:
    """Zero-initialised output layers make every residual branch start as identity."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float):
        super().__init__()
        self.in_layers = nn.Sequential(_norm(in_ch), nn.SiLU(), nn.Conv1d(in_ch, out_ch, 3, padding=1))
        self.emb = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * out_ch))
        self.out_norm = _norm(out_ch)
        self.out_layers = nn.Sequential(nn.SiLU(), nn.Dropout(dropout),
                                        _zero(nn.Conv1d(out_ch, out_ch, 3, padding=1)))
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv1d(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x)                                 # (B, C, T)
        scale, shift = self.emb(emb)[..., None].chunk(2, dim=1)
        h = self.out_norm(h) * (1 + scale) + shift
        return self.skip(x) + self.out_layers(h)


class Attention(nn.Module):
    def __init__(self, channels: int, num_heads: int):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"UNetConfig.num_heads={num_heads} must divide the {channels} channels of an "
                             "attention level; change num_heads or model_channels")
        self.num_heads = num_heads
        self.norm = _norm(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, T = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, self.num_heads, C // self.num_heads, T).unbind(1)
        h = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.proj(h.transpose(-1, -2).reshape(B, C, T))  # (B, C, T)


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class Block(nn.Module):
    """A ResBlock optionally followed by self-attention."""

    def __init__(self, in_ch, out_ch, emb_dim, dropout, attention: bool, num_heads: int):
        super().__init__()
        self.res = ResBlock(in_ch, out_ch, emb_dim, dropout)
        self.attn = Attention(out_ch, num_heads) if attention else nn.Identity()

    def forward(self, x, emb):
        return self.attn(self.res(x, emb))


class UNet1D(nn.Module):
    """eps prediction (B, T, F) from x_t (B, T, F), t (B,) and optional labels y (B,).

    T need not be a multiple of 2**(levels-1): the input is zero-padded at the end and
    the output cropped back. With `num_classes` set, y=None (or label num_classes) is the
    null label used by classifier-free guidance.
    """

    def __init__(self, n_features: int, config: UNetConfig = UNetConfig()):
        super().__init__()
        if not config.channel_mult:
            raise ValueError("UNetConfig.channel_mult needs at least one level")
        bad = [lvl for lvl in config.attention_levels if not 0 <= lvl < len(config.channel_mult)]
        if bad:
            raise ValueError(f"UNetConfig.attention_levels {bad} outside levels 0..{len(config.channel_mult) - 1}")
        self.config, self.n_features = config, n_features
        ch = config.model_channels
        emb_dim = 4 * ch
        self.time_embed = nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.num_classes = config.num_classes
        if config.num_classes is not None:
            self.label_embed = nn.Embedding(config.num_classes + 1, emb_dim)  # last index = null label

        self.input_conv = nn.Conv1d(n_features, ch, 3, padding=1)
        block = lambda i, o, lvl: Block(i, o, emb_dim, config.dropout, lvl in config.attention_levels,  # noqa: E731
                                        config.num_heads)
        self.down = nn.ModuleList()
        skips, cur = [ch], ch
        for lvl, mult in enumerate(config.channel_mult):
            for _ in range(config.num_res_blocks):
                self.down.append(block(cur, ch * mult, lvl))
                cur = ch * mult
                skips.append(cur)
            if lvl < len(config.channel_mult) - 1:
                self.down.append(Downsample(cur))
                skips.append(cur)
        self.mid = nn.ModuleList([Block(cur, cur, emb_dim, config.dropout, True, config.num_heads),
                                  Block(cur, cur, emb_dim, config.dropout, False, config.num_heads)])
        self.up = nn.ModuleList()
        for lvl, mult in reversed(list(enumerate(config.channel_mult))):
            for i in range(config.num_res_blocks + 1):
                self.up.append(block(cur + skips.pop(), ch * mult, lvl))
                cur = ch * mult
            if lvl > 0:
                self.up.append(Upsample(cur))
        # No GroupNorm before the output: with T=24 a group's statistics are per-sample, and
        # normalising them away stops the net from passing x_t's scale through to eps at high t.
        self.out = nn.Sequential(nn.SiLU(), _zero(nn.Conv1d(cur, n_features, 3, padding=1)))
        self.factor = 2 ** (len(config.channel_mult) - 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if x.ndim != 3 or x.shape[-1] != self.n_features:
            raise ValueError(f"x must be (B, T, {self.n_features}), got {tuple(x.shape)}")
        B, T, _ = x.shape
        emb = self.time_embed(timestep_embedding(t.reshape(-1).expand(B) if t.numel() == 1 else t,
                                                 self.config.model_channels))
        if self.num_classes is not None:
            if y is None:
                y = torch.full((B,), self.num_classes, dtype=torch.long, device=x.device)
            emb = emb + self.label_embed(y.long())
        pad = (-T) % self.factor
        h = F.pad(x.transpose(1, 2), (0, pad))               # (B, F, T + pad)
        h = self.input_conv(h)                               # (B, C, T + pad)
        hs = [h]
        for layer in self.down:
            h = layer(h, emb) if isinstance(layer, Block) else layer(h)
            hs.append(h)
        for layer in self.mid:
            h = layer(h, emb)
        for layer in self.up:
            h = layer(torch.cat([h, hs.pop()], dim=1), emb) if isinstance(layer, Block) else layer(h)
        return self.out(h)[..., :T].transpose(1, 2)          # (B, T, F)
