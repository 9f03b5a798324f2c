"""TimeGAN (Yoon, Jarrett, van der Schaar; NeurIPS 2019), rebuilt in PyTorch from jsyoon0823/TimeGAN (Apache-2.0).

Read from `timegan.py`, `utils.py`, `main_timegan.py` and `data_loading.py` at commit 8f6181c (TF 1.15):
- Data min-max scaled per feature over stays and time to [0, 1] (their `MinMaxScaler`), noise Z ~ U[0, 1)
  with z_dim = number of features.
- Five recurrent networks, each a MultiRNNCell of `tf.nn.rnn_cell.GRUCell`s run by `dynamic_rnn` from a
  zero state, then a dense head on every time step: embedder X -> H and generator Z -> E_hat (num_layer
  layers, sigmoid head of hidden_dim), supervisor H -> H (num_layer - 1 layers, sigmoid head), recovery
  H -> X (num_layer layers, sigmoid head of F), discriminator H -> logits (num_layer layers, unidirectional,
  a linear head of 1 on every step; the paper's bidirectional discriminator is not what the code runs).
- Losses (means over every element; notation of their code):
  E_loss_T0 = MSE(X, X_tilde), E_loss0 = 10·√E_loss_T0, G_loss_S = MSE(H[:, 1:], supervisor(H)[:, :-1]),
  E_loss = E_loss0 + 0.1·G_loss_S;
  G_loss = G_loss_U + γ·G_loss_U_e + 100·√G_loss_S + 100·(G_loss_V1 + G_loss_V2), with G_loss_V1 the mean
  |sd(X_hat) − sd(X)| and G_loss_V2 the mean |mean(X_hat) − mean(X)|, moments over the batch axis only,
  sd = √(var + 1e-6) (population variance, `tf.nn.moments`);
  D_loss = BCE(D(H), 1) + BCE(D(H_hat), 0) + γ·BCE(D(E_hat), 0), H_hat = supervisor(E_hat), γ = 1.
- Five Adam optimisers (TF1 defaults: lr 1e-3, β 0.9 / 0.999, ε 1e-8), each with its own moments:
  E0_solver (E_loss0; embedder + recovery), GS_solver (G_loss_S; generator + supervisor), G_solver
  (G_loss; generator + supervisor), E_solver (E_loss; embedder + recovery), D_solver (D_loss; discriminator).
- Three phases of `iterations` each (50,000, batch 128, GRU, hidden 24, 3 layers by default): (1) E0_solver;
  (2) GS_solver; (3) per iteration twice [G_solver then E_solver on one batch], then on a fresh batch the
  discriminator's loss is computed and D_solver steps only if it exceeds 0.15. Every batch is the first
  batch_size rows of a fresh random permutation of the stays, every Z a fresh draw.
- Generation: X_hat = recovery(supervisor(generator(Z))), then the inverse min-max scaling.

Reproduced as it is (not departures, but easy to misread): in phase 2 the generator is in GS_solver's variable
list but G_loss_S does not depend on it, so it keeps its initial weights until phase 3; E_loss's G_loss_S
reaches the embedder through the (not updated) supervisor; G_loss and D_loss reach only their own variables.

Departures, each with its reason:
- Random numbers come from one seeded torch.Generator (batches, noise), not NumPy's global state, so a fit
  is reproducible and a resumed fit bit-identical; the batch and noise rules are the authors'. Phase 2 draws
  no noise: the authors feed a Z there that no loss reads.
- When a model has fewer stays than batch_size every batch is all of them, with noise for as many; the
  authors' `random_generator` raises an IndexError there (it loops over batch_size, not the batch).
- Fixed-length windows only (X is (N, T, F)): the authors' `sequence_length` masking is the identity then.
- The GRU is TF1's GRUCell exactly (reset gate applied to the state before the recurrent product, gate
  order reset/update, one gate bias of 1.0, candidate bias 0, Glorot-uniform kernels over the concatenated
  [input, state] rows), written as an autograd Function with a hand-written backward (`TF1GRULayer`).
  nn.GRU's cuDNN form (reset gate applied after the recurrent product, two biases) is not needed for speed
  on a CPU: at one thread, 3 layers, hidden 24, batch 128 this layer runs forward in ~4.5 ms against
  nn.GRU's ~6 ms and forward + backward in ~12-16 ms against ~23 ms (on CUDA, cuDNN would win).
  Dense heads start as tf.contrib.layers.fully_connected's (Glorot-uniform, zero bias).
- A network applied to two or three batches in one step runs once on their concatenation (the rows are
  independent: the same values up to float rounding). The discriminator's check loss is computed once, with
  gradients, and backpropagated when it exceeds the threshold; the authors run the same forward pass twice.
- Adam: torch's fused Adam with its lr and ε reset each step so that its update is TF1's
  lr·√(1 − β2^t)/(1 − β1^t) · m / (√v + ε_TF), with TF's float32 constants and float32 running powers β^t
  (`TF1Adam`; equal up to float rounding).
- Held to the authors' code on the same weights, batches and noise (losses, gradients, parameters after all
  three phases, samples): experiments/authors_equivalence/timegan.py, results/authors_equivalence/timegan.md.
- Inverse scaling is the shared `Scaler` (multiplies by span + 1e-7 where the authors multiply by span: a
  relative difference of 1e-7). Samples are drawn for any count, in batches; the authors draw N at once.
- Losses are logged as means over `log_every` iterations rather than printed every 1,000th iteration, as the
  authors print them (√E_loss_T0, √G_loss_S, G_loss_U, G_loss_V); d_loss is every iteration's check loss
  (the authors print the last discriminator step's), and `d_steps` counts the discriminator steps.
- Only module "gru" (the authors' default and the one behind their Sines / Stocks numbers) is built; their
  "lstm" and "lstmLN" options are not.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from tardiff.generators.base import Checkpoint, Generator, progress_bar
from tardiff.settings import check, count, fraction, number, one_of, positive

# the authors' fixed loss weights (timegan.py)
RECONSTRUCTION_WEIGHT = 10.0    # E_loss0 = 10 * sqrt(E_loss_T0)
SUPERVISED_IN_E_LOSS = 0.1      # E_loss = E_loss0 + 0.1 * G_loss_S
SUPERVISED_IN_G_LOSS = 100.0    # 100 * sqrt(G_loss_S)
MOMENTS_IN_G_LOSS = 100.0       # 100 * G_loss_V
GENERATOR_STEPS_PER_D_STEP = 2  # "Generator training (twice more than discriminator training)"


@dataclass
class TimeGANConfig:
    module: str = "gru"
    hidden_dim: int = 24
    num_layer: int = 3
    iterations: int = 50_000        # per phase, as the authors' `iterations`
    batch_size: int = 128
    lr: float = 1e-3                # tf.train.AdamOptimizer() defaults
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    gamma: float = 1.0
    d_loss_threshold: float = 0.15  # the discriminator steps only when its loss exceeds this
    log_every: int = 1000
    sample_batch_size: int = 4096

    RANGES: ClassVar[dict] = {
        "module": one_of("gru", why="only 'gru' is built here, the authors' default"), "hidden_dim": count(),
        "num_layer": count(2, why="TimeGAN needs num_layer >= 2: the supervisor has num_layer - 1"),
        "iterations": count(), "batch_size": count(), "lr": positive(), "beta1": fraction(), "beta2": fraction(),
        "eps": positive(), "gamma": number(0), "d_loss_threshold": number(0), "log_every": count(),
        "sample_batch_size": count(),
    }

    def __post_init__(self):
        check(self)

    @classmethod
    def tiny(cls) -> "TimeGANConfig":
        """Seconds on a CPU, for the tests and the smoke profile: a joint iteration costs ~70 ms even this small
        (the recurrences are op-bound), so each phase runs 10 iterations."""
        return cls(hidden_dim=8, num_layer=2, iterations=10, batch_size=32, log_every=5)


# --------------------------------------------------------------------------- TF1's GRUCell

class TF1GRULayer(torch.autograd.Function):
    """One layer of tf.nn.rnn_cell.GRUCell over a whole time-major sequence, from a zero state.

        [r, u] = sigmoid([x_t, h] @ gate_kernel + gate_bias)
        c      = tanh([x_t, r * h] @ candidate_kernel + candidate_bias)
        h'     = u * h + (1 - u) * c

    A hand-written backward (BPTT) keeps the per-step op count low: tiny matrices make CPU time a count of ops.
    """

    @staticmethod
    def forward(ctx, x, gate_kernel, gate_bias, candidate_kernel, candidate_bias):
        T, B, I = x.shape                                                   # x (T, B, I)
        H = candidate_bias.shape[0]
        rows = x.reshape(T * B, I)
        gate_x = torch.addmm(gate_bias, rows, gate_kernel[:I]).view(T, B, 2 * H).unbind(0)
        candidate_x = torch.addmm(candidate_bias, rows, candidate_kernel[:I]).view(T, B, H).unbind(0)
        gate_h, candidate_h = gate_kernel[I:], candidate_kernel[I:]
        states = x.new_empty(T + 1, B, H)                                   # h_0 .. h_T
        states[0].zero_()
        gates = x.new_empty(T, B, 2 * H)                                    # sigmoid outputs [r, u]
        candidates = x.new_empty(T, B, H)                                   # c
        reset_states = x.new_empty(T, B, H)                                 # r * h
        # views made once: the loop is op-bound, so each step runs six ops and nothing else
        h_, g_, c_, rh_ = states.unbind(0), gates.unbind(0), candidates.unbind(0), reset_states.unbind(0)
        r_, u_ = gates[..., :H].unbind(0), gates[..., H:].unbind(0)
        for t in range(T):
            h, g, c, rh = h_[t], g_[t], c_[t], rh_[t]
            torch.addmm(gate_x[t], h, gate_h, out=g).sigmoid_()
            torch.mul(r_[t], h, out=rh)
            torch.addmm(candidate_x[t], rh, candidate_h, out=c).tanh_()
            torch.lerp(c, h, u_[t], out=h_[t + 1])                          # c + u (h - c)
        ctx.save_for_backward(x, gate_kernel, candidate_kernel, states, gates, candidates, reset_states)
        return states[1:]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x, gate_kernel, candidate_kernel, states, gates, candidates, reset_states = ctx.saved_tensors
        T, B, I = x.shape
        H = candidates.shape[2]
        gate_h_t, candidate_h_t = gate_kernel[I:].t(), candidate_kernel[I:].t()
        reset, update = gates[..., :H], gates[..., H:]
        slope = gates * (1 - gates)                                         # sigmoid'
        # the step-independent factors of the chain rule, for all steps at once:
        to_candidate = ((1 - update) * (1 - candidates * candidates)).unbind(0)   # dh'/dc · tanh'
        to_reset = (states[:-1] * slope[..., :H]).unbind(0)                # d(r h)/dr · sigmoid'
        to_update = ((states[:-1] - candidates) * slope[..., H:]).unbind(0)  # dh'/du · sigmoid'
        reset_, update_, grad_out_ = reset.unbind(0), update.unbind(0), grad_out.unbind(0)
        d_gates = x.new_empty(T, B, 2 * H)                                  # d loss / d gate pre-activations
        d_candidates = x.new_empty(T, B, H)                                 # d loss / d candidate pre-activation
        dg_, dc_ = d_gates.unbind(0), d_candidates.unbind(0)
        dr_, du_ = d_gates[..., :H].unbind(0), d_gates[..., H:].unbind(0)
        dh = grad_out_[T - 1]                                               # d loss / d h_{t+1}
        for t in range(T - 1, -1, -1):
            torch.mul(dh, to_candidate[t], out=dc_[t])
            d_reset_state = torch.mm(dc_[t], candidate_h_t)
            torch.mul(d_reset_state, to_reset[t], out=dr_[t])
            torch.mul(dh, to_update[t], out=du_[t])
            if t:
                dh = torch.addcmul(grad_out_[t - 1], dh, update_[t]).addcmul_(d_reset_state, reset_[t]) \
                    .addmm_(dg_[t], gate_h_t)
        dG, dC = d_gates.view(T * B, 2 * H), d_candidates.view(T * B, H)
        rows = x.reshape(T * B, I)
        need = ctx.needs_input_grad
        dx = torch.addmm(dC @ candidate_kernel[:I].t(), dG, gate_kernel[:I].t()).view(T, B, I) if need[0] else None
        d_gate_kernel = torch.cat([rows.t() @ dG, states[:-1].reshape(T * B, H).t() @ dG]) if need[1] else None
        d_gate_bias = dG.sum(0) if need[2] else None
        d_candidate_kernel = torch.cat([rows.t() @ dC, reset_states.reshape(T * B, H).t() @ dC]) if need[3] else None
        d_candidate_bias = dC.sum(0) if need[4] else None
        return dx, d_gate_kernel, d_gate_bias, d_candidate_kernel, d_candidate_bias


class TF1GRUCell(nn.Module):
    """tf.nn.rnn_cell.GRUCell's variables and initialisation (TF1's default Glorot-uniform kernels)."""

    def __init__(self, input_dim: int, hidden_dim: int):
        super().__init__()
        self.gate_kernel = nn.Parameter(torch.empty(input_dim + hidden_dim, 2 * hidden_dim))  # columns [r, u]
        self.gate_bias = nn.Parameter(torch.ones(2 * hidden_dim))
        self.candidate_kernel = nn.Parameter(torch.empty(input_dim + hidden_dim, hidden_dim))
        self.candidate_bias = nn.Parameter(torch.zeros(hidden_dim))
        for kernel in (self.gate_kernel, self.candidate_kernel):
            limit = math.sqrt(6.0 / sum(kernel.shape))                     # fan_in = rows, fan_out = columns
            nn.init.uniform_(kernel, -limit, limit)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(T, B, I) -> (T, B, H), every step's state."""
        return TF1GRULayer.apply(x, self.gate_kernel, self.gate_bias, self.candidate_kernel, self.candidate_bias)


