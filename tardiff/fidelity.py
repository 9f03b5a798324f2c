"""Fidelity and privacy of synthetic stays: how far they are from real ones, and how close to the training set.

Everything takes arrays in model space: X (N, T, F) float32. A "method" is a name mapped to a synthetic set
{method: (X_syn, y_syn)}.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import ClassVar

import numpy as np
import pandas as pd
import torch
from scipy.stats import wasserstein_distance
from torch import nn

from tardiff import grouped
from tardiff.config import get_profile
from tardiff.metrics import auroc
from tardiff.settings import check, count, positive
from tardiff.stays import CHANNELS
from tardiff.utils import get_device

SyntheticSets = dict  # {method: (X_syn (N, T, F), y_syn (N,))}


# --------------------------------------------------------------------------- fidelity

def _default_profile(setting: str):
    """A bare FidelityConfig's `setting`: the `default` profile's, so the sizes have one source (tardiff.config)."""
    return field(default_factory=lambda: getattr(get_profile("default"), setting))


@dataclass
class FidelityConfig:
    """Post-hoc networks for the discriminative and predictive scores (TimeGAN-style, small on purpose): a
    profile's `fidelity_*` settings (`from_profile`); built bare, the `default` profile's."""

    hidden: int = _default_profile("fidelity_hidden")
    epochs: int = _default_profile("fidelity_epochs")
    batch_size: int = _default_profile("fidelity_batch_size")
    lr: float = _default_profile("fidelity_lr")
    max_lag: int = _default_profile("fidelity_max_lag")  # autocorrelation lags compared
    seed: int = 0
    device: str | None = None

    RANGES: ClassVar[dict] = {"hidden": count(), "epochs": count(), "batch_size": count(), "lr": positive(),
                              "max_lag": count(), "seed": count(0)}

    def __post_init__(self):
        check(self)

    @classmethod
    def from_profile(cls, profile, **overrides) -> "FidelityConfig":
        """From a `tardiff.config.Profile` (fidelity_hidden, _epochs, _batch_size, _lr, _max_lag)."""
        return replace(cls(hidden=profile.fidelity_hidden, epochs=profile.fidelity_epochs,
                           batch_size=profile.fidelity_batch_size, lr=profile.fidelity_lr,
                           max_lag=profile.fidelity_max_lag), **overrides)


class _PostHocGRU(nn.Module):
    def __init__(self, n_in: int, hidden: int, n_out: int, per_step: bool):
        super().__init__()
        self.rnn = nn.GRU(n_in, hidden, batch_first=True)
        self.out = nn.Linear(hidden, n_out)
        self.per_step = per_step

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.rnn(x)  # (B, T, H)
        return self.out(h) if self.per_step else self.out(h[:, -1]).squeeze(-1)


def _fit(model: nn.Module, X: np.ndarray, target: np.ndarray, loss_fn, config: FidelityConfig, device) -> nn.Module:
    rng = np.random.default_rng(config.seed)
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    X_t = torch.as_tensor(X, dtype=torch.float32, device=device)
    y_t = torch.as_tensor(target, dtype=torch.float32, device=device)
    for _ in range(config.epochs):
        order = torch.as_tensor(rng.permutation(len(X)), device=device)
        for start in range(0, len(X), config.batch_size):
            batch = order[start:start + config.batch_size]
            loss = loss_fn(model(X_t[batch]), y_t[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


@torch.no_grad()
def _apply(model: nn.Module, X: np.ndarray, device, batch_size: int = 2048) -> np.ndarray:
    X_t = torch.as_tensor(X, dtype=torch.float32)
    return torch.cat([model(X_t[i:i + batch_size].to(device)).cpu() for i in range(0, len(X), batch_size)]).numpy()


def _discriminator_data(X_real: np.ndarray, X_syn: np.ndarray, seed: int):
    """Equal numbers of real and synthetic stays (seeded draw), each shuffled set's first half to fit the
    discriminator (real = 1) and its second half held out: (X_fit, y_fit, X_held, y_held)."""
    rng = np.random.default_rng(seed)
    n = min(len(X_real), len(X_syn))
    if n < 4:
        raise ValueError(f"need at least 4 real and 4 synthetic stays, got {len(X_real)} and {len(X_syn)}")
    real = np.asarray(X_real, np.float32)[rng.choice(len(X_real), n, replace=False)]
    syn = np.asarray(X_syn, np.float32)[rng.choice(len(X_syn), n, replace=False)]
    half = n // 2
    return (np.concatenate([real[:half], syn[:half]]), np.r_[np.ones(half), np.zeros(half)],
            np.concatenate([real[half:], syn[half:]]), np.r_[np.ones(n - half), np.zeros(n - half)])


def _accuracy_score(logits: np.ndarray, y_held: np.ndarray) -> float:
    return abs(float(((np.asarray(logits) > 0) == (y_held == 1)).mean()) - 0.5)


def discriminative_score(X_real: np.ndarray, X_syn: np.ndarray, config: FidelityConfig | None = None) -> float:
    """|accuracy - 0.5| of a small GRU told real from synthetic, scored on a held-out half (0 = indistinguishable).

    Pass real stays the generator never saw (validation/test): a synthetic copy of a training
    stay would otherwise sit on both sides of the discriminator's split with opposite labels,
    and its memorisation would push accuracy below 0.5, i.e. the score away from 0.
    """
    config = config or FidelityConfig()
    device = get_device(config.device)
    X_fit, y_fit, X_held, y_held = _discriminator_data(X_real, X_syn, config.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = _PostHocGRU(X_fit.shape[-1], config.hidden, 1, per_step=False)
        _fit(model, X_fit, y_fit, nn.functional.binary_cross_entropy_with_logits, config, device)
    return _accuracy_score(_apply(model, X_held, device), y_held)


def discriminative_scores_many(jobs: list, config: FidelityConfig | None = None) -> list[float]:
    """`discriminative_score(X_real, X_syn, replace(config, seed=seed))` for every (X_real, X_syn, seed) in
    `jobs`, the discriminators trained together as batched groups (`tardiff.grouped`): the same
    initialisations, splits and batch orders, equal to one by one up to float rounding."""
    config = config or FidelityConfig()
    data = [_discriminator_data(X_real, X_syn, seed) for X_real, X_syn, seed in jobs]
    orders = [lambda rng=np.random.default_rng(seed), n=len(d[1]): rng.permutation(n)  # _fit's batch orders
              for (_, _, seed), d in zip(jobs, data)]
    logits = grouped.fixed_epoch_logits([(d[0], d[1]) for d in data], [d[2] for d in data], hidden=config.hidden,
                                        epochs=config.epochs, batch_size=config.batch_size, lr=config.lr,
                                        seeds=[seed for _, _, seed in jobs], orders=orders, device=config.device)
    return [_accuracy_score(z.numpy(), d[3]) for z, d in zip(logits, data)]


def discriminative_scores(X_real: np.ndarray, X_syn: np.ndarray, config: FidelityConfig | None = None,
                          n_seeds: int = 3) -> tuple[float, float]:
    """Mean and sd over `n_seeds` discriminators (each its own init, split and batch order)."""
    config = config or FidelityConfig()
    scores = discriminative_scores_many([(X_real, X_syn, config.seed + i) for i in range(n_seeds)], config)
    return _mean_sd(scores)


def _mean_sd(scores) -> tuple[float, float]:
    return float(np.mean(scores)), float(np.std(scores, ddof=1) if len(scores) > 1 else 0.0)


def predictive_score(X_syn: np.ndarray, X_real_test: np.ndarray, config: FidelityConfig | None = None) -> float:
    """MAE on real test of a small GRU trained on synthetic to predict step t+1 (all channels) from steps <= t."""
    config = config or FidelityConfig()
    device = get_device(config.device)
    X_syn = np.asarray(X_syn, np.float32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = _PostHocGRU(X_syn.shape[-1], config.hidden, X_syn.shape[-1], per_step=True)
        _fit(model, X_syn[:, :-1], X_syn[:, 1:], nn.functional.l1_loss, config, device)
    X_real_test = np.asarray(X_real_test, np.float32)
    pred = _apply(model, X_real_test[:, :-1], device)  # (N, T-1, F)
    return float(np.abs(pred - X_real_test[:, 1:]).mean())


def predictive_scores_many(sets: list, X_real_test: np.ndarray, config: FidelityConfig | None = None) -> list[float]:
    """`predictive_score(X_syn, X_real_test, config)` for every X_syn in `sets`, the regressors trained together
    as batched groups (`tardiff.grouped`): the same initialisations and batch orders, equal to one by one up
    to float rounding."""
    config = config or FidelityConfig()
    sets = [np.asarray(X_syn, np.float32) for X_syn in sets]
    X_real_test = np.asarray(X_real_test, np.float32)
    orders = [lambda rng=np.random.default_rng(config.seed), n=len(X_syn): rng.permutation(n)  # _fit's orders
              for X_syn in sets]
    predictions = grouped.fixed_epoch_next_step(sets, X_real_test, hidden=config.hidden, epochs=config.epochs,
                                                batch_size=config.batch_size, lr=config.lr,
                                                seeds=[config.seed] * len(sets), orders=orders, device=config.device)
    return [float(np.abs(pred.numpy() - X_real_test[:, 1:]).mean()) for pred in predictions]


def marginal_distance(X_real: np.ndarray, X_syn: np.ndarray) -> np.ndarray:
    """(F,) 1-D Wasserstein distance between real and synthetic values of each channel (all hours pooled)."""
    f = X_real.shape[-1]
    real, syn = np.asarray(X_real).reshape(-1, f), np.asarray(X_syn).reshape(-1, f)
    return np.array([wasserstein_distance(real[:, j], syn[:, j]) for j in range(f)])


def autocorrelation(X: np.ndarray, max_lag: int = 5) -> np.ndarray:
    """(max_lag, F) lag-1..max_lag autocorrelation per channel, pooled over stays (dataset mean and variance)."""
    X = np.asarray(X, dtype=np.float64)
    if not 1 <= max_lag < X.shape[1]:
        raise ValueError(f"max_lag must be in [1, T-1] = [1, {X.shape[1] - 1}], got {max_lag}")
    centred = X - X.mean(axis=(0, 1))
    var = (centred ** 2).mean(axis=(0, 1))
    var = np.where(var > 1e-12, var, 1.0)
    return np.stack([(centred[:, k:] * centred[:, :-k]).mean(axis=(0, 1)) / var for k in range(1, max_lag + 1)])


def autocorrelation_distance(X_real: np.ndarray, X_syn: np.ndarray, max_lag: int = 5) -> float:
    """Mean absolute difference of per-channel lag-1..max_lag autocorrelations."""
    return float(np.abs(autocorrelation(X_real, max_lag) - autocorrelation(X_syn, max_lag)).mean())


def fidelity_table(synthetic: SyntheticSets, X_real_train: np.ndarray, X_real_test: np.ndarray,
                   config: FidelityConfig | None = None, channels=None, n_seeds: int = 3) -> pd.DataFrame:
    """One row per method: discriminative (vs real test, mean and sd over `n_seeds` discriminators, all
    stays), predictive (MAE on real test), marginal distance (mean and per channel, vs real train) and
    autocorrelation distance (vs real train). One protocol for every table."""
    config = config or FidelityConfig()
    n_channels = np.shape(X_real_train)[-1]
    if channels is None:
        channels = CHANNELS if n_channels == len(CHANNELS) else [f"f{j}" for j in range(n_channels)]
    # every set's discriminators (sets x seeds) and predictive regressors train together, as batched groups
    seeds = [config.seed + i for i in range(n_seeds)]
    scores = discriminative_scores_many([(X_real_test, X_syn, seed) for X_syn, _ in synthetic.values()
                                         for seed in seeds], config)
    predictive = predictive_scores_many([X_syn for X_syn, _ in synthetic.values()], X_real_test, config)
    rows = []
    for k, (method, (X_syn, _)) in enumerate(synthetic.items()):
        marginal = marginal_distance(X_real_train, X_syn)
        disc_mean, disc_sd = _mean_sd(scores[k * n_seeds:(k + 1) * n_seeds])
        rows.append({"method": str(method),
                     "discriminative_score": disc_mean, "discriminative_sd": disc_sd,
                     "predictive_score": predictive[k],
                     "marginal_distance": float(marginal.mean()),
                     "autocorrelation_distance": autocorrelation_distance(X_real_train, X_syn, config.max_lag),
                     **{f"marginal_{c}": float(d) for c, d in zip(channels, marginal)}})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- privacy

def nearest_distance(A: np.ndarray, B: np.ndarray, chunk: int = 1024, device=None) -> np.ndarray:
    """(len(A),) Euclidean distance from each stay of A to its closest stay in B (flattened T*F), by chunks."""
    device = get_device(device)
    a = torch.as_tensor(np.asarray(A).reshape(len(A), -1), dtype=torch.float64)
    b = torch.as_tensor(np.asarray(B).reshape(len(B), -1), dtype=torch.float64, device=device)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"stays differ in size: {tuple(A.shape[1:])} vs {tuple(B.shape[1:])}")
    out = []
    for i in range(0, len(a), chunk):
        rows = a[i:i + chunk].to(device)
        nearest = torch.cdist(rows, b).argmin(dim=1)  # fast matmul form finds the neighbour...
        out.append((rows - b[nearest]).norm(dim=1).cpu())  # ...the direct form measures it: copies read 0
    return torch.cat(out).numpy()


def dcr(X_syn: np.ndarray, X_train: np.ndarray, X_holdout: np.ndarray, device=None) -> dict[str, float]:
    """Distance to closest training record of synthetic vs held-out real stays; ratio < 1 hints at copying."""
    syn = nearest_distance(X_syn, X_train, device=device)
    hold = nearest_distance(X_holdout, X_train, device=device)
    median_hold = float(np.median(hold))
    return {"dcr_syn_median": float(np.median(syn)), "dcr_syn_p5": float(np.percentile(syn, 5)),
            "dcr_holdout_median": median_hold, "dcr_holdout_p5": float(np.percentile(hold, 5)),
            "dcr_ratio": float(np.median(syn)) / median_hold if median_hold > 0 else np.nan}


def membership_inference_auc(X_syn: np.ndarray, X_members: np.ndarray, X_nonmembers: np.ndarray,
                             seed: int = 0, device=None) -> float:
    """AUC of telling training stays from held-out ones by -distance to the closest synthetic stay (0.5 = no leak).

    The larger group is subsampled (seeded) to the size of the smaller one, so the AUC is balanced.
    """
    rng = np.random.default_rng(seed)
    n = min(len(X_members), len(X_nonmembers))
    members = np.asarray(X_members)[rng.choice(len(X_members), n, replace=False)]
    nonmembers = np.asarray(X_nonmembers)[rng.choice(len(X_nonmembers), n, replace=False)]
    score = -nearest_distance(np.concatenate([members, nonmembers]), X_syn, device=device)
    return auroc(np.r_[np.ones(n), np.zeros(n)], score)


def privacy_table(synthetic: SyntheticSets, X_train: np.ndarray, X_holdout: np.ndarray, seed: int = 0,
                  device=None) -> pd.DataFrame:
    """One row per method: DCR (median, 5th percentile, ratio to held-out real) and membership-inference AUC."""
    rows = []
    for method, (X_syn, _) in synthetic.items():
        rows.append({"method": str(method), **dcr(X_syn, X_train, X_holdout, device=device),
                     "mia_auc": membership_inference_auc(X_syn, X_train, X_holdout, seed=seed, device=device)})
    return pd.DataFrame(rows)
