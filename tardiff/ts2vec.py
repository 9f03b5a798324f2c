"""TS2Vec (Yue et al., AAAI 2022): the encoder context-FID embeds series with, as Diffusion-TS's code trains it.

Rebuilt from the copy in Y-debug-sys/Diffusion-TS (`Models/ts2vec/`, itself zhihanyue/ts2vec, MIT), with the
settings `Utils/context_fid.py` uses: output 320, hidden 64, depth 10, batch 8, AdamW lr 1e-3, 200 iterations
for data of at most 100,000 values and 600 otherwise; two random overlapping crops per batch, a binomial
timestamp mask on the input projection, the hierarchical (instance + temporal) contrastive loss; the encoder
that embeds is the running equal-weight average of every iterate (torch's `AveragedModel`), and a series'
embedding is the max over its time steps of the averaged encoder's output in eval mode.

Departures: every random draw (batch order, crops, masks, dropout) comes from generators seeded by `seed`
(the original reads NumPy's and torch's global state); embeddings are computed in batches of 1,024 instead of 8
(eval mode has no batch-dependent operation, so the values are the same).
"""
from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from tardiff.utils import get_device


class _SamePadConv(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int, dilation: int = 1):
        super().__init__()
        field = (kernel - 1) * dilation + 1
        self.conv = nn.Conv1d(c_in, c_out, kernel, padding=field // 2, dilation=dilation)
        self.remove = 1 if field % 2 == 0 else 0

    def forward(self, x):
        out = self.conv(x)
        return out[:, :, :-self.remove] if self.remove else out


class _ConvBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int, dilation: int, final: bool = False):
        super().__init__()
        self.conv1 = _SamePadConv(c_in, c_out, kernel, dilation)
        self.conv2 = _SamePadConv(c_out, c_out, kernel, dilation)
        self.projector = nn.Conv1d(c_in, c_out, 1) if c_in != c_out or final else None

    def forward(self, x):
        residual = x if self.projector is None else self.projector(x)
        return self.conv2(F.gelu(self.conv1(F.gelu(x)))) + residual