class RecurrentNet(nn.Module):
    """MultiRNNCell of GRUCells + fully_connected on every step: the body of each of TimeGAN's five networks."""

    def __init__(self, input_dim: int, hidden_dim: int, num_layers: int, output_dim: int, sigmoid: bool):
        super().__init__()
        self.cells = nn.ModuleList(TF1GRUCell(input_dim if i == 0 else hidden_dim, hidden_dim)
                                   for i in range(num_layers))
        self.head = nn.Linear(hidden_dim, output_dim)
        nn.init.xavier_uniform_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.sigmoid = sigmoid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.transpose(0, 1).contiguous()                                  # (T, B, I): time-major for the cells
        for cell in self.cells:
            h = cell(h)
        out = self.head(h).transpose(0, 1)                                  # (B, T, output_dim)
        return torch.sigmoid(out) if self.sigmoid else out


class TimeGANModel(nn.Module):
    """The five networks; calling it is the generation path Z -> generator -> supervisor -> recovery."""

    NETWORKS = ("embedder", "recovery", "generator", "supervisor", "discriminator")

    def __init__(self, n_features: int, seq_len: int, config: TimeGANConfig):
        super().__init__()
        self.n_features, self.seq_len, self.z_dim = n_features, seq_len, n_features
        H, L = config.hidden_dim, config.num_layer
        self.embedder = RecurrentNet(n_features, H, L, H, sigmoid=True)
        self.recovery = RecurrentNet(H, H, L, n_features, sigmoid=True)
        self.generator = RecurrentNet(self.z_dim, H, L, H, sigmoid=True)
        self.supervisor = RecurrentNet(H, H, L - 1, H, sigmoid=True)
        self.discriminator = RecurrentNet(H, H, L, 1, sigmoid=False)

    def forward(self, Z: torch.Tensor) -> torch.Tensor:
        """(B, T, z_dim) noise -> (B, T, F) synthetic stays in the scaled space."""
        return self.recovery(self.supervisor(self.generator(Z)))

    def networks(self, *names: str) -> list[nn.Parameter]:
        return [p for name in names for p in getattr(self, name).parameters()]


