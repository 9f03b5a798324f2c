"""The downstream classifier f_theta: a bidirectional RNN over (B, T, F) with one logit."""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from sklearn.metrics import average_precision_score, roc_auc_score
from torch import nn
from tqdm import tqdm

from tardiff.settings import check, count, fraction, number, one_of, optional, positive
from tardiff.utils import get_device, save_model


@dataclass
class ClassifierConfig:
    rnn: str = "gru"          # "gru" or "lstm"; "cnn": a 1D CNN (a downstream model unlike f_theta)
    hidden: int = 256
    layers: int = 2
    dropout: float = 0.2
    bidirectional: bool = True

    RANGES: ClassVar[dict] = {"rnn": one_of("gru", "lstm", "cnn"), "hidden": count(), "layers": count(),
                              "dropout": fraction()}

    def __post_init__(self):
        check(self)


class RNNClassifier(nn.Module):
    """Bidirectional GRU/LSTM; the last layer's final hidden states (both directions) -> one logit.

    Attributes `rnn` (nn.GRU/nn.LSTM, batch_first) and `head` (nn.Linear) are the
    layout `tardiff.guidance` reads for its functional, per-sample form.
    """

    def __init__(self, n_features: int, config: ClassifierConfig = ClassifierConfig()):
        super().__init__()
        if config.rnn not in ("gru", "lstm"):
            raise ValueError(f"ClassifierConfig.rnn must be 'gru', 'lstm' or 'cnn', got {config.rnn!r}")
        self.config = config
        self.n_features = n_features
        rnn_cls = nn.GRU if config.rnn == "gru" else nn.LSTM
        self.rnn = rnn_cls(n_features, config.hidden, num_layers=config.layers, batch_first=True,
                           dropout=config.dropout if config.layers > 1 else 0.0,
                           bidirectional=config.bidirectional)
        directions = 2 if config.bidirectional else 1
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(directions * config.hidden, 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        _, h_n = self.rnn(x)  # (layers * directions, B, H)
        if isinstance(h_n, tuple):  # LSTM returns (h_n, c_n)
            h_n = h_n[0]
        directions = 2 if self.config.bidirectional else 1
        return torch.cat(list(h_n[-directions:]), dim=-1)  # (B, directions * H)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x))).squeeze(-1)  # (B,)


class CNNClassifier(nn.Module):
    """Two 1D convolutions over time, mean and max pooled -> one logit.

    A second downstream architecture, unlike the GRU f_theta: samples that only fool f_theta's
    recurrence should not help it.
    """

    def __init__(self, n_features: int, config: ClassifierConfig):
        super().__init__()
        self.config = config
        self.n_features = n_features
        self.conv = nn.Sequential(nn.Conv1d(n_features, config.hidden, 3, padding=1), nn.ReLU(),
                                  nn.Conv1d(config.hidden, config.hidden, 3, padding=1), nn.ReLU())
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(2 * config.hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x.transpose(1, 2))                                 # (B, hidden, T)
        pooled = torch.cat([h.mean(-1), h.amax(-1)], dim=-1)            # (B, 2 hidden)
        return self.head(self.dropout(pooled)).squeeze(-1)              # (B,)


def build_classifier(n_features: int, config: ClassifierConfig) -> nn.Module:
    if config.rnn == "cnn":
        return CNNClassifier(n_features, config)
    return RNNClassifier(n_features, config)


# --------------------------------------------------------------------------- training


@dataclass
class TrainConfig:
    lr: float = 1e-3
    batch_size: int = 256
    max_epochs: int = 40
    patience: int = 5                # epochs without improvement of `monitor` before stopping
    monitor: str = "auprc"           # "auprc", "auroc" or "loss" on the validation set
    weight_decay: float = 0.0
    pos_weight: float | None = None  # BCE weight of positives; None = unweighted

    RANGES: ClassVar[dict] = {"lr": positive(), "batch_size": count(), "max_epochs": count(), "patience": count(),
                              "monitor": one_of("auprc", "auroc", "loss"), "weight_decay": number(0),
                              "pos_weight": optional(positive())}

    def __post_init__(self):
        check(self)


def _as_tensor(X, name: str) -> torch.Tensor:
    """(N, T, F) float32 tensor on CPU; rejects what would silently train on garbage."""
    X = torch.as_tensor(np.asarray(X) if not torch.is_tensor(X) else X).detach().cpu().float()
    if X.ndim != 3:
        raise ValueError(f"{name} must be (stays, hours, channels), got shape {tuple(X.shape)}")
    if X.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    if not torch.isfinite(X).all():
        bad = int((~torch.isfinite(X)).sum())
        raise ValueError(f"{name} has {bad} NaN/inf values; impute first (tardiff.stays.Preprocessor)")
    return X


def _as_labels(y, n: int, name: str) -> torch.Tensor:
    y = torch.as_tensor(np.asarray(y) if not torch.is_tensor(y) else y).detach().cpu().reshape(-1)
    if y.shape[0] != n:
        raise ValueError(f"{name} has {y.shape[0]} labels but X has {n} stays")
    if not bool(((y == 0) | (y == 1)).all()):
        raise ValueError(f"{name} must hold 0/1 labels, got values {torch.unique(y)[:10].tolist()}")
    return y.float()


def _as_weights(w, n: int, name: str = "sample_weight") -> torch.Tensor:
    """(N,) float32 loss weights per stay: finite, >= 0 and not all zero (the loss is their weighted mean)."""
    try:
        w = (w.detach().cpu() if torch.is_tensor(w) else torch.as_tensor(np.asarray(w, dtype=np.float64))).double()
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be numbers, one per stay: {error}") from None
    if w.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), one weight per stay, got {tuple(w.shape)}")
    if not torch.isfinite(w).all():
        raise ValueError(f"{name} has {int((~torch.isfinite(w)).sum())} NaN/inf values")
    if (w < 0).any():
        raise ValueError(f"{name} must be >= 0, got minimum {float(w.min())}")
    if not (w > 0).any():
        raise ValueError(f"{name} is all zero: no stay would count in the loss")
    return w.float()


