"""The field's fidelity metrics, computed as the TimeGAN and Diffusion-TS evaluation code computes them.

Read from Y-debug-sys/Diffusion-TS (`Utils/discriminative_metric.py`, `predictive_metric.py`,
`context_fid.py`, `cross_correlation.py`, `metric_utils.py`, `Experiments/metric_*.ipynb`), which carry
jsyoon0823/TimeGAN's `metrics/` over to TF2. Data: (N, T, F) in [0, 1] (the benchmarks' min-max scale).

- Discriminative score: a post-hoc GRU (TF1 `GRUCell`, hidden int(F / 2)) whose last state feeds one logit;
  real and synthetic each split 80/20 at random; 2,000 Adam steps on 128 real + 128 synthetic stays drawn
  without replacement; score |accuracy − 0.5| on the held-out 20 % of both.
- Predictive score: the same GRU with a per-step sigmoid output, trained on synthetic only for 5,000 Adam steps
  (batch 128) to predict feature F at t + 1 from features 1..F−1 at t; score: mean absolute error on every real
  series.
- Context-FID: a TS2Vec encoder (`tardiff.ts2vec`) trained on the real series only; the Fréchet distance between
  the two sets' full-series embeddings.
- Correlational score: lag-0 cross-correlations of the standardised features (lower triangle, diagonal
  included) averaged over series, real against synthetic, Σ|difference| / 10, each repeat on a random fifth
  (with replacement) of both sets.

Every score is repeated (5 by default, Diffusion-TS's count) and summarised as mean ± the 95 % t-interval's
half-width, as their `display_scores` does. The repeats of a GRU score train together, stacked along a
leading axis (each its own initialisation, split and batches), which is the same arithmetic as training them
one at a time. Departures: the GRU's weights start as TF1 initialises them (Glorot-uniform kernels, gate bias
1, candidate bias 0), with draws from seeded generators rather than TF's global state; context-FID trains one
encoder per repeat and scores every synthetic set of a benchmark with it (Diffusion-TS retrains the encoder
for each set and repeat; the encoder never sees synthetic data, so this only removes a source of noise
between sets).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.stats
import torch
from torch import nn

from tardiff.ts2vec import TS2Vec
from tardiff.utils import get_device


@dataclass(frozen=True)
class Summary:
    """Scores of the repeats, their mean and the half-width of the 95 % t-interval."""

    scores: tuple
    mean: float
    half_width: float

    @classmethod
    def of(cls, scores) -> "Summary":
        scores = np.asarray(scores, np.float64)
        n = len(scores)
        half = float(scipy.stats.sem(scores) * scipy.stats.t.ppf(0.975, n - 1)) if n > 1 else float("nan")
        return cls(tuple(float(s) for s in scores), float(scores.mean()), half)

    def __str__(self) -> str:
        return f"{self.mean:.3f} ± {self.half_width:.3f}"


# --------------------------------------------------------------------------- the post-hoc GRUs

def _glorot(shape, rng: np.random.Generator) -> np.ndarray:
    """TF's glorot_uniform on the last two axes (rows = fan-in, columns = fan-out)."""
    limit = math.sqrt(6.0 / (shape[-2] + shape[-1]))
    return rng.uniform(-limit, limit, size=shape)


