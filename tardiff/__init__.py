"""TarDiff: target-oriented diffusion guidance for synthetic EHR time series (KDD 2025)."""

__version__ = "0.1.0"
