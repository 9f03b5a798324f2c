"""Shared fixtures: where the real PhysioNet 2012 archives and the vendored sample live."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def physionet_dir() -> Path:
    """The full PhysioNet 2012 archives, from env TARDIFF_DATA_DIR; skips (with the reason) when absent."""
    value = os.environ.get("TARDIFF_DATA_DIR")
    if not value:
        pytest.skip("TARDIFF_DATA_DIR is not set (folder with set-a.tar.gz, set-b.tar.gz, Outcomes-a/b.txt)")
    path = Path(value)
    if not (path / "set-a.tar.gz").exists():
        pytest.skip(f"TARDIFF_DATA_DIR={path} has no set-a.tar.gz")
    return path


@pytest.fixture(scope="session")
def fixture_dir() -> Path:
    """The vendored sample: 60 real stays of set-a and 30 of set-b with their outcomes."""
    return FIXTURES / "physionet2012"


@pytest.fixture
def one_thread():
    """Tiny models on two busy cores: oversubscribed intra-op threads make them ~10x slower."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
