"""Many small GRU models trained as one batched group, equal to training them one by one: the downstream
classifiers of the tables (`train_group`), the fidelity discriminators (`fixed_epoch_logits`) and the
predictive-score regressors (`fixed_epoch_next_step`).

The tables re-train a 1-layer biGRU of 32 units ~150 times (sets x seeds x alpha). One such model leaves a
CPU mostly idle: each of its steps is a (256, 32) product. Here the members (each with its own training
set, initialisation, batch order, dropout stream, Adam state and early stopping) are stacked along one
leading axis of D = members x directions, so every time step is one batched product for all of them, and
the backward pass through time is written out (no autograd graph per step). A member whose early stopping
fires is dropped from the stack; the others go on. A member given as (X, y, w) weighs its stays in the loss
(`train_classifier(..., sample_weight=w)`); the others keep the unweighted arithmetic. `train_classifier`
(`tardiff.classifier`) stays the reference: `tests/test_grouped.py` checks that both give the same
predictions (on a CPU; on a GPU the dropout masks come from each member's CPU stream, where
train_classifier draws them on the GPU).

How much faster than one at a time is measured by benchmarks/bench_evaluate.py (outputs/benchmarks/,
docs/benchmarks.md).
The CPU is bound by memory traffic here, so groups stay small (4 members); on a GPU they can be large.
"""
from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from tardiff.classifier import (ClassifierConfig, RNNClassifier, TrainConfig, _as_tensor, _as_weights, _metrics,
                                build_classifier, training_set, validation_set)
from tardiff.utils import get_device


def default_group_size(device: torch.device) -> int:
    """Members per group: a CPU is bound by memory traffic, so cache-sized groups; a GPU wants many."""
    return 64 if device.type == "cuda" else 4


def supports(config: ClassifierConfig) -> bool:
    """The grouped path covers what the tables train: a 1-layer GRU classifier (uni- or bidirectional)."""
    return config.rnn == "gru" and config.layers == 1


def _stacked(models: list[RNNClassifier], device) -> dict:
    """The members' parameters stacked: GRU weights over D = members x directions, the head over members."""
    tensors = {**_stacked_gru([m.rnn for m in models]),
               "w_head": torch.stack([m.head.weight.detach().reshape(-1) for m in models]),
               "b_head": torch.stack([m.head.bias.detach().reshape(()) for m in models])}
    return {k: v.detach().clone().to(device) for k, v in tensors.items()}


def _stacked_gru(rnns: list[nn.GRU]) -> dict:
    """1-layer nn.GRU weights stacked over D = members x directions."""
    suffixes = [""] + (["_reverse"] if rnns[0].bidirectional else [])

    def gru(kind):
        return torch.stack([rnn.state_dict()[f"{kind}_l0{s}"] for rnn in rnns for s in suffixes])

    return {"W_ih": gru("weight_ih"), "W_hh": gru("weight_hh"), "b_ih": gru("bias_ih"), "b_hh": gru("bias_hh")}


def _per_direction(name: str) -> bool:
    return name in ("W_ih", "W_hh", "b_ih", "b_hh")


class _Buffers:
    """Arrays reused from batch to batch: a fresh large array costs a page fault per 4 KiB on first touch,
    which on a CPU costs more than the GRU arithmetic that fills it."""

    def __init__(self):
        self.arrays: dict = {}

    def get(self, name: str, shape: tuple, like: torch.Tensor) -> torch.Tensor:
        n = int(np.prod(shape))
        array = self.arrays.get(name)
        if array is None or array.numel() < n or array.device != like.device or array.dtype != like.dtype:
            array = self.arrays[name] = torch.empty(n, dtype=like.dtype, device=like.device)
        return array[:n].view(shape)


