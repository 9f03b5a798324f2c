"""TimeVAE (Desai, Freeman, Wang, Beaver; arXiv 2111.08095), rebuilt in PyTorch from abudesai/timeVAE (MIT).

Read from `src/vae/timevae.py`, `src/vae/vae_base.py`, `src/data_utils.py` and
`src/config/hyperparameters.yaml` at commit 9914576, and held to them step for step (same weights, batches and
noise: losses, gradients, parameters after 24 Adam steps and samples equal within their own float32 noise, and
to 1e-15 in float64; experiments/authors_equivalence/timevae.py, results/authors_equivalence/timevae.md):
- Encoder: Conv1D(filters, kernel 3, stride 2, "same" padding, ReLU) for filters (50, 100, 200), flatten,
  Dense -> z_mean and Dense -> z_log_var (latent 8), z = mean + exp(log_var / 2) ε.
- Decoder of the default "base" model: a level term (Dense(F, ReLU), Dense(F), repeated over time) plus the
  residual branch (Dense, reshape, Conv1DTranspose (100, 50, F; kernel 3, stride 2, "same", ReLU), flatten,
  Dense(T·F)); the trend polynomial and custom seasonalities are built when `trend_poly` / `custom_seas`
  ask for them (the interpretable TimeVAE), off by default as in the authors' configuration.
- Loss, summed over the batch: 3.0 · (Σ (x − x̂)² + Σ_{stay, t} (mean_f x − mean_f x̂)²) + KL.
- Keras's Adam (lr 1e-3, β 0.9 / 0.999, ε 1e-7 added to √v, bias-correction powers of float32 β: `KerasAdam`),
  batch 16, at most 1,000 epochs, data min-max scaled per (time step, feature) over stays (their
  `MinMaxScaler` applies `np.min(data, 0)` to 3-D arrays).
- Sampling: z ~ N(0, I) through the decoder.

Departures, each with its reason:
- Early stopping (min_delta 1e-2, patience 50) and reduce-on-plateau (×0.5, patience 30) monitor the epoch's
  mean total loss, by Keras's rules (held to their callback objects on a given loss sequence). The released
  code asks its Keras callbacks to monitor "total_loss", a key its `train_step` does not return (it returns
  "loss"), so Keras warns and neither callback ever fires there: as released it trains 1,000 epochs at lr
  1e-3. `callbacks=False` runs it that way.
- The authors hold out 10 % of the data as a validation split that nothing reads; all stays train here.
- Inverse scaling is the shared `Scaler`, which multiplies by span + 1e-7 where theirs multiplies by span:
  a relative difference of 1e-7 / span (measured 1e-7 of the largest value, float32 rounding).
- Weights start as Keras's do (Glorot-uniform kernels, zero biases), not from Keras's random stream.
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
from tardiff.settings import SettingError, check, count, each, number, positive


@dataclass
class TimeVAEConfig:
    latent_dim: int = 8
    hidden_layer_sizes: tuple = (50, 100, 200)
    reconstruction_wt: float = 3.0
    batch_size: int = 16
    max_epochs: int = 1000
    lr: float = 1e-3
    use_residual_conn: bool = True
    trend_poly: int = 0               # > 0: the interpretable model's polynomial trend of this order
    custom_seas: tuple = ()           # ((num_seasons, len_per_season), ...): its custom seasonalities
    callbacks: bool = True            # False: as released, where the callbacks never fire (module docstring)
    early_stop_patience: int = 50
    early_stop_min_delta: float = 1e-2
    reduce_lr_patience: int = 30
    reduce_lr_factor: float = 0.5
    sample_batch_size: int = 4096

    RANGES: ClassVar[dict] = {
        "latent_dim": count(), "hidden_layer_sizes": each(count(), min_items=1), "reconstruction_wt": number(0),
        "batch_size": count(), "max_epochs": count(), "lr": positive(), "trend_poly": count(0, why="0: no trend"),
        "custom_seas": each(each(count(), length=2)), "early_stop_patience": count(),
        "early_stop_min_delta": number(0), "reduce_lr_patience": count(), "reduce_lr_factor": number(0, 1, True, True),
        "sample_batch_size": count(),
    }

    def __post_init__(self):
        check(self)
        if not (self.use_residual_conn or self.trend_poly or self.custom_seas):  # the decoder would output nothing
            raise SettingError(type(self), "use_residual_conn", False, "True unless trend_poly or custom_seas is set")

    @classmethod
    def tiny(cls) -> "TimeVAEConfig":
        """Seconds on a CPU: for the tests and the smoke profile."""
        return cls(hidden_layer_sizes=(8, 16), max_epochs=3, batch_size=32)


def _same_pad(length: int) -> tuple[int, int]:
    """Keras "same" padding for kernel 3, stride 2: the odd pad goes to the right."""
    total = max((math.ceil(length / 2) - 1) * 2 + 3 - length, 0)
    return total // 2, total - total // 2


def _conv_transpose_same(conv: nn.ConvTranspose1d, h: torch.Tensor) -> torch.Tensor:
    """Keras's Conv1DTranspose(kernel 3, stride 2, "same"): out[i] = b + Σ_{2j + k = i} w[k] h[j] for i < 2L.
    Torch's unpadded transposed convolution computes the same sums for i ≤ 2L: its last step is dropped."""
    return conv(h)[..., :2 * h.shape[-1]]                                   # (B, C_out, 2L)