# --------------------------------------------------------------------------- losses

def supervised_loss(H: torch.Tensor, H_hat_supervise: torch.Tensor) -> torch.Tensor:
    """G_loss_S: the supervisor's next-step prediction error in latent space."""
    return F.mse_loss(H_hat_supervise[:, :-1], H[:, 1:])


def moment_loss(X_hat: torch.Tensor, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(G_loss_V1, G_loss_V2): mean |Δ sd| and mean |Δ mean|, moments over the batch axis, per (t, f)."""
    sd_hat = torch.sqrt(X_hat.var(0, unbiased=False) + 1e-6)
    sd = torch.sqrt(X.var(0, unbiased=False) + 1e-6)
    return (sd_hat - sd).abs().mean(), (X_hat.mean(0) - X.mean(0)).abs().mean()


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    """tf.losses.sigmoid_cross_entropy against a constant label: the mean over every step."""
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


@contextlib.contextmanager
def _trained(model: TimeGANModel, *names: str):
    """Gradients for the named networks only (a solver's var_list): the others' weight gradients are skipped."""
    for name in TimeGANModel.NETWORKS:
        getattr(model, name).requires_grad_(name in names)
    try:
        yield
    finally:
        model.requires_grad_(True)


def _step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


# --------------------------------------------------------------------------- each solver's loss, then its step

def embedding_losses(model: TimeGANModel, X) -> dict:
    """E0_solver's loss E_loss0 = 10·√E_loss_T0 (phase 1), with its reconstruction term."""
    E_loss_T0 = F.mse_loss(model.recovery(model.embedder(X)), X)
    return {"E_loss_T0": E_loss_T0, "E_loss0": RECONSTRUCTION_WEIGHT * torch.sqrt(E_loss_T0)}


def supervised_losses(model: TimeGANModel, X) -> dict:
    """GS_solver's loss G_loss_S (phase 2); the embedding is a constant to it."""
    with torch.no_grad():
        H = model.embedder(X)
    return {"G_loss_S": supervised_loss(H, model.supervisor(H))}


def generator_losses(model: TimeGANModel, X, Z, gamma: float) -> dict:
    """G_solver's loss G_loss and its terms (phase 3)."""
    B = len(X)
    with torch.no_grad():
        H = model.embedder(X)                                               # (B, T, H)
    E_hat = model.generator(Z)
    H_hat, H_hat_supervise = model.supervisor(torch.cat([E_hat, H])).split(B)
    X_hat = model.recovery(H_hat)
    Y_fake, Y_fake_e = model.discriminator(torch.cat([H_hat, E_hat])).split(B)
    out = {"G_loss_U": _bce(Y_fake, 1.0), "G_loss_U_e": _bce(Y_fake_e, 1.0),
           "G_loss_S": supervised_loss(H, H_hat_supervise)}
    out["G_loss_V1"], out["G_loss_V2"] = moment_loss(X_hat, X)
    out["G_loss_V"] = out["G_loss_V1"] + out["G_loss_V2"]
    out["G_loss"] = out["G_loss_U"] + gamma * out["G_loss_U_e"] + SUPERVISED_IN_G_LOSS * torch.sqrt(out["G_loss_S"]) \
        + MOMENTS_IN_G_LOSS * out["G_loss_V"]
    return out


def embedder_losses(model: TimeGANModel, X) -> dict:
    """E_solver's loss E_loss = E_loss0 + 0.1·G_loss_S (phase 3), with its terms."""
    H = model.embedder(X)
    E_loss_T0 = F.mse_loss(model.recovery(H), X)
    G_loss_S = supervised_loss(H, model.supervisor(H))
    E_loss0 = RECONSTRUCTION_WEIGHT * torch.sqrt(E_loss_T0)
    return {"E_loss_T0": E_loss_T0, "E_loss0": E_loss0, "G_loss_S": G_loss_S,
            "E_loss": E_loss0 + SUPERVISED_IN_E_LOSS * G_loss_S}


def discriminator_losses(model: TimeGANModel, X, Z, gamma: float) -> dict:
    """D_solver's loss D_loss and its terms (phase 3); the generated embeddings are constants to it."""
    B = len(X)
    with torch.no_grad():
        H = model.embedder(X)
        E_hat = model.generator(Z)
        H_hat = model.supervisor(E_hat)
    Y_real, Y_fake, Y_fake_e = model.discriminator(torch.cat([H, H_hat, E_hat])).split(B)
    out = {"D_loss_real": _bce(Y_real, 1.0), "D_loss_fake": _bce(Y_fake, 0.0), "D_loss_fake_e": _bce(Y_fake_e, 0.0)}
    out["D_loss"] = out["D_loss_real"] + out["D_loss_fake"] + gamma * out["D_loss_fake_e"]
    return out


def embedding_step(model: TimeGANModel, e0_solver, X) -> float:
    """Phase 1 (E0_solver): E_loss0 on embedder + recovery; returns E_loss_T0."""
    with _trained(model, "embedder", "recovery"):
        losses = embedding_losses(model, X)
        _step(e0_solver, losses["E_loss0"])
    return losses["E_loss_T0"].item()


def supervised_step(model: TimeGANModel, gs_solver, X) -> float:
    """Phase 2 (GS_solver): G_loss_S; of its var list (generator + supervisor) only the supervisor is reached."""
    with _trained(model, "generator", "supervisor"):
        G_loss_S = supervised_losses(model, X)["G_loss_S"]
        _step(gs_solver, G_loss_S)
    return G_loss_S.item()


def generator_step(model: TimeGANModel, g_solver, X, Z, gamma: float) -> dict:
    """Phase 3 (G_solver): G_loss on generator + supervisor; returns its parts."""
    with _trained(model, "generator", "supervisor"):
        losses = generator_losses(model, X, Z, gamma)
        _step(g_solver, losses["G_loss"])
    return {"g_loss_u": losses["G_loss_U"].item(), "g_loss_s": losses["G_loss_S"].item(),
            "g_loss_v": losses["G_loss_V"].item()}


def embedder_step(model: TimeGANModel, e_solver, X) -> float:
    """Phase 3 (E_solver): E_loss on embedder + recovery, after the generator step; returns E_loss_T0."""
    with _trained(model, "embedder", "recovery"):
        losses = embedder_losses(model, X)
        _step(e_solver, losses["E_loss"])
    return losses["E_loss_T0"].item()


def discriminator_step(model: TimeGANModel, d_solver, X, Z, gamma: float, threshold: float) -> tuple[float, bool]:
    """Phase 3 (D_solver): D_loss on a fresh batch; the discriminator steps only when it exceeds `threshold`."""
    with _trained(model, "discriminator"):
        D_loss = discriminator_losses(model, X, Z, gamma)["D_loss"]
        check_d_loss = D_loss.item()
        stepped = check_d_loss > threshold
        if stepped:
            _step(d_solver, D_loss)
    return check_d_loss, stepped


class TF1Adam(torch.optim.Adam):
    """tf.train.AdamOptimizer, θ -= α_t · m / (√v + ε) with α_t = lr·√(1-β2^t)/(1-β1^t), on torch's fused Adam.

    TF holds lr, β1, β2 and ε as float32 and multiplies the powers β^t step by step in float32 (its
    beta1_power / beta2_power variables), so its 1 - β2^t is off the exact one by ~1e-5 relative (1 - f32(0.999)
    = 0.00099998713): matched here by running torch with the float32 betas and, each step, the lr and ε that turn
    torch's update lr/(1-β1^t) · m / (√v/√(1-β2^t) + ε) into TF's. The step count and the powers live in the
    param group, so they are checkpointed with the optimiser's state.
    """

    def __init__(self, params, lr: float, betas: tuple, eps: float):
        super().__init__(params, lr=lr, betas=tuple(_f32(b) for b in betas), eps=eps, fused=True)
        for group in self.param_groups:
            group["tf_lr"], group["tf_eps"], group["tf_step"], group["tf_powers"] = _f32(lr), _f32(eps), 0, (1.0, 1.0)

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            if "tf_powers" not in group:
                _upgrade(group)
            beta1, beta2 = group["betas"]
            power1, power2 = (np.float32(p) * np.float32(b) for p, b in zip(group["tf_powers"], (beta1, beta2)))
            group["tf_step"] += 1
            group["tf_powers"] = (float(power1), float(power2))
            t, one = group["tf_step"], np.float32(1)
            alpha = float(np.float32(group["tf_lr"]) * np.sqrt(one - power2) / (one - power1))   # TF's, in float32
            bias1, bias2 = 1 - beta1 ** t, 1 - beta2 ** t                                       # torch's
            group["lr"] = alpha * bias1 / math.sqrt(bias2)
            group["eps"] = group["tf_eps"] / math.sqrt(bias2)
        return super().step(closure)


def _f32(value: float) -> float:
    return float(np.float32(value))


def _upgrade(group: dict) -> None:
    """A param group restored from a checkpoint written before TF's float32 constants (it held only tf_eps and
    tf_step): it resumes with them, its powers rebuilt as TF would hold them after tf_step steps."""
    group["betas"] = tuple(_f32(b) for b in group["betas"])
    group["tf_lr"], group["tf_eps"] = _f32(group["lr"]), _f32(group["tf_eps"])
    power1 = power2 = np.float32(1)
    for _ in range(group["tf_step"]):
        power1, power2 = power1 * np.float32(group["betas"][0]), power2 * np.float32(group["betas"][1])
    group["tf_powers"] = (float(power1), float(power2))


class _Batches:
    """The authors' batch_generator (first batch_size rows of a fresh permutation) and random_generator."""

    def __init__(self, X: torch.Tensor, batch_size: int, generator: torch.Generator):
        self.X, self.batch_size, self.generator = X, batch_size, generator

    def __call__(self, noise: bool = True):
        idx = torch.randperm(len(self.X), generator=self.generator)[:self.batch_size]
        X = self.X[idx.to(self.X.device)]
        if not noise:
            return X, None
        Z = torch.rand(X.shape, generator=self.generator).to(self.X.device)  # z_dim = F, U[0, 1)
        return X, Z


def joint_iteration(model: TimeGANModel, solvers: dict, batches: _Batches, config: TimeGANConfig) -> dict:
    """One phase-3 iteration: twice (G_solver, E_solver) on one batch, then the conditional D_solver."""
    logs = []
    for _ in range(GENERATOR_STEPS_PER_D_STEP):
        X, Z = batches()
        log = generator_step(model, solvers["g_solver"], X, Z, config.gamma)
        log["g_loss_s"] = math.sqrt(log["g_loss_s"])                  # as the authors print them
        log["e_loss_t0"] = math.sqrt(embedder_step(model, solvers["e_solver"], X))
        logs.append(log)
    X, Z = batches()
    d_loss, stepped = discriminator_step(model, solvers["d_solver"], X, Z, config.gamma, config.d_loss_threshold)
    out = {k: float(np.mean([log[k] for log in logs])) for k in logs[0]}
    return {**out, "d_loss": d_loss, "d_stepped": float(stepped)}


# --------------------------------------------------------------------------- the generator

PHASES = ("embedding", "supervised", "joint")


class TimeGAN(Generator, name="timegan", config=TimeGANConfig, native_labels=False, scaling="minmax01",
              budget_fields=("iterations",)):
    def build(self, n_features, seq_len, n_classes):
        return TimeGANModel(n_features, seq_len, self.config)  # module and num_layer: TimeGANConfig.RANGES

    def solvers(self, model: TimeGANModel) -> dict:
        """The authors' five Adam optimisers, each over its var_list with its own moments."""
        c = self.config
        make = lambda *names: TF1Adam(model.networks(*names), c.lr, (c.beta1, c.beta2), c.eps)  # noqa: E731
        return {"e0_solver": make("embedder", "recovery"), "gs_solver": make("generator", "supervisor"),
                "g_solver": make("generator", "supervisor"), "e_solver": make("embedder", "recovery"),
                "d_solver": make("discriminator")}

    def train(self, model, X, y, seed, device, checkpoint: Checkpoint, progress):
        c = self.config
        solvers = self.solvers(model)
        generator = torch.Generator().manual_seed(seed)
        state = {"phase": 0, "step": 0, "d_steps": 0, "loss": {}, "window": {}}
        state.update(checkpoint.restore(model=model, generator=generator, **solvers))
        batches = _Batches(torch.as_tensor(X).to(device), c.batch_size, generator)
        run = [lambda: {"embedding": math.sqrt(embedding_step(model, solvers["e0_solver"], batches(False)[0]))},
               lambda: {"supervised": math.sqrt(supervised_step(model, solvers["gs_solver"], batches(False)[0]))},
               lambda: joint_iteration(model, solvers, batches, c)]
        total = len(PHASES) * c.iterations
        bar = progress_bar(total, state["phase"] * c.iterations + state["step"], "TimeGAN", progress)
        model.train()
        while state["phase"] < len(PHASES):
            if state["step"] == c.iterations:
                state["phase"], state["step"] = state["phase"] + 1, 0
                continue
            log = run[state["phase"]]()
            state["step"] += 1
            state["d_steps"] += int(log.pop("d_stepped", 0))
            if self._log(state, log):
                bar.set_postfix({"phase": PHASES[state["phase"]], **{k: f"{v[-1]:.4g}" for k, v in
                                                                       state["loss"].items() if k in log}})
            bar.update(1)
            done = state["phase"] * c.iterations + state["step"]
            checkpoint.step(state, done, final=done == total)
        bar.close()
        return {"steps": total, "phases": PHASES, "iterations_per_phase": c.iterations,
                "d_steps": state["d_steps"], "log_every": c.log_every, "loss": state["loss"]}

    def _log(self, state: dict, log: dict) -> bool:
        """Means over each `log_every` iterations (and the phase's last), kept in the checkpointed state; True
        when one was written."""
        c = self.config
        window = state["window"]
        for key, value in log.items():
            window[key] = window.get(key, 0.0) + value
        window["_n"] = window.get("_n", 0) + 1
        if state["step"] % c.log_every == 0 or state["step"] == c.iterations:
            n = window.pop("_n")
            for key, value in window.items():
                state["loss"].setdefault(key, []).append(value / n)
            window.clear()
            return True
        return False

    def generate(self, model, n, y, seed, device, progress):
        generator = torch.Generator().manual_seed(seed)
        Z = torch.rand((n, model.seq_len, model.z_dim), generator=generator)  # the authors' U[0, 1) noise
        return self.decode(model, Z, device)

    def decode(self, model, Z: torch.Tensor, device) -> np.ndarray:
        """Noise (n, T, z_dim) -> stays in the scaled space, in batches: recovery(supervisor(generator(Z)))."""
        batch = self.config.sample_batch_size
        with torch.no_grad():
            return torch.cat([model(Z[i:i + batch].to(device)).cpu() for i in range(0, len(Z), batch)]).numpy()