def _forward(p: dict, x: torch.Tensor, directions: int, keep: bool, buffers: _Buffers | None = None):
    """GRU over x (M, B, T, F) for all members; returns the final states (M, B, directions*H) and, if
    `keep`, what the backward needs (r, z, n, W_hn h + b_hn and h of every step). Gate order (r, z, n) and
    formulas are nn.GRU's.

    A CPU here is bound by memory traffic, not arithmetic: a step's products go to cache-sized buffers that
    are reused, only the few per-step values the backward needs are kept, time-major (T, D, B, ·).
    """
    M, B, T, n_in = x.shape
    D, H = p["W_hh"].shape[0], p["W_hh"].shape[-1]
    steps = x.permute(2, 0, 1, 3)                                                  # (T, M, B, F)
    xp = (torch.stack([steps, steps.flip(0)], 2) if directions == 2 else steps.unsqueeze(2)).reshape(T, D, B, n_in)
    W_ihT, b_ih = p["W_ih"].transpose(1, 2), p["b_ih"].unsqueeze(1)
    W_hhT, b_hh = p["W_hh"].transpose(1, 2), p["b_hh"].unsqueeze(1)
    buffers = buffers or _Buffers()
    kept = T if keep else 1
    gi, gh = buffers.get("gi", (D, B, 3 * H), x), buffers.get("gh", (D, B, 3 * H), x)  # reused every step
    hs = buffers.get("hs", (T + 1, D, B, H), x)  # hs[t]: the state before step t
    hs[0].zero_()
    rz, ns = buffers.get("rz", (kept, D, B, 2 * H), x), buffers.get("ns", (kept, D, B, H), x)
    gh_n = buffers.get("gh_n", (T, D, B, H), x) if keep else None
    for t in range(T):
        k = t if keep else 0
        torch.baddbmm(b_ih, xp[t], W_ihT, out=gi)                                 # W_ih x + b_ih (D, B, 3H)
        torch.baddbmm(b_hh, hs[t], W_hhT, out=gh)                                 # W_hh h + b_hh
        gates = torch.add(gi[..., :2 * H], gh[..., :2 * H], out=rz[k]).sigmoid_()
        n = torch.addcmul(gi[..., 2 * H:], gates[..., :H], gh[..., 2 * H:], out=ns[k]).tanh_()
        torch.sub(hs[t], n, out=hs[t + 1]).mul_(gates[..., H:]).add_(n)            # (h - n) z + n, as nn.GRU
        if keep:
            gh_n[t] = gh[..., 2 * H:]
    final = hs[T].view(M, directions, B, H).transpose(1, 2).reshape(M, B, directions * H)
    return final, (xp, hs, gh_n, rz, ns)


def _backward(p: dict, saved, d_final: torch.Tensor, directions: int, buffers: _Buffers | None = None,
              d_outputs: torch.Tensor | None = None) -> dict:
    """Gradients of the GRU weights from δ on the final states (M, B, directions*H) and, if given, on every
    step's output state (T, D, B, H), processing order: BPTT written out, each step's δ in reused cache-sized
    buffers, the weight gradients accumulated step by step."""
    xp, hs, gh_n, rz, ns = saved
    T, D, B, H = ns.shape
    W_hh = p["W_hh"]
    buffers = buffers or _Buffers()
    d_gh = buffers.get("d_gh", (D, B, 3 * H), xp)  # δ(W_hh h + b_hh) of the current step
    d_gi = buffers.get("d_gi", (D, B, 3 * H), xp)  # δ(W_ih x + b_ih): r and z as d_gh, n without the r factor
    grads = {"W_ih": torch.zeros_like(p["W_ih"]), "W_hh": torch.zeros_like(W_hh)}
    sum_gh, sum_gi = buffers.get("sum_gh", (D, B, 3 * H), xp).zero_(), buffers.get("sum_gi", (D, B, 3 * H), xp).zero_()
    dh = d_final.view(-1, B, directions, H).transpose(1, 2).reshape(D, B, H)
    for t in range(T - 1, -1, -1):
        if d_outputs is not None:
            dh = dh + d_outputs[t]                                                 # δ on the state after step t
        r, z, n = rz[t, ..., :H], rz[t, ..., H:], ns[t]
        dn_post = torch.addcmul(dh, dh, z, value=-1)                               # δn = δh (1 - z)
        d_n = torch.addcmul(dn_post, dn_post * n, n, value=-1, out=d_gi[..., 2 * H:])  # δ(pre n) = δn (1 - n²)
        torch.mul(d_n, r, out=d_gh[..., 2 * H:])
        d_r = d_gh[..., 2 * H:] * gh_n[t]                                          # δ(pre n) r (W_hn h + b_hn)
        torch.addcmul(d_r, d_r, r, value=-1, out=d_gh[..., :H])                   # ... (1 - r)
        d_z = (hs[t] - n).mul_(z)
        d_gh[..., H:2 * H] = torch.addcmul(d_z, d_z, z, value=-1).mul_(dh)        # δh (h - n) z (1 - z)
        d_gi[..., :2 * H] = d_gh[..., :2 * H]
        grads["W_hh"].baddbmm_(d_gh.transpose(1, 2), hs[t])
        grads["W_ih"].baddbmm_(d_gi.transpose(1, 2), xp[t])
        sum_gh += d_gh
        sum_gi += d_gi
        if t > 0:
            dh = torch.baddbmm(dh * z, d_gh, W_hh)
    grads["b_hh"], grads["b_ih"] = sum_gh.sum(1), sum_gi.sum(1)
    return grads


