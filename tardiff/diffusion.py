"""Gaussian diffusion over (B, T, F) stays: linear schedule, eps-prediction loss, trainer, DDIM sampler.

The sampler takes a guidance hook `guidance(x_t, t, pred_x0, y) -> delta` (openai
guided-diffusion's `cond_fn`, applied to pred_x0), so unguided, classifier-guided and
influence-guided sampling are one sampler with three small functions.
"""
from __future__ import annotations

import copy
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from tardiff.settings import SettingError, check, count, fraction, number, one_of, positive
from tardiff.unet1d import UNet1D, UNetConfig
from tardiff.utils import get_device, save_model

Guidance = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class DiffusionConfig:
    timesteps: int = 200
    beta_start: float = 5e-4
    beta_end: float = 0.1
    loss: str = "l1"            # "l1" or "l2" between true and predicted noise

    RANGES: ClassVar[dict] = {"timesteps": count(), "beta_start": number(0, 1, True, True),
                              "beta_end": number(0, 1, True, True, why="above beta_start"), "loss": one_of("l1", "l2")}

    def __post_init__(self):
        check(self)
        if not self.beta_start < self.beta_end:  # the linear schedule rises
            raise SettingError(type(self), "beta_end", self.beta_end, f"a number in ({self.beta_start:g}, 1), above "
                                                                     "beta_start")


@dataclass
class DiffusionTrainConfig:
    steps: int = 4000
    batch_size: int = 128
    lr: float = 1e-3            # CPU-sized UNets train well at 1e-3 with warm-up and grad clipping
    warmup: int = 200           # linear lr warm-up steps, constant afterwards
    weight_decay: float = 0.0
    ema_decay: float = 0.995
    label_dropout: float = 0.1  # fraction of labels replaced by the null label (classifier-free guidance)
    checkpoint_every: int = 500
    log_every: int = 50
    grad_clip: float = 1.0

    RANGES: ClassVar[dict] = {"steps": count(), "batch_size": count(), "lr": positive(), "warmup": count(0),
                              "weight_decay": number(0), "ema_decay": fraction(), "label_dropout": fraction(),
                              "checkpoint_every": count(), "log_every": count(), "grad_clip": positive()}

    def __post_init__(self):
        check(self)