class StackedTFGRU(nn.Module):
    """R independent one-layer TF1 `GRUCell` networks with a dense head, run side by side: (R, B, T, F_in).

    TF1's cell: [r, u] = σ([x, h] W_g + b_g) with b_g initialised to 1; c = tanh([x, r ⊙ h] W_c + b_c);
    h' = u ⊙ h + (1 − u) ⊙ c.
    """

    def __init__(self, rngs: list[np.random.Generator], n_in: int, hidden: int, n_out: int):
        super().__init__()
        if hidden < 1:
            raise ValueError(f"the post-hoc GRU's hidden size int(features / 2) is {hidden}; need at least 2 features")
        self.hidden = hidden

        def stack(make):
            return nn.Parameter(torch.as_tensor(np.stack([make(rng) for rng in rngs]), dtype=torch.float32))

        self.gate_kernel = stack(lambda r: _glorot((n_in + hidden, 2 * hidden), r))
        self.candidate_kernel = stack(lambda r: _glorot((n_in + hidden, hidden), r))
        self.dense = stack(lambda r: _glorot((hidden, n_out), r))
        self.gate_bias = nn.Parameter(torch.ones(len(rngs), 1, 2 * hidden))
        self.candidate_bias = nn.Parameter(torch.zeros(len(rngs), 1, hidden))
        self.dense_bias = nn.Parameter(torch.zeros(len(rngs), 1, n_out))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (R, B, T, F_in) -> (per-step outputs (R, B, T, n_out), last-state output (R, B, n_out))."""
        R, B, T, _ = x.shape
        n_in = x.shape[-1]
        h = x.new_zeros(R, B, self.hidden)
        # the input's share of both products for every step at once: (R, B·T, ·)
        x_flat = x.reshape(R, B * T, n_in)
        gate_x = torch.baddbmm(self.gate_bias, x_flat, self.gate_kernel[:, :n_in]).reshape(R, B, T, -1)
        cand_x = torch.baddbmm(self.candidate_bias, x_flat, self.candidate_kernel[:, :n_in]).reshape(R, B, T, -1)
        gate_h, cand_h = self.gate_kernel[:, n_in:], self.candidate_kernel[:, n_in:]
        states = []
        for t in range(T):
            r, u = torch.sigmoid(gate_x[:, :, t] + h @ gate_h).chunk(2, dim=-1)
            c = torch.tanh(cand_x[:, :, t] + (r * h) @ cand_h)
            h = u * h + (1 - u) * c
            states.append(h)
        H = torch.stack(states, dim=2)                                            # (R, B, T, hidden)
        per_step = (torch.bmm(H.reshape(R, B * T, -1), self.dense) + self.dense_bias).reshape(R, B, T, -1)
        return per_step, per_step[:, :, -1]


def _adam(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8)  # TF1's defaults


def _batch(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """TimeGAN's batch_generator: the first `size` rows of a fresh permutation."""
    return rng.permutation(n)[:size]


def discriminative_scores(real: np.ndarray, synthetic, repeats: int = 5, seed: int = 0, iterations: int = 2000,
                          batch_size: int = 128, device=None):
    """|held-out accuracy − 0.5| of post-hoc GRUs told real from synthetic (0: indistinguishable): (repeats,)
    for one synthetic set, or {name: (repeats,)} for a dict of sets (all trained together, each set's repeat r
    with the same real split and draws as alone)."""
    sets, single = _sets(synthetic)
    scores = _discriminative(real, list(sets.values()), repeat_rngs(seed, repeats), iterations, batch_size, device)
    return _unpack(scores, sets, single)


def predictive_scores(real: np.ndarray, synthetic, repeats: int = 5, seed: int = 0, iterations: int = 5000,
                      batch_size: int = 128, device=None):
    """MAE on the real series of post-hoc GRUs trained on a synthetic set to predict the last feature one step
    ahead from the others (train on synthetic, test on real; `synthetic=real` is the real-data check):
    (repeats,) for one set, or {name: (repeats,)} for a dict of sets (trained together)."""
    sets, single = _sets(synthetic)
    scores = _predictive(real, list(sets.values()), repeat_rngs(seed, repeats), iterations, batch_size, device)
    return _unpack(scores, sets, single)


def repeat_rngs(seed: int, repeats: int) -> list[np.random.Generator]:
    """Repeat r's own generator (its split, initialisation and batches), the same whatever else runs beside it."""
    return [np.random.default_rng([seed, r]) for r in range(repeats)]


def _sets(synthetic) -> tuple[dict, bool]:
    if isinstance(synthetic, dict):
        if not synthetic:
            raise ValueError("no synthetic sets given")
        return {name: _as_series(X, str(name)) for name, X in synthetic.items()}, False
    return {"synthetic": _as_series(synthetic, "synthetic")}, True


def _unpack(scores: np.ndarray, sets: dict, single: bool):
    """(sets × repeats,) member scores -> (repeats,) or {name: (repeats,)}."""
    per_set = scores.reshape(len(sets), -1)
    return per_set[0] if single else dict(zip(sets, per_set))