def _bce_grad(logits: torch.Tensor, y: torch.Tensor, pos_weight, w: torch.Tensor | None = None) -> torch.Tensor:
    """d mean-BCE(logits, y) / d logits, per member (M, B): what nn.BCEWithLogitsLoss backpropagates; with
    weights w (M, B), of the weighted mean Σ w_i ℓ_i / Σ w_i (0 where all w_i are 0), as train_classifier."""
    p = torch.sigmoid(logits)
    if pos_weight is None:
        d = p - y
    else:
        d = p * (1 + (pos_weight - 1) * y) - pos_weight * y
    if w is None:
        return d / logits.shape[1]
    return d * w / w.sum(1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)


class _Adam:
    """torch.optim.Adam (single-tensor form, no amsgrad) over the stacked tensors: every member its own state."""

    def __init__(self, tensors: dict, train: TrainConfig, betas=(0.9, 0.999), eps=1e-8):
        self.lr, self.wd, self.betas, self.eps = train.lr, train.weight_decay, betas, eps
        self.m = {k: torch.zeros_like(v) for k, v in tensors.items()}
        self.v = {k: torch.zeros_like(v) for k, v in tensors.items()}
        self.step_count = 0

    def step(self, tensors: dict, grads: dict):
        self.step_count += 1
        b1, b2 = self.betas
        bias1, bias2_sqrt = 1 - b1 ** self.step_count, (1 - b2 ** self.step_count) ** 0.5
        for k, param in tensors.items():
            grad = grads[k] if self.wd == 0 else grads[k].add(param, alpha=self.wd)
            self.m[k].lerp_(grad, 1 - b1)
            self.v[k].mul_(b2).addcmul_(grad, grad, value=1 - b2)
            denom = (self.v[k].sqrt() / bias2_sqrt).add_(self.eps)
            param.addcdiv_(self.m[k], denom, value=-self.lr / bias1)

    def keep(self, rows_member: torch.Tensor, rows_direction: torch.Tensor):
        for state in (self.m, self.v):
            for k in state:
                state[k] = state[k][rows_direction if _per_direction(k) else rows_member]


def train_group(train_sets: list, X_val, y_val, config: ClassifierConfig = ClassifierConfig(),
                train: TrainConfig = TrainConfig(), seeds=None, device=None, progress: bool = False,
                max_members: int = 48) -> list[tuple[RNNClassifier, dict]]:
    """`train_classifier` for every (X_train, y_train) or (X_train, y_train, sample_weight) in `train_sets`
    (seed `seeds[i]`), as batched groups.

    Members are grouped by training-set size (they then share the number of batches per epoch), at most
    `max_members` at a time. Returns [(model, history)] in the order given, equal to training each one
    with `train_classifier(..., seed=seeds[i], sample_weight=...)` up to float rounding.
    """
    if not supports(config):
        raise ValueError(f"grouped training covers 1-layer GRU classifiers, got {config}; "
                         "use tardiff.classifier.train_classifier")
    seeds = list(range(len(train_sets))) if seeds is None else list(seeds)
    if len(seeds) != len(train_sets):
        raise ValueError(f"{len(train_sets)} training sets but {len(seeds)} seeds")
    X_val, y_val = validation_set(X_val, y_val, train)
    members = [_member(i, train_set, X_val) for i, train_set in enumerate(train_sets)]
    device = get_device(device)
    results: list = [None] * len(members)
    groups = _size_groups([len(X) for X, _, _ in members], max_members)
    bar = tqdm(total=len(members), desc="classifiers (grouped)", disable=not progress, leave=False)
    for group in groups:
        for i, out in zip(group, _train_one_group([members[i] for i in group], [seeds[i] for i in group],
                                                  X_val, y_val, config, train, device)):
            results[i] = out
        bar.update(len(group))
    bar.close()
    return results


