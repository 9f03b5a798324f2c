"""The generators' own benchmarks: Sines and Stocks, as Diffusion-TS's code builds them (24 steps, in [0, 1]).

Sines (`Utils/Data_utils/sine_dataset.py`, TimeGAN's `sine_data_generation`): per series and feature a
frequency and a phase ~ U(0, 0.1), x_t = sin(freq · t + phase), then (x + 1) / 2; NumPy's legacy generator
seeded 123 draws them in the order their loop does, so `sines()` is their `sine_ground_truth_24_train.npy`.
Stocks (`Utils/Data_utils/real_datasets.py`): the Google prices of `stock_data.csv` (TimeGAN's repository),
min-max scaled per column over the whole file, cut into every window of 24 consecutive days (stride 1),
chronological as their file is read.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

STOCKS_ENV = "TARDIFF_STOCKS_CSV"
STOCK_COLUMNS = ["Open", "High", "Low", "Close", "Adj_Close", "Volume"]


def sines(n: int = 10_000, seq_len: int = 24, dim: int = 5, seed: int = 123) -> np.ndarray:
    """(n, seq_len, dim) float32 in [0, 1]."""
    draws = np.random.RandomState(seed).uniform(0, 0.1, size=(n, dim, 2))      # (freq, phase) per series, feature
    t = np.arange(seq_len)
    x = np.sin(draws[:, None, :, 0] * t[None, :, None] + draws[:, None, :, 1])  # (n, T, dim)
    return ((x + 1) * 0.5).astype(np.float32)


def stocks_csv(path: str | os.PathLike | None = None) -> Path:
    """The Stocks file: `path`, else $TARDIFF_STOCKS_CSV, else benchmarks/stock_data.csv under $TARDIFF_DEMO_DIR."""
    if path is None:
        path = os.environ.get(STOCKS_ENV)
    if path is None and os.environ.get("TARDIFF_DEMO_DIR"):
        path = Path(os.environ["TARDIFF_DEMO_DIR"]) / "benchmarks" / "stock_data.csv"
    if path is None:
        raise FileNotFoundError(f"no Stocks file: pass one, or set {STOCKS_ENV} to stock_data.csv (TimeGAN's "
                                "repository, data/stock_data.csv)")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; expected TimeGAN's stock_data.csv")
    return path


def stocks(path: str | os.PathLike | None = None, seq_len: int = 24) -> np.ndarray:
    """(rows − seq_len + 1, seq_len, 6) float32 in [0, 1]."""
    path = stocks_csv(path)
    with open(path) as handle:
        header = handle.readline().strip().split(",")
    if header != STOCK_COLUMNS:
        raise ValueError(f"{path}: columns {header}, expected {STOCK_COLUMNS}")
    try:
        raw = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    except ValueError as error:
        raise ValueError(f"{path}: not a numeric table ({error})") from None
    if len(raw) < seq_len or not np.isfinite(raw).all():
        raise ValueError(f"{path}: {len(raw)} rows (need at least {seq_len}), all finite")
    low, span = raw.min(0), raw.max(0) - raw.min(0)
    scaled = (raw - low) / np.where(span > 0, span, 1.0)                      # sklearn's MinMaxScaler
    windows = np.lib.stride_tricks.sliding_window_view(scaled, seq_len, axis=0)  # (N, F, T)
    return np.ascontiguousarray(windows.transpose(0, 2, 1)).astype(np.float32)


BENCHMARKS = {"sines": sines, "stocks": stocks}