class GaussianDiffusion:
    """Owns the noise schedule; every per-timestep coefficient is gathered from it by integer t."""

    def __init__(self, config: DiffusionConfig = DiffusionConfig()):
        self.config = config  # its ranges and 0 < beta_start < beta_end < 1 are checked when it is built
        self.timesteps = config.timesteps
        betas = torch.linspace(config.beta_start, config.beta_end, config.timesteps, dtype=torch.float64)
        self.betas = betas
        self.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)  # (timesteps,) float64

    def _at(self, values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """values[t] shaped (B, 1, 1) for broadcasting over (B, T, F); t = -1 means alpha_bar = 1."""
        t = t.long().cpu()
        out = torch.where(t >= 0, values[t.clamp(min=0)], torch.ones((), dtype=values.dtype))
        return out.to(device=like.device, dtype=like.dtype).reshape(-1, 1, 1)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        ab = self._at(self.alphas_cumprod, t, x0)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def predict_x0(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        ab = self._at(self.alphas_cumprod, t, x_t)
        return (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()

    def predict_eps(self, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        ab = self._at(self.alphas_cumprod, t, x_t)
        return (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()

    def loss(self, model: nn.Module, x0: torch.Tensor, y: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean |eps - eps_phi(x_t, t, y)| (or squared) at uniformly drawn t; draws on CPU for reproducibility."""
        B = x0.shape[0]
        t = torch.randint(0, self.timesteps, (B,), generator=generator)
        noise = torch.randn(x0.shape, generator=generator).to(x0.device)
        x_t = self.q_sample(x0, t, noise)
        eps = model(x_t, t.to(x0.device), y)
        return F.l1_loss(eps, noise) if self.config.loss == "l1" else F.mse_loss(eps, noise)

    def ddim_timesteps(self, steps: int) -> list[int]:
        """An evenly spaced, increasing subsequence of 0..timesteps-1 with both ends."""
        if not 1 <= steps <= self.timesteps:
            raise ValueError(f"steps must be in 1..{self.timesteps}, got {steps}")
        return sorted(set(np.linspace(0, self.timesteps - 1, steps).round().astype(int).tolist()))

    def step(self, model_output: torch.Tensor, t: int, sample: torch.Tensor, t_prev: int, eta: float = 0.0,
             noise: torch.Tensor | None = None, guidance: Guidance | None = None, guidance_scale: float = 0.0,
             y: torch.Tensor | None = None, clip_x0: float | None = None, guidance_update: str = "pred_x0"):
        """One DDIM step t -> t_prev (-1 = the end) from eps; returns (x_prev, pred_x0), like diffusers.

        Notation (Song et al. 2021, DDIM, eq. 12) -> variable: x_t -> `sample`; ε_θ(x_t, t) -> `model_output`
        (then `eps`); ᾱ_t, ᾱ_{t-1} -> `ab`, `ab_prev`; x̂0 = (x_t − √(1−ᾱ_t) ε) / √ᾱ_t -> `pred_x0` (eq. 9);
        σ_t = η √((1−ᾱ_{t-1})/(1−ᾱ_t)) √(1−ᾱ_t/ᾱ_{t-1}) -> `sigma` (eq. 16);
        x_{t-1} = √ᾱ_{t-1} x̂0 + √(1−ᾱ_{t-1}−σ_t²) ε + σ_t z -> `x_prev` (eq. 12).

        guidance_update="pred_x0": guidance shifts pred_x0 and eps is re-derived from it, so the update
        stays a DDIM update. "original": the released TarDiff's rule, the hook's output at pred_x0 added
        to x_{t-1} as (1 - s) x_{t-1} + s (s ∇) with s = guidance_scale (1e-5 there).
        """
        if guidance_update not in ("pred_x0", "original"):
            raise ValueError(f"guidance_update must be 'pred_x0' or 'original', got {guidance_update!r}")
        B = sample.shape[0]
        tt = torch.full((B,), t, dtype=torch.long)
        pred_x0 = self.predict_x0(sample, tt, model_output)
        if clip_x0 is not None:
            pred_x0 = pred_x0.clamp(-clip_x0, clip_x0)
        delta = None
        if guidance is not None and guidance_scale != 0:
            with torch.enable_grad():
                delta = guidance(sample.detach(), tt.to(sample.device), pred_x0.detach(), y)
            if delta.shape != pred_x0.shape:
                raise ValueError(f"guidance returned shape {tuple(delta.shape)}, expected {tuple(pred_x0.shape)}")
            delta = delta.detach().to(pred_x0)
            if guidance_update == "pred_x0":
                pred_x0 = pred_x0 + guidance_scale * delta
        eps = self.predict_eps(sample, tt, pred_x0)
        ab = self._at(self.alphas_cumprod, tt, sample)
        ab_prev = self._at(self.alphas_cumprod, torch.full((B,), t_prev), sample)
        sigma = eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)).sqrt()
        x_prev = ab_prev.sqrt() * pred_x0 + (1 - ab_prev - sigma ** 2).clamp(min=0).sqrt() * eps
        if eta > 0 and t_prev >= 0:
            x_prev = x_prev + sigma * noise
        if delta is not None and guidance_update == "original":
            x_prev = (1 - guidance_scale) * x_prev + guidance_scale * (guidance_scale * delta)
        return x_prev, pred_x0


# --------------------------------------------------------------------------- training


def _lr_at(step: int, train: DiffusionTrainConfig) -> float:
    return train.lr * min(1.0, (step + 1) / max(1, train.warmup))


@torch.no_grad()
def _ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """EMA of the weights, one multi-tensor op (not one small op per tensor)."""
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - decay)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


def _fingerprint(X: torch.Tensor, y: torch.Tensor | None) -> list:
    """Cheap identity of the training data, so a checkpoint is never resumed on other data."""
    fp = [list(X.shape), round(float(X.double().sum()), 4), round(float((X.double() ** 2).sum()), 2)]
    return fp + ([int(y.sum()), len(y)] if y is not None else [])


def _checkpoint(path: Path, model, ema, optimizer, generator, step, history, meta) -> None:
    blob = {"unet_config": asdict(model.config), "n_features": model.n_features,
            "state_dict": {k: v.cpu() for k, v in ema.state_dict().items()},
            "extra": {"diffusion": meta["diffusion"], "step": step},
            "train_state": {"model": {k: v.cpu() for k, v in model.state_dict().items()},
                            "optimizer": optimizer.state_dict(), "generator": generator.get_state(),
                            "torch_rng": torch.get_rng_state(), "step": step, "history": history,
                            "meta": meta}}
    tmp = path.with_suffix(".tmp")
    torch.save(blob, tmp)
    os.replace(tmp, path)  # atomic: an interrupted save never corrupts the last good checkpoint


def train_diffusion(X, y=None, unet: UNetConfig = UNetConfig(), diffusion: DiffusionConfig = DiffusionConfig(),
                    train: DiffusionTrainConfig = DiffusionTrainConfig(), seed: int = 0, device=None,
                    checkpoint_dir=None, progress: bool = True) -> tuple[UNet1D, dict]:
    """Train eps_phi on X (N, T, F); returns the EMA model (eval mode) and {'loss': [...], 'wall_time_s'}.

    With `checkpoint_dir`, saves `diffusion.pt` every `checkpoint_every` steps and resumes from it;
    a resumed run ends with the same weights as an uninterrupted one (CPU). Raising `train.steps`
    and rerunning continues training from the checkpoint.
    """
    X = torch.as_tensor(np.asarray(X) if not torch.is_tensor(X) else X).detach().cpu().float()
    if X.ndim != 3:
        raise ValueError(f"X must be (stays, hours, channels), got shape {tuple(X.shape)}")
    if not torch.isfinite(X).all():
        raise ValueError("X has NaN/inf values; impute first (tardiff.stays.Preprocessor)")
    if y is not None and unet.num_classes is not None:
        y = torch.as_tensor(np.asarray(y) if not torch.is_tensor(y) else y).detach().cpu().long().reshape(-1)
        if len(y) != len(X):
            raise ValueError(f"y has {len(y)} labels but X has {len(X)} stays")
        if y.min() < 0 or y.max() >= unet.num_classes:
            raise ValueError(f"y must be in 0..{unet.num_classes - 1} (UNetConfig.num_classes), "
                             f"got {int(y.min())}..{int(y.max())}")
    elif unet.num_classes is not None:
        raise ValueError("UNetConfig.num_classes is set but no labels y were given; pass y or num_classes=None")
    else:
        y = None  # an unconditional model ignores labels

    device = get_device(device)
    schedule = GaussianDiffusion(diffusion)
    meta = {"unet": asdict(unet), "diffusion": asdict(diffusion), "seed": seed, "data": _fingerprint(X, y),
            "train": {k: v for k, v in asdict(train).items() if k not in ("steps", "checkpoint_every", "log_every")}}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = UNet1D(X.shape[-1], unet).to(device)
        ema = copy.deepcopy(model).eval().requires_grad_(False)
        # foreach: one multi-tensor op per update step (torch picks it on GPUs only; on a CPU it is ~9 % of a step)
        optimizer = torch.optim.AdamW(model.parameters(), lr=train.lr, weight_decay=train.weight_decay, foreach=True)
        generator = torch.Generator().manual_seed(seed)
        history, step, elapsed = {"loss": []}, 0, 0.0

        path = None
        if checkpoint_dir is not None:
            path = Path(checkpoint_dir) / "diffusion.pt"
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.exists():
                blob = torch.load(path, map_location="cpu", weights_only=False)
                state = blob["train_state"]
                if _jsonish(state["meta"]) != _jsonish(meta):
                    raise ValueError(f"{path} was written by a run with another config, seed or data; "
                                     "delete it or pick another checkpoint_dir")
                model.load_state_dict(state["model"])
                ema.load_state_dict(blob["state_dict"])
                optimizer.load_state_dict(state["optimizer"])
                generator.set_state(state["generator"])
                torch.set_rng_state(state["torch_rng"])
                step, history = state["step"], state["history"]
                elapsed = history.get("wall_time_s", 0.0)

        X_dev = X.to(device)
        y_dev = y.to(device) if y is not None else None
        start = time.perf_counter()
        model.train()
        bar = tqdm(total=train.steps, initial=min(step, train.steps), desc="diffusion", disable=not progress,
                   leave=False)
        while step < train.steps:
            idx = torch.randint(0, len(X), (train.batch_size,), generator=generator)
            yb = None
            if y_dev is not None:
                drop = torch.rand(train.batch_size, generator=generator) < train.label_dropout
                yb = torch.where(drop, unet.num_classes, y[idx]).to(device)
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(step, train)
            loss = schedule.loss(model, X_dev[idx.to(device)], yb, generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if train.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip, foreach=True)
            optimizer.step()
            # The decay ramps up so short runs are not dominated by the random init.
            _ema_update(ema, model, min(train.ema_decay, (1 + step) / (10 + step)))
            history["loss"].append(loss.item())
            step += 1
            bar.update(1)
            if step % train.log_every == 0:
                bar.set_postfix(loss=f"{np.mean(history['loss'][-train.log_every:]):.4f}")
            if path is not None and (step % train.checkpoint_every == 0 or step == train.steps):
                history["wall_time_s"] = elapsed + time.perf_counter() - start
                _checkpoint(path, model, ema, optimizer, generator, step, history, meta)
        bar.close()
    history["wall_time_s"] = elapsed + time.perf_counter() - start
    return ema.eval(), history


def _jsonish(value):
    """Tuples and lists compare equal after a checkpoint round trip."""
    if isinstance(value, dict):
        return {k: _jsonish(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonish(v) for v in value]
    return value


def save_diffusion(model: UNet1D, path, **extra) -> Path:
    """UNet config + weights + extras (e.g. diffusion=asdict(DiffusionConfig), profile, seed)."""
    return save_model(path, model, "unet_config", **extra)


def load_diffusion(path, device=None, with_extra: bool = False):
    """Rebuild a UNet1D (eval mode) from save_diffusion's file or a training checkpoint (EMA weights)."""
    blob = torch.load(path, map_location="cpu", weights_only=False)
    cfg = blob["unet_config"]
    cfg = UNetConfig(**{**cfg, "channel_mult": tuple(cfg["channel_mult"]),
                        "attention_levels": tuple(cfg["attention_levels"])})
    model = UNet1D(blob["n_features"], cfg)
    model.load_state_dict(blob["state_dict"])
    model.to(get_device(device)).eval()
    return (model, blob.get("extra", {})) if with_extra else model


# --------------------------------------------------------------------------- sampling


def ddim_sample(model: UNet1D, diffusion: GaussianDiffusion | DiffusionConfig, y, steps: int = 20,
                eta: float = 0.0, guidance: Guidance | None = None, guidance_scale: float = 0.0,
                cfg_scale: float | None = None, batch_size: int = 256, seed: int = 0, device=None,
                progress: bool = True, n_features: int | None = None, seq_len: int = 24,
                clip_x0: float | None = 5.0, guidance_update: str = "pred_x0") -> torch.Tensor:
    """Draw len(y) stays (N, T, F) on CPU with DDIM over `steps` evenly spaced timesteps.

    y (N,) is the per-sample target label: fed to a class-conditional model and to `guidance`.
    `guidance(x_t, t, pred_x0, y)` returns a shift of pred_x0 (scaled by guidance_scale);
    `cfg_scale` w gives eps = (1 + w) eps(x, t, y) - w eps(x, t, null). Deterministic for a seed at eta=0.
    pred_x0 is clipped to +-clip_x0 before guidance: z-scores never leave +-5 (stays.Preprocessor), and
    with this schedule (alpha_bar_199 = 3e-5) small eps errors otherwise blow up pred_x0 at high t.
    """
    if isinstance(diffusion, DiffusionConfig):
        diffusion = GaussianDiffusion(diffusion)
    y = torch.as_tensor(np.asarray(y) if not torch.is_tensor(y) else y).detach().cpu().long().reshape(-1)
    conditional = getattr(model, "num_classes", None) is not None
    if cfg_scale is not None and not conditional:
        raise ValueError("cfg_scale needs a class-conditional model (UNetConfig.num_classes); "
                         "use guidance/guidance_scale for an unconditional one")
    if conditional and len(y) and (y.min() < 0 or y.max() >= model.num_classes):
        raise ValueError(f"y must be in 0..{model.num_classes - 1} for this class-conditional model")
    device = get_device(device) if device is not None else next(model.parameters()).device
    model.to(device)
    was_training = model.training
    model.eval()
    n_features = n_features or model.n_features
    times = diffusion.ddim_timesteps(steps)[::-1]            # decreasing
    generator = torch.Generator().manual_seed(seed)
    out = []
    bar = tqdm(total=len(y) * len(times), desc="ddim", disable=not progress, leave=False, unit="sample-step")
    for lo in range(0, len(y), batch_size):
        yb = y[lo:lo + batch_size].to(device)
        B = len(yb)
        x = torch.randn((B, seq_len, n_features), generator=generator).to(device)  # x_T, (B, T, F)
        for i, t in enumerate(times):
            t_prev = times[i + 1] if i + 1 < len(times) else -1
            tt = torch.full((B,), t, dtype=torch.long, device=device)
            with torch.no_grad():
                if conditional and cfg_scale is not None and cfg_scale != 0:
                    null = torch.full_like(yb, model.num_classes)
                    eps_c, eps_u = model(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([yb, null])).chunk(2)
                    eps = (1 + cfg_scale) * eps_c - cfg_scale * eps_u
                else:
                    eps = model(x, tt, yb if conditional else None)
            noise = torch.randn(x.shape, generator=generator).to(device) if eta > 0 else None
            x, _ = diffusion.step(eps, t, x, t_prev, eta=eta, noise=noise, guidance=guidance,
                                  guidance_scale=guidance_scale, y=yb, clip_x0=clip_x0,
                                  guidance_update=guidance_update)
            x = x.detach()
            bar.update(B)
        out.append(x.float().cpu())
    bar.close()
    model.train(was_training)
    if not out:
        return torch.zeros((0, seq_len, n_features))
    return torch.cat(out)                                    # (N, T, F)