def _member(i: int, train_set, X_val: torch.Tensor) -> tuple:
    """Checked (X, y, w) of train_sets[i], given as (X, y) (w None) or (X, y, w)."""
    if not isinstance(train_set, (tuple, list)) or len(train_set) not in (2, 3):
        raise ValueError(f"train_sets[{i}] must be (X, y) or (X, y, sample_weight)")
    X, y = training_set(train_set[0], train_set[1], X_val, f"train_sets[{i}] X", f"train_sets[{i}] y")
    w = train_set[2] if len(train_set) == 3 else None
    return X, y, (None if w is None else _as_weights(w, len(X), f"train_sets[{i}] sample_weight"))


def _size_groups(sizes: list[int], max_members: int) -> list[list[int]]:
    """Member indices grouped by training-set size (members of a group share the batches per epoch), at most
    `max_members` per group."""
    by_size: dict = {}
    for i, n in enumerate(sizes):
        by_size.setdefault(n, []).append(i)
    return [idx[k:k + max_members] for idx in by_size.values() for k in range(0, len(idx), max_members)]


def _train_one_group(members, seeds, X_val, y_val, config, train, device):
    start = time.perf_counter()
    n_features = X_val.shape[-1]
    models, dropout_generators = [], []
    for seed in seeds:  # the same initialisation and dropout stream as train_classifier(seed=seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            models.append(build_classifier(n_features, config))
            generator = torch.Generator()
            generator.set_state(torch.get_rng_state())
        dropout_generators.append(generator)
    order_generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    dirs = 2 if config.bidirectional else 1
    params = _stacked(models, device)
    adam = _Adam(params, train)
    pos_weight = None if train.pos_weight is None else torch.tensor(train.pos_weight, device=device)
    X_all = torch.stack([X for X, _, _ in members]).to(device)     # (M, N, T, F)
    y_all = torch.stack([y for _, y, _ in members]).to(device)     # (M, N)
    X_val_d = X_val.to(device)
    N, M = X_all.shape[1], len(members)
    weights = None  # or (w (M, N), which members are weighted (M,)); an unweighted member's w is never used
    if any(w is not None for _, _, w in members):
        weights = (torch.stack([torch.ones(N) if w is None else w for _, _, w in members]).to(device),
                   torch.as_tensor([w is not None for _, _, w in members], device=device))
    # train_loss: the epoch's summed (weighted) loss over N, or over Σ w for a weighted member
    loss_norm = [N if w is None else float(w.double().sum()) for _, _, w in members]
    sign = -1.0 if train.monitor == "loss" else 1.0
    active = list(range(M))                   # members still training, in stack order
    best = [-float("inf")] * M
    best_state: list = [None] * M
    stale = [0] * M
    histories = [{"train_loss": [], "val_loss": [], "val_auroc": [], "val_auprc": [], "best_epoch": -1,
                  "best_score": float("nan"), "epochs_run": 0} for _ in range(M)]
    p_drop = config.dropout
    buffers = _Buffers()
    for epoch in range(train.max_epochs):
        orders = torch.stack([torch.randperm(N, generator=order_generators[i]) for i in active]).to(device)
        total = _epoch(params, adam, X_all, y_all, torch.as_tensor(active, device=device), orders, train.batch_size,
                       dirs, p_drop, [dropout_generators[i] for i in active], pos_weight, buffers, weights)
        val_logits = _val_logits(params, X_val_d, dirs)                              # (M, N_val)
        finished = []
        for k, i in enumerate(active):
            history = histories[i]
            val_loss = F.binary_cross_entropy_with_logits(
                val_logits[k].cpu(), y_val, pos_weight=None if pos_weight is None else pos_weight.cpu()).item()
            auroc, auprc = _metrics(y_val.numpy(), torch.sigmoid(val_logits[k]).cpu().numpy())
            history["train_loss"].append(float(total[k]) / loss_norm[i])
            history["val_loss"].append(val_loss)
            history["val_auroc"].append(auroc)
            history["val_auprc"].append(auprc)
            history["epochs_run"] = epoch + 1
            score = {"loss": val_loss, "auroc": auroc, "auprc": auprc}[train.monitor]
            if sign * score > best[i]:
                best[i], stale[i] = sign * score, 0
                best_state[i] = _member_tensors(params, k, dirs)
                history["best_epoch"], history["best_score"] = epoch, score
            else:
                stale[i] += 1
            if stale[i] >= train.patience:
                finished.append(k)
        if finished:
            keep = [k for k in range(len(active)) if k not in finished]
            if not keep:
                break
            rows_member = torch.as_tensor(keep, device=device)
            rows_direction = (rows_member[:, None] * dirs + torch.arange(dirs, device=device)).reshape(-1)
            params = {k: v[rows_direction if _per_direction(k) else rows_member] for k, v in params.items()}
            adam.keep(rows_member, rows_direction)
            active = [active[k] for k in keep]
    wall = time.perf_counter() - start
    out = []
    for i, model in enumerate(models):
        if best_state[i] is not None:
            _load_member(model, best_state[i], dirs)
        model.to(device).eval()
        histories[i]["wall_time_s"] = wall / M   # the group's time, shared
        out.append((model, histories[i]))
    return out