def _weighted_mean_bce(logits: torch.Tensor, y: torch.Tensor, w: torch.Tensor, pos_weight) -> tuple:
    """(Σ_i w_i ℓ_i / Σ_i w_i, Σ_i w_i ℓ_i) over a batch, ℓ_i the per-stay BCE; 0 where all w_i are 0."""
    weighted = (w * nn.functional.binary_cross_entropy_with_logits(logits, y, pos_weight=pos_weight,
                                                                   reduction="none")).sum()
    return weighted / w.sum().clamp_min(torch.finfo(w.dtype).tiny), weighted


def _metrics(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    if len(np.unique(y)) < 2:
        return float("nan"), float("nan")
    return float(roc_auc_score(y, p)), float(average_precision_score(y, p))


@torch.no_grad()
def _logits(model: nn.Module, X: torch.Tensor, batch_size: int, device) -> torch.Tensor:
    model.eval()
    out = [model(X[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(X), batch_size)]
    return torch.cat(out)  # (N,)


def predict_proba(model: RNNClassifier, X, batch_size: int = 1024, device=None) -> np.ndarray:
    """P(y=1) per stay, (N,), in eval mode without gradients."""
    device = get_device(device) if device is not None else next(model.parameters()).device
    model.to(device)
    X = _as_tensor(X, "X")
    if X.shape[-1] != model.n_features:
        raise ValueError(f"X has {X.shape[-1]} channels but the classifier was built for {model.n_features}")
    return torch.sigmoid(_logits(model, X, batch_size, device)).numpy()


def validation_set(X_val, y_val, train: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Checked validation tensors: early stopping on `train.monitor` needs both classes unless it is the loss."""
    X_val = _as_tensor(X_val, "X_val")
    y_val = _as_labels(y_val, len(X_val), "y_val")
    if train.monitor != "loss" and len(torch.unique(y_val)) < 2:
        raise ValueError(f"y_val holds a single class, so {train.monitor} is undefined; "
                         "use a stratified split or TrainConfig(monitor='loss')")
    return X_val, y_val


def training_set(X_train, y_train, X_val: torch.Tensor, name: str = "X_train", label_name: str = "y_train"):
    """Checked training tensors: both classes, and stays shaped like the (checked) validation stays."""
    X_train = _as_tensor(X_train, name)
    y_train = _as_labels(y_train, len(X_train), label_name)
    if len(torch.unique(y_train)) < 2:
        raise ValueError(f"{label_name} holds a single class ({int(y_train[0])}); a classifier needs both 0 and 1")
    if X_val.shape[1:] != X_train.shape[1:]:
        raise ValueError(f"X_val is {tuple(X_val.shape[1:])} per stay but {name} is {tuple(X_train.shape[1:])}")
    return X_train, y_train


def train_classifier(X_train, y_train, X_val, y_val, config: ClassifierConfig = ClassifierConfig(),
                     train: TrainConfig = TrainConfig(), seed: int = 0, device=None,
                     progress: bool = True, on_epoch=None, sample_weight=None) -> tuple[RNNClassifier, dict]:
    """Train f_theta with BCE + Adam and early stopping on `train.monitor`; returns the best epoch's model.

    Deterministic on CPU for a seed: init, dropout and batch order all come from `seed`,
    without touching the caller's global RNG state. `on_epoch(epoch, model)` sees the model after
    every epoch (TracIn keeps checkpoints of the run this way). `sample_weight` (N,) makes a batch's
    loss (and the reported train_loss) the weighted mean Σ w_i ℓ_i / Σ w_i; validation stays unweighted.
    """
    X_val, y_val = validation_set(X_val, y_val, train)
    X_train, y_train = training_set(X_train, y_train, X_val)
    w_train = None if sample_weight is None else _as_weights(sample_weight, len(X_train))

    device = get_device(device)
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_classifier(X_train.shape[-1], config).to(device)
        generator = torch.Generator().manual_seed(seed)
        optimizer = torch.optim.Adam(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
        pos_weight = None if train.pos_weight is None else torch.tensor(train.pos_weight, device=device)
        loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
        history = {"train_loss": [], "val_loss": [], "val_auroc": [], "val_auprc": [],
                   "best_epoch": -1, "best_score": float("nan"), "epochs_run": 0}
        sign = -1.0 if train.monitor == "loss" else 1.0  # always maximise sign * score
        best, best_state, stale = -float("inf"), None, 0
        bar = tqdm(range(train.max_epochs), desc="classifier", disable=not progress, leave=False)
        for epoch in bar:
            model.train()
            order = torch.randperm(len(X_train), generator=generator)
            total = 0.0
            for i in range(0, len(order), train.batch_size):
                idx = order[i:i + train.batch_size]
                xb, yb = X_train[idx].to(device), y_train[idx].to(device)
                if w_train is None:
                    loss = loss_fn(model(xb), yb)
                    batch_total = loss.item() * len(idx)
                else:
                    loss, weighted = _weighted_mean_bce(model(xb), yb, w_train[idx].to(device), pos_weight)
                    batch_total = weighted.item()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += batch_total
            logits = _logits(model, X_val, 1024, device)
            val_loss = nn.functional.binary_cross_entropy_with_logits(
                logits, y_val, pos_weight=None if pos_weight is None else pos_weight.cpu()).item()
            auroc, auprc = _metrics(y_val.numpy(), torch.sigmoid(logits).numpy())
            history["train_loss"].append(total / (len(X_train) if w_train is None else float(w_train.double().sum())))
            history["val_loss"].append(val_loss)
            history["val_auroc"].append(auroc)
            history["val_auprc"].append(auprc)
            history["epochs_run"] = epoch + 1
            if on_epoch is not None:
                on_epoch(epoch, model)
            score = {"loss": val_loss, "auroc": auroc, "auprc": auprc}[train.monitor]
            if sign * score > best:
                best, stale = sign * score, 0
                best_state = copy.deepcopy(model.state_dict())
                history["best_epoch"], history["best_score"] = epoch, score
            else:
                stale += 1
            bar.set_postfix(loss=f"{history['train_loss'][-1]:.3f}", auroc=f"{auroc:.3f}", auprc=f"{auprc:.3f}")
            if stale >= train.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    history["wall_time_s"] = time.perf_counter() - start
    return model, history


def save_classifier(model: RNNClassifier, path, **extra) -> Path:
    """Config + weights + whatever the caller wants to remember (metrics, split, seed)."""
    return save_model(path, model, "config", **extra)


def load_classifier(path, device=None, with_extra: bool = False):
    """Rebuild a saved classifier on `device` (eval mode); `with_extra=True` also returns the saved extras."""
    blob = torch.load(path, map_location="cpu", weights_only=False)
    model = build_classifier(blob["n_features"], ClassifierConfig(**blob["config"]))
    model.load_state_dict(blob["state_dict"])
    model.to(get_device(device)).eval()
    return (model, blob.get("extra", {})) if with_extra else model