class TimeVAEModel(nn.Module):
    def __init__(self, n_features: int, seq_len: int, config: TimeVAEConfig):
        super().__init__()
        self.n_features, self.seq_len, self.config = n_features, seq_len, config
        sizes = list(config.hidden_layer_sizes)
        self.lengths = [seq_len]
        for _ in sizes:
            self.lengths.append(math.ceil(self.lengths[-1] / 2))
        self.encoder_convs = nn.ModuleList(nn.Conv1d(c_in, c_out, 3, stride=2)
                                           for c_in, c_out in zip([n_features] + sizes[:-1], sizes))
        flat = self.lengths[-1] * sizes[-1]
        self.z_mean = nn.Linear(flat, config.latent_dim)
        self.z_log_var = nn.Linear(flat, config.latent_dim)
        self.level = nn.Sequential(nn.Linear(config.latent_dim, n_features), nn.ReLU(),
                                   nn.Linear(n_features, n_features))
        if config.trend_poly > 0:
            self.trend = nn.Sequential(nn.Linear(config.latent_dim, n_features * config.trend_poly), nn.ReLU(),
                                       nn.Linear(n_features * config.trend_poly, n_features * config.trend_poly))
        self.seasons = nn.ModuleList(nn.Linear(config.latent_dim, n_features * int(s)) for s, _ in config.custom_seas)
        if config.use_residual_conn:
            self.residual_in = nn.Linear(config.latent_dim, flat)
            outs = list(reversed(sizes[:-1])) + [n_features]
            self.decoder_convs = nn.ModuleList(nn.ConvTranspose1d(c_in, c_out, 3, stride=2)
                                               for c_in, c_out in zip(list(reversed(sizes)), outs))
            self.residual_out = nn.Linear(self.lengths[-1] * 2 ** len(sizes) * n_features, seq_len * n_features)
        for module in self.modules():  # Keras's initialisation
            if isinstance(module, (nn.Linear, nn.Conv1d, nn.ConvTranspose1d)):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = x.transpose(1, 2)                                               # (B, F, T)
        for conv, length in zip(self.encoder_convs, self.lengths):
            h = F.relu(conv(F.pad(h, _same_pad(length))))
        h = h.transpose(1, 2).flatten(1)                                    # Keras flattens (L, C) row-major
        return self.z_mean(h), self.z_log_var(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        B, T, Fd = len(z), self.seq_len, self.n_features
        out = self.level(z)[:, None, :].expand(B, T, Fd)                    # (B, T, F)
        if self.config.trend_poly > 0:
            P = self.config.trend_poly
            params = self.trend(z).reshape(B, Fd, P)
            grid = torch.arange(T, device=z.device, dtype=z.dtype) / T
            poly = torch.stack([grid ** (p + 1) for p in range(P)])         # (P, T)
            out = out + (params @ poly).transpose(1, 2)
        for dense, (n_seasons, per_season) in zip(self.seasons, self.config.custom_seas):
            params = dense(z).reshape(B, Fd, int(n_seasons))
            index = torch.arange(int(n_seasons), device=z.device).repeat_interleave(int(per_season))
            index = index.repeat(T // len(index) + 1)[:T]
            out = out + params[:, :, index].transpose(1, 2)
        if self.config.use_residual_conn:
            h = F.relu(self.residual_in(z)).reshape(B, self.lengths[-1], -1).transpose(1, 2)  # (B, C, L)
            for conv in self.decoder_convs:
                h = F.relu(_conv_transpose_same(conv, h))
            out = out + self.residual_out(h.transpose(1, 2).flatten(1)).reshape(B, T, Fd)
        return out

    def loss_terms(self, x: torch.Tensor, eps: torch.Tensor) -> dict:
        """The authors' `train_step` losses on a batch x (B, T, F) with the reparameterisation noise eps (B, latent)."""
        mean, log_var = self.encode(x)
        x_hat = self.decode(mean + torch.exp(0.5 * log_var) * eps)
        reconstruction = ((x - x_hat) ** 2).sum() + ((x.mean(2) - x_hat.mean(2)) ** 2).sum()
        kl = (-0.5 * (1 + log_var - mean ** 2 - log_var.exp())).sum()
        return {"reconstruction": reconstruction, "kl": kl,
                "total": self.config.reconstruction_wt * reconstruction + kl}

    def loss(self, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return self.loss_terms(x, eps)["total"]


class KerasAdam(torch.optim.Adam):
    """Keras 2's Adam `update_step`: m += (g − m)(1 − β1); v += (g² − v)(1 − β2); θ −= m·α / (√v + ε) with
    α = lr·√(1 − β2^t) / (1 − β1^t), computed in the parameters' dtype from β cast to float32 first (`tf.cast`
    of a Python float makes a float32 tensor: 1 − float32(0.999) is 0.001 · (1 − 1.3e-5), so α is 6.7e-6 below
    the float64 value at t = 1).

    Run by torch's fused Adam, whose update is lr/(1 − β1^t) · m / (√v / √(1 − β2^t) + ε): each step sets its
    ε to ε_Keras / √(1 − β2^t) and its lr to α (1 − β1^t) / √(1 − β2^t), then puts Keras's lr back (the
    callbacks change it). The step count lives in the param group, so it is checkpointed.
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple = (0.9, 0.999), eps: float = 1e-7):
        super().__init__(params, lr=lr, betas=betas, eps=eps, fused=True)
        for group in self.param_groups:
            group["keras_eps"], group["keras_step"] = eps, 0

    def load_state_dict(self, state_dict: dict) -> None:
        if any("keras_step" not in group for group in state_dict["param_groups"]):
            raise ValueError("this TimeVAE checkpoint was written with torch's Adam, before TimeVAE trained with "
                             "Keras's (KerasAdam); delete it to train again")
        super().load_state_dict(state_dict)

    @torch.no_grad()
    def step(self, closure=None):
        keras_lr = [group["lr"] for group in self.param_groups]
        for group in self.param_groups:
            group["keras_step"] += 1
            (b1, b2), t = group["betas"], group["keras_step"]
            dtype = np.float64 if group["params"][0].dtype == torch.float64 else np.float32
            one, power = dtype(1), dtype(t)
            alpha = dtype(group["lr"]) * np.sqrt(one - dtype(np.float32(b2)) ** power) / (
                one - dtype(np.float32(b1)) ** power)
            group["lr"] = float(alpha) * (1 - b1 ** t) / math.sqrt(1 - b2 ** t)
            group["eps"] = group["keras_eps"] / math.sqrt(1 - b2 ** t)
        try:
            return super().step(closure)
        finally:
            for group, lr in zip(self.param_groups, keras_lr):
                group["lr"] = lr


class TimeVAE(Generator, name="timevae", config=TimeVAEConfig, native_labels=False, scaling="minmax01_tf",
              budget_fields=("max_epochs",), budget_unit="epochs"):
    def build(self, n_features, seq_len, n_classes):
        if not self.config.use_residual_conn and not self.config.trend_poly and not self.config.custom_seas:
            raise ValueError("TimeVAE needs a decoder term: use_residual_conn, trend_poly or custom_seas")
        return TimeVAEModel(n_features, seq_len, self.config)

    def optimizer(self, model: TimeVAEModel) -> torch.optim.Optimizer:
        """Keras's Adam() as the authors compile it: lr 1e-3, β 0.9 / 0.999, ε 1e-7 added to √v (not √v̂)."""
        return KerasAdam(model.parameters(), lr=self.config.lr, betas=(0.9, 0.999), eps=1e-7)

    @staticmethod
    def train_step(model: TimeVAEModel, optimizer, xb: torch.Tensor, eps: torch.Tensor) -> dict:
        """The authors' `train_step`: one Adam step on the summed loss; returns its terms as floats."""
        terms = model.loss_terms(xb, eps)
        optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        optimizer.step()
        return {name: value.item() for name, value in terms.items()}

    def train_epoch(self, model: TimeVAEModel, optimizer, batches) -> tuple[float, list[dict]]:
        """One epoch over (x, eps) mini-batches in the order given: Keras's epoch "loss" (the mean of the steps'
        totals, what the callbacks monitor) and each step's loss terms."""
        steps = [self.train_step(model, optimizer, xb, eps) for xb, eps in batches]
        return sum(step["total"] for step in steps) / len(steps), steps

    def callback_state(self) -> dict:
        """What Keras's EarlyStopping and ReduceLROnPlateau hold at `on_train_begin`."""
        return {"lr": self.config.lr, "best_stop": math.inf, "wait_stop": 0, "best_lr": math.inf, "wait_lr": 0,
                "stopped_early": False}

    def train(self, model, X, y, seed, device, checkpoint: Checkpoint, progress):
        c = self.config
        optimizer = self.optimizer(model)
        generator = torch.Generator().manual_seed(seed)
        state = {"epoch": 0, "steps": 0, "loss": [], **self.callback_state()}
        state.update(checkpoint.restore(model=model, optimizer=optimizer, generator=generator))
        X_all = torch.as_tensor(X).to(device)
        bar = progress_bar(c.max_epochs, state["epoch"], "TimeVAE epochs", progress)
        model.train()
        while state["epoch"] < c.max_epochs and not state["stopped_early"]:
            order = torch.randperm(len(X), generator=generator).to(device)
            batches = ((X_all[order[start:start + c.batch_size]],
                        torch.randn((len(order[start:start + c.batch_size]), c.latent_dim),
                                    generator=generator).to(device))
                       for start in range(0, len(X), c.batch_size))
            epoch_loss, steps = self.train_epoch(model, optimizer, batches)
            state["steps"] += len(steps)
            state["loss"].append(epoch_loss)
            state["epoch"] += 1
            if c.callbacks:
                self._callbacks(state, epoch_loss, optimizer)
            bar.update(1)
            bar.set_postfix(loss=f"{epoch_loss:.2f}")
            checkpoint.step(state, state["epoch"], final=state["epoch"] == c.max_epochs or state["stopped_early"])
        bar.close()
        return {"steps": state["steps"], "epochs": state["epoch"], "loss": state["loss"],
                "stopped_early": state["stopped_early"], "final_lr": state["lr"]}

    def _callbacks(self, state: dict, loss: float, optimizer) -> None:
        """Keras's EarlyStopping and ReduceLROnPlateau (mode min) on the epoch loss, in their order."""
        c = self.config
        state["wait_stop"] += 1
        if loss + c.early_stop_min_delta < state["best_stop"]:              # Keras's test, to the last bit
            state["best_stop"], state["wait_stop"] = loss, 0
        elif state["wait_stop"] >= c.early_stop_patience and state["epoch"] > 1:
            state["stopped_early"] = True
        if loss < state["best_lr"] - 1e-4:                                   # Keras's default min_delta
            state["best_lr"], state["wait_lr"] = loss, 0
        else:
            state["wait_lr"] += 1
            if state["wait_lr"] >= c.reduce_lr_patience:
                state["lr"] *= c.reduce_lr_factor
                for group in optimizer.param_groups:
                    group["lr"] = state["lr"]
                state["wait_lr"] = 0

    def generate(self, model, n, y, seed, device, progress):
        generator = torch.Generator().manual_seed(seed)
        z = torch.randn((n, self.config.latent_dim), generator=generator)
        return self.decode_prior(model, z, device)

    def decode_prior(self, model: TimeVAEModel, z: torch.Tensor, device) -> "np.ndarray":
        """The authors' `get_prior_samples` after the draw: z (n, latent) through the decoder, in batches."""
        batch = self.config.sample_batch_size
        with torch.no_grad():
            return torch.cat([model.decode(z[i:i + batch].to(device)).cpu() for i in range(0, len(z), batch)]).numpy()