def _epoch(params, adam, X_all, y_all, rows, orders, batch_size, dirs, p_drop, dropout_generators, pos_weight,
           buffers, weights=None) -> torch.Tensor:
    """One epoch of mini-batch Adam for the members `rows` of X_all / y_all, batch order `orders` (M, N);
    returns each member's summed training loss (M,), float64 on the CPU. `weights` (w_all (M_all, N), which
    members are weighted (M_all,)): those members' loss is the weighted mean, Σ w_i ℓ_i summed."""
    N = orders.shape[1]
    total = torch.zeros(len(rows), dtype=torch.float64)
    for s in range(0, N, batch_size):
        idx = orders[:, s:s + batch_size]                                         # (M, B)
        xb, yb = X_all[rows[:, None], idx], y_all[rows[:, None], idx]             # (M, B, T, F), (M, B)
        final, saved = _forward(params, xb, dirs, keep=True, buffers=buffers)     # (M, B, dirs*H)
        if p_drop > 0:
            mask = torch.stack([torch.empty(final.shape[1:]).bernoulli_(1 - p_drop, generator=generator)
                                for generator in dropout_generators]).div_(1 - p_drop).to(final.device)
            features = final * mask
        else:
            mask, features = None, final
        logits = torch.baddbmm(params["b_head"][:, None, None], features, params["w_head"].unsqueeze(-1)).squeeze(-1)
        per_stay = F.binary_cross_entropy_with_logits(logits, yb, pos_weight=pos_weight, reduction="none")
        batch_total = per_stay.mean(1).detach().double().cpu() * idx.shape[1]
        d_logits = _bce_grad(logits, yb, pos_weight)                              # (M, B)
        if weights is not None:  # weighted members only: the others keep the unweighted arithmetic exactly
            wb, weighted = weights[0][rows[:, None], idx], weights[1][rows]       # (M, B), (M,)
            batch_total = torch.where(weighted.cpu(), (wb * per_stay).sum(1).detach().double().cpu(), batch_total)
            d_logits = torch.where(weighted[:, None], _bce_grad(logits, yb, pos_weight, wb), d_logits)
        total += batch_total
        d_final = d_logits.unsqueeze(-1) * params["w_head"].unsqueeze(1)         # (M, B, dirs*H)
        if mask is not None:
            d_final = d_final * mask
        grads = _backward(params, saved, d_final, dirs, buffers)
        grads["w_head"] = torch.bmm(d_logits.unsqueeze(1), features).squeeze(1)
        grads["b_head"] = d_logits.sum(1)
        adam.step(params, grads)
    return total