class TSEncoder(nn.Module):
    def __init__(self, n_features: int, output_dims: int = 320, hidden_dims: int = 64, depth: int = 10):
        super().__init__()
        self.input_fc = nn.Linear(n_features, hidden_dims)
        channels = [hidden_dims] * depth + [output_dims]
        self.blocks = nn.Sequential(*[_ConvBlock(channels[i - 1] if i else hidden_dims, channels[i], 3, 2 ** i,
                                                 final=i == len(channels) - 1) for i in range(len(channels))])
        self.repr_dropout = nn.Dropout(0.1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.input_fc(x)                                              # (B, T, hidden)
        if mask is not None:                                              # False: the timestamp is masked out
            h = h * mask[..., None]
        return self.repr_dropout(self.blocks(h.transpose(1, 2))).transpose(1, 2)  # (B, T, output)


def _instance_loss(z1, z2):
    B = z1.size(0)
    if B == 1:
        return z1.new_tensor(0.0)
    z = torch.cat([z1, z2], dim=0).transpose(0, 1)                        # (T, 2B, C)
    sim = z @ z.transpose(1, 2)                                           # (T, 2B, 2B)
    logits = torch.tril(sim, diagonal=-1)[:, :, :-1] + torch.triu(sim, diagonal=1)[:, :, 1:]
    logits = -F.log_softmax(logits, dim=-1)
    i = torch.arange(B, device=z1.device)
    return (logits[:, i, B + i - 1].mean() + logits[:, B + i, i].mean()) / 2


def _temporal_loss(z1, z2):
    T = z1.size(1)
    if T == 1:
        return z1.new_tensor(0.0)
    z = torch.cat([z1, z2], dim=1)                                        # (B, 2T, C)
    sim = z @ z.transpose(1, 2)
    logits = torch.tril(sim, diagonal=-1)[:, :, :-1] + torch.triu(sim, diagonal=1)[:, :, 1:]
    logits = -F.log_softmax(logits, dim=-1)
    t = torch.arange(T, device=z1.device)
    return (logits[:, t, T + t - 1].mean() + logits[:, T + t, t].mean()) / 2


def hierarchical_contrastive_loss(z1: torch.Tensor, z2: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """Instance and temporal contrast at every scale of a max-pooling pyramid over time (temporal_unit 0)."""
    loss, depth = z1.new_tensor(0.0), 0
    while z1.size(1) > 1:
        loss = loss + alpha * _instance_loss(z1, z2) + (1 - alpha) * _temporal_loss(z1, z2)
        depth += 1
        z1 = F.max_pool1d(z1.transpose(1, 2), kernel_size=2).transpose(1, 2)
        z2 = F.max_pool1d(z2.transpose(1, 2), kernel_size=2).transpose(1, 2)
    if z1.size(1) == 1:
        loss = loss + alpha * _instance_loss(z1, z2)
        depth += 1
    return loss / depth


class TS2Vec:
    """fit(X) on real series only, then encode(X) -> (N, output_dims) full-series embeddings."""

    def __init__(self, n_features: int, output_dims: int = 320, hidden_dims: int = 64, depth: int = 10,
                 lr: float = 1e-3, batch_size: int = 8, seed: int = 0, device=None):
        self.device = get_device(device)
        self.lr, self.batch_size, self.seed = lr, batch_size, seed
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = TSEncoder(n_features, output_dims, hidden_dims, depth).to(self.device)
        self.averaged = copy.deepcopy(self.net).requires_grad_(False)
        self.n_averaged = 1

    def fit(self, X: np.ndarray, n_iters: int | None = None, progress: bool = False) -> list[float]:
        X = np.asarray(X, np.float32)
        if n_iters is None:
            n_iters = 200 if X.size <= 100_000 else 600
        rng = np.random.default_rng(self.seed)
        generator = torch.Generator().manual_seed(self.seed)
        optimizer = torch.optim.AdamW(self.net.parameters(), lr=self.lr)
        data = torch.as_tensor(X, device=self.device)
        batch = min(self.batch_size, len(X))
        T = X.shape[1]
        losses, it = [], 0
        bar = tqdm(total=n_iters, desc="TS2Vec", disable=not progress, leave=False)
        self.net.train()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)  # dropout
            while it < n_iters:
                order = torch.randperm(len(X), generator=generator)
                for start in range(0, len(X) - batch + 1, batch):          # drop_last
                    if it >= n_iters:
                        break
                    x = data[order[start:start + batch].to(self.device)]
                    crop_l = int(rng.integers(2, T + 1))
                    crop_left = int(rng.integers(T - crop_l + 1))
                    crop_right = crop_left + crop_l
                    crop_eleft = int(rng.integers(crop_left + 1))
                    crop_eright = int(rng.integers(crop_right, T + 1))
                    offset = rng.integers(-crop_eleft, T - crop_eright + 1, size=len(x))
                    mask1 = torch.as_tensor(rng.binomial(1, 0.5, size=(len(x), crop_right - crop_eleft)),
                                            dtype=torch.float32, device=self.device)
                    mask2 = torch.as_tensor(rng.binomial(1, 0.5, size=(len(x), crop_eright - crop_left)),
                                            dtype=torch.float32, device=self.device)
                    out1 = self.net(_take_per_row(x, offset + crop_eleft, crop_right - crop_eleft), mask1)[:, -crop_l:]
                    out2 = self.net(_take_per_row(x, offset + crop_left, crop_eright - crop_left), mask2)[:, :crop_l]
                    loss = hierarchical_contrastive_loss(out1, out2)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    self._average()
                    losses.append(loss.item())
                    it += 1
                    bar.update(1)
        bar.close()
        return losses

    @torch.no_grad()
    def _average(self) -> None:
        """AveragedModel's default: the equal-weight mean of every iterate, the initial weights included."""
        self.n_averaged += 1
        for avg, new in zip(self.averaged.parameters(), self.net.parameters()):
            avg.add_((new - avg) / self.n_averaged)

    @torch.no_grad()
    def encode(self, X: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """(N, output_dims): the averaged encoder's output, max-pooled over each whole series."""
        self.averaged.eval()
        X = torch.as_tensor(np.asarray(X, np.float32))
        out = [self.averaged(X[i:i + batch_size].to(self.device)).amax(dim=1).cpu()
               for i in range(0, len(X), batch_size)]
        return torch.cat(out).numpy().astype(np.float64)


def _take_per_row(x: torch.Tensor, starts: np.ndarray, length: int) -> torch.Tensor:
    index = torch.as_tensor(starts[:, None] + np.arange(length), device=x.device)
    return x[torch.arange(len(x), device=x.device)[:, None], index]