def _members(real, sets: list, rngs: list, device):
    """(real checked, the device, and the stack's members set-major: each member's set index and a fresh copy
    of its repeat's generator) for every set and repeat."""
    real = _as_series(real, "real")
    for X in sets:
        _same_shape(real, X)
    index = [(k, r) for k in range(len(sets)) for r in range(len(rngs))]
    return real, get_device(device), [k for k, _ in index], [copy.deepcopy(rngs[r]) for _, r in index]


def _discriminative(real, sets: list, rngs, iterations, batch_size, device) -> np.ndarray:
    real, device, owner, rngs = _members(real, sets, rngs, device)
    splits = []
    for k, rng in zip(owner, rngs):  # train_test_divide: 80/20 of each set, each its own permutation
        ir, isyn = rng.permutation(len(real)), rng.permutation(len(sets[k]))
        nr, ns = int(len(real) * 0.8), int(len(sets[k]) * 0.8)
        splits.append((ir[:nr], ir[nr:], isyn[:ns], isyn[ns:]))
    model = StackedTFGRU(rngs, real.shape[2], real.shape[2] // 2, 1).to(device)
    optimizer = _adam(model)
    real_t = torch.as_tensor(real, device=device)
    syn_t = [torch.as_tensor(X, device=device) for X in sets]
    bce = nn.functional.binary_cross_entropy_with_logits
    for _ in range(iterations):
        xr = real_t[torch.as_tensor(np.stack([s[0][_batch(rng, len(s[0]), batch_size)]
                                              for rng, s in zip(rngs, splits)]), device=device)]  # (R, B, T, F)
        xs = torch.stack([syn_t[k][torch.as_tensor(s[2][_batch(rng, len(s[2]), batch_size)], device=device)]
                          for k, rng, s in zip(owner, rngs, splits)])
        logit_real = model(xr)[1].squeeze(-1)                                # (R, B)
        logit_syn = model(xs)[1].squeeze(-1)
        # each member's loss is its mean over real plus its mean over synthetic; summing members keeps
        # every member's gradient its own (no parameter is shared)
        loss = (bce(logit_real, torch.ones_like(logit_real), reduction="none").mean(1)
                + bce(logit_syn, torch.zeros_like(logit_syn), reduction="none").mean(1)).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    scores = []
    with torch.no_grad():
        for r, (k, s) in enumerate(zip(owner, splits)):
            sub = _member(model, r)
            p_real = sub(real_t[torch.as_tensor(s[1], device=device)][None])[1].reshape(-1) > 0
            p_syn = sub(syn_t[k][torch.as_tensor(s[3], device=device)][None])[1].reshape(-1) > 0
            accuracy = (p_real.sum() + (~p_syn).sum()).item() / (len(p_real) + len(p_syn))
            scores.append(abs(accuracy - 0.5))
    return np.asarray(scores)


def _predictive(real, sets: list, rngs, iterations, batch_size, device) -> np.ndarray:
    real, device, owner, rngs = _members(real, sets, rngs, device)
    dim, members = real.shape[2], len(rngs)
    model = StackedTFGRU(rngs, dim - 1, dim // 2, 1).to(device)
    optimizer = _adam(model)
    syn_t = [torch.as_tensor(X, device=device) for X in sets]
    for _ in range(iterations):
        batch = torch.stack([syn_t[k][torch.as_tensor(_batch(rng, len(sets[k]), batch_size), device=device)]
                             for k, rng in zip(owner, rngs)])                # (R, B, T, F)
        prediction = torch.sigmoid(model(batch[:, :, :-1, :dim - 1])[0])      # (R, B, T-1, 1)
        loss = (prediction - batch[:, :, 1:, dim - 1:]).abs().mean(dim=(1, 2, 3)).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    real_t = torch.as_tensor(real, device=device)
    with torch.no_grad():
        errors = []
        for start in range(0, len(real), 2048):
            chunk = real_t[start:start + 2048]
            prediction = torch.sigmoid(model(chunk[None, :, :-1, :dim - 1].expand(members, -1, -1, -1))[0])
            errors.append((prediction - chunk[None, :, 1:, dim - 1:]).abs().sum(dim=(1, 2, 3)))
    return (torch.stack(errors).sum(0) / (len(real) * (real.shape[1] - 1))).cpu().numpy()


def _member(model: StackedTFGRU, r: int) -> StackedTFGRU:
    """Member r of a stack, as a stack of one (shares the tensors)."""
    sub = StackedTFGRU.__new__(StackedTFGRU)
    nn.Module.__init__(sub)
    sub.hidden = model.hidden
    for name, value in model.named_parameters():
        setattr(sub, name, nn.Parameter(value[r:r + 1], requires_grad=False))
    return sub


# --------------------------------------------------------------------------- context-FID

def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||μa − μb||² + tr(Σa + Σb − 2 (Σa Σb)^½) of two embedding sets (rows), through symmetric
    eigenproblems: tr((Σa Σb)^½) is the sum of the square roots of the eigenvalues of Σa^½ Σb Σa^½ (similar
    to Σa Σb)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(cov_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    trace_cross = np.sqrt(np.clip(cross, 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_cross)


def context_fids(real: np.ndarray, synthetic: dict[str, np.ndarray], repeats: int = 5, seed: int = 0,
                 device=None, progress: bool = False, fit_on: np.ndarray | None = None,
                 n_iters: int | None = None) -> dict[str, np.ndarray]:
    """{name: (repeats,) context-FID}: per repeat one TS2Vec trained on real series only (`fit_on`, default
    `real`) embeds `real` and each set; n_iters None is TS2Vec's own rule."""
    real = _as_series(real, "real")
    fit_on = real if fit_on is None else _as_series(fit_on, "fit_on")
    out = {name: [] for name in synthetic}
    for r in range(repeats):
        encoder = TS2Vec(real.shape[2], seed=seed * 1000 + r, device=device)
        encoder.fit(fit_on, n_iters=n_iters, progress=progress)
        real_embedding = encoder.encode(real)
        for name, X in synthetic.items():
            X = _as_series(X, name)
            _same_shape(real, X)
            out[name].append(frechet_distance(real_embedding, encoder.encode(X)))
    return {name: np.asarray(v) for name, v in out.items()}


# --------------------------------------------------------------------------- correlational score

def cross_correlation(X: np.ndarray) -> np.ndarray:
    """(F(F+1)/2,) lag-0 cross-correlations of the standardised features (lower triangle with the diagonal),
    averaged over time and series: Diffusion-TS's `cacf_torch(x, 1).mean(0)[0]`."""
    X = np.asarray(X, np.float64)
    Z = (X - X.mean(axis=(0, 1))) / X.std(axis=(0, 1), ddof=1)
    rows, cols = np.tril_indices(X.shape[2])
    return (Z[..., rows] * Z[..., cols]).mean(axis=(0, 1))


def correlational_scores(real: np.ndarray, synthetic: np.ndarray, repeats: int = 5, seed: int = 0) -> np.ndarray:
    """(repeats,) Σ|corr(real) − corr(synthetic)| / 10, each repeat on a random fifth (with replacement) of both."""
    real, synthetic = _as_series(real, "real"), _as_series(synthetic, "synthetic")
    _same_shape(real, synthetic)
    rng = np.random.default_rng(seed)
    size = max(2, len(real) // repeats)
    scores = []
    for _ in range(repeats):
        r = real[rng.integers(0, len(real), size)]
        s = synthetic[rng.integers(0, len(synthetic), size)]
        scores.append(np.abs(cross_correlation(s) - cross_correlation(r)).sum() / 10)
    return np.asarray(scores)


# --------------------------------------------------------------------------- checks

def _as_series(X, what: str) -> np.ndarray:
    X = np.asarray(X, np.float32)
    if X.ndim != 3:
        raise ValueError(f"{what} must be (series, time steps, features), got shape {X.shape}")
    if len(X) < 10:
        raise ValueError(f"{what} has {len(X)} series; the metrics need at least 10")
    if not np.isfinite(X).all():
        raise ValueError(f"{what} has NaN/inf values in {int((~np.isfinite(X)).any(axis=(1, 2)).sum())} series")
    return X


def _same_shape(real: np.ndarray, synthetic: np.ndarray) -> None:
    if real.shape[1:] != synthetic.shape[1:]:
        raise ValueError(f"real series are {real.shape[1:]} (time steps, features), synthetic {synthetic.shape[1:]}")