def fixed_epoch_logits(train_sets: list, X_eval: list, hidden: int, epochs: int, batch_size: int, lr: float,
                       seeds: list, orders: list, device=None, max_members: int | None = None) -> list[torch.Tensor]:
    """Small unidirectional GRU classifiers (hidden `hidden`, one logit from the last state, no dropout) each
    trained on its (X, y) for exactly `epochs` epochs of Adam on the mean BCE, as batched groups; returns each
    one's logits on its own X_eval[i].

    `torch.manual_seed(seeds[i])` initialises member i (as building an nn.GRU then an nn.Linear under that
    seed does) and `orders[i]()` gives its batch order of every epoch: what `tardiff.fidelity`'s
    discriminators are, so they train together and equal one-by-one training up to float rounding.
    """
    if not len(train_sets) == len(X_eval) == len(seeds) == len(orders):
        raise ValueError(f"need one X_eval, seed and order per training set: got {len(train_sets)} training sets, "
                         f"{len(X_eval)} X_eval, {len(seeds)} seeds and {len(orders)} orders")
    device = get_device(device)
    config = ClassifierConfig(rnn="gru", hidden=hidden, layers=1, dropout=0.0, bidirectional=False)
    train = TrainConfig(lr=lr, batch_size=batch_size, max_epochs=epochs)
    max_members = max_members or default_group_size(device)
    evals = [_as_tensor(X, f"X_eval[{i}]") for i, X in enumerate(X_eval)]
    checked = [training_set(X, y, evals[i], f"train_sets[{i}] X", f"train_sets[{i}] y")
               for i, (X, y) in enumerate(train_sets)]
    out: list = [None] * len(checked)
    for group in _size_groups([len(X) for X, _ in checked], max_members):
        models = []
        for i in group:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seeds[i])
                models.append(build_classifier(checked[i][0].shape[-1], config))
        params = _stacked(models, device)
        adam = _Adam(params, train)
        X_all = torch.stack([checked[i][0] for i in group]).to(device)
        y_all = torch.stack([checked[i][1] for i in group]).to(device)
        rows = torch.arange(len(group), device=device)
        buffers = _Buffers()
        for _ in range(epochs):
            order = torch.stack([torch.as_tensor(orders[i]()) for i in group]).to(device)
            _epoch(params, adam, X_all, y_all, rows, order, batch_size, 1, 0.0, [], None, buffers)
        with torch.no_grad():
            for k, i in enumerate(group):
                member = {name: v[k:k + 1] for name, v in params.items()}
                out[i] = _val_logits(member, evals[i].to(device), 1)[0].cpu()
    return out


def fixed_epoch_next_step(train_sets: list, X_eval, hidden: int, epochs: int, batch_size: int, lr: float,
                          seeds: list, orders: list, device=None, max_members: int | None = None) -> list[torch.Tensor]:
    """Small unidirectional GRU regressors (hidden `hidden`, a linear head on every state) each trained on its
    X (N, T, F) to predict step t+1 from steps <= t (mean L1 over steps and channels), exactly `epochs` epochs
    of Adam, as batched groups; returns each one's predictions (N_eval, T-1, F) from X_eval[:, :-1].

    `torch.manual_seed(seeds[i])` initialises member i (as building an nn.GRU then an nn.Linear under that seed
    does) and `orders[i]()` gives its batch order of every epoch: `tardiff.fidelity`'s predictive-score models,
    equal to one-by-one training up to float rounding.
    """
    if not len(train_sets) == len(seeds) == len(orders):
        raise ValueError(f"need one seed and order per training set: got {len(train_sets)} training sets, "
                         f"{len(seeds)} seeds and {len(orders)} orders")
    device = get_device(device)
    train = TrainConfig(lr=lr, batch_size=batch_size, max_epochs=epochs)
    max_members = max_members or default_group_size(device)
    sets = [_as_tensor(X, f"train_sets[{i}]") for i, X in enumerate(train_sets)]
    X_eval = _as_tensor(X_eval, "X_eval")
    n_channels = X_eval.shape[-1]
    for i, X in enumerate(sets):
        if X.shape[1:] != X_eval.shape[1:]:
            raise ValueError(f"train_sets[{i}] has shape {tuple(X.shape)}; need (N, {X_eval.shape[1]}, {n_channels}) "
                             "as X_eval")
    out: list = [None] * len(sets)
    for group in _size_groups([len(X) for X in sets], max_members):
        rnns, heads = [], []
        for i in group:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seeds[i])
                rnns.append(nn.GRU(n_channels, hidden, batch_first=True))
                heads.append(nn.Linear(hidden, n_channels))
        params = {k: v.detach().clone().to(device) for k, v in _stacked_gru(rnns).items()}
        params["W_out"] = torch.stack([h.weight.detach() for h in heads]).to(device)   # (M, F, H)
        params["b_out"] = torch.stack([h.bias.detach() for h in heads]).to(device)     # (M, F)
        adam = _Adam(params, train)
        X_all = torch.stack([sets[i] for i in group]).to(device)                       # (M, N, T, F)
        rows = torch.arange(len(group), device=device)[:, None]
        buffers = _Buffers()
        for _ in range(epochs):
            order = torch.stack([torch.as_tensor(orders[i]()) for i in group]).to(device)
            for s in range(0, order.shape[1], batch_size):
                adam.step(params, _next_step_grads(params, X_all[rows, order[:, s:s + batch_size]], buffers))
        with torch.no_grad():
            predictions = torch.cat([_next_step_predictions(params, X_eval[s:s + 2048, :-1].to(device), False)[0]
                                     for s in range(0, len(X_eval), 2048)], 1)             # (M, N_eval, T-1, F)
        for k, i in enumerate(group):
            out[i] = predictions[k].cpu()
    return out


