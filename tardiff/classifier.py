"""The downstream classifier f_theta: a bidirectional RNN over (B, T, F) with one logit."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class ClassifierConfig:
    rnn: str = "gru"          # "gru" or "lstm"
    hidden: int = 256
    layers: int = 2
    dropout: float = 0.2
    bidirectional: bool = True


class RNNClassifier(nn.Module):
    """Bidirectional GRU/LSTM; the last layer's final hidden states (both directions) -> one logit.

    Attributes `rnn` (nn.GRU/nn.LSTM, batch_first) and `head` (nn.Linear) are the
    layout `tardiff.guidance` reads for its functional, per-sample form.
    """

    def __init__(self, n_features: int, config: ClassifierConfig = ClassifierConfig()):
        super().__init__()
        if config.rnn not in ("gru", "lstm"):
            raise ValueError(f"ClassifierConfig.rnn must be 'gru' or 'lstm', got {config.rnn!r}")
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