def _next_step_predictions(params: dict, x: torch.Tensor, keep: bool, buffers: _Buffers | None = None):
    """Every member's prediction of step t+1 from each state (M, B, T, F) on x (B, T, F) or (M, B, T, F);
    also, for the backward if `keep`, what _forward saved and the states (M, T*B, H), time-major."""
    M = params["W_out"].shape[0]
    x = x.expand(M, *x.shape) if x.ndim == 3 else x
    _, saved = _forward(params, x, 1, keep=keep, buffers=buffers)
    states = saved[1][1:].transpose(0, 1).reshape(M, -1, saved[1].shape[-1])          # (M, T*B, H)
    pred = torch.baddbmm(params["b_out"].unsqueeze(1), states, params["W_out"].transpose(1, 2))  # (M, T*B, F)
    return pred.view(M, x.shape[2], x.shape[1], -1).transpose(1, 2), saved, states


def _next_step_grads(params: dict, xb: torch.Tensor, buffers: _Buffers) -> dict:
    """Gradients of each member's mean L1 loss of predicting xb[:, :, t+1] from xb[:, :, :t+1], (M, B, T, F)."""
    pred, saved, states = _next_step_predictions(params, xb[:, :, :-1], True, buffers)  # (M, B, T-1, F)
    M, B, T, F_ = pred.shape
    d_pred = torch.sign(pred - xb[:, :, 1:]).div_(B * T * F_).transpose(1, 2).reshape(M, T * B, F_)
    d_states = torch.bmm(d_pred, params["W_out"]).view(M, T, B, -1).transpose(0, 1)   # (T, M, B, H)
    grads = _backward(params, saved, states.new_zeros(M, B, states.shape[-1]), 1, buffers, d_outputs=d_states)
    grads["W_out"] = torch.bmm(d_pred.transpose(1, 2), states)
    grads["b_out"] = d_pred.sum(1)
    return grads


@torch.no_grad()
def _val_logits(params: dict, X_val: torch.Tensor, dirs: int, batch_size: int = 1024) -> torch.Tensor:
    """Every member's logits on the (shared) validation stays, (M, N_val), eval mode (no dropout)."""
    M = params["w_head"].shape[0]
    out = []
    for s in range(0, len(X_val), batch_size):
        xb = X_val[s:s + batch_size].unsqueeze(0).expand(M, -1, -1, -1)
        final, _ = _forward(params, xb, dirs, keep=False)
        out.append(torch.baddbmm(params["b_head"][:, None, None], final, params["w_head"].unsqueeze(-1)).squeeze(-1))
    return torch.cat(out, 1)


def _member_tensors(params: dict, k: int, dirs: int) -> dict:
    return {name: (v[k * dirs:(k + 1) * dirs] if _per_direction(name) else v[k]).detach().clone().cpu()
            for name, v in params.items()}


def _load_member(model: RNNClassifier, state: dict, dirs: int):
    """Stacked-layout tensors of one member -> the nn.GRU / nn.Linear state dict of `model`."""
    suffixes = [""] + (["_reverse"] if dirs == 2 else [])
    sd = {}
    for d, s in enumerate(suffixes):
        sd[f"rnn.weight_ih_l0{s}"] = state["W_ih"][d]
        sd[f"rnn.weight_hh_l0{s}"] = state["W_hh"][d]
        sd[f"rnn.bias_ih_l0{s}"] = state["b_ih"][d]
        sd[f"rnn.bias_hh_l0{s}"] = state["b_hh"][d]
    sd["head.weight"] = state["w_head"].reshape(1, -1)
    sd["head.bias"] = state["b_head"].reshape(1)
    model.load_state_dict(sd)
