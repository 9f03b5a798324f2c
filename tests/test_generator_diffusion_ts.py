"""Diffusion-TS's distinctive pieces (tardiff.generators.diffusion_ts) against slow, obviously correct references.

The shared contract (shapes, seeds, save/load, resume) is tests/test_generators.py.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tardiff.generators.diffusion_ts import (DiffusionTSConfig, DiffusionTSModel, TrendBlock, WarmupPlateau,
                                             cosine_beta_schedule, ddim_times, ema_decay, reconstruction_loss,
                                             seasonal_bases, topk_seasonal, trend_basis)


def _kept_bins_reference(x: np.ndarray) -> np.ndarray:
    """Their FourierLayer by hand: per (stay, channel), the top int(log K) rFFT bins strictly between DC and
    Nyquist by |X_k|, each summed with its conjugate as 2 |X_k| cos(2π k t / T + ∠X_k) (no 1/T)."""
    B, T, d = x.shape
    spectrum = np.fft.rfft(x.astype(np.float64), axis=1)
    bins = list(range(1, T // 2)) if T % 2 == 0 else list(range(1, T // 2 + 1))
    top_k = int(math.log(len(bins)))
    out = np.zeros((B, T, d))
    t = np.arange(T)
    for b in range(B):
        for c in range(d):
            ranked = sorted(bins, key=lambda k: -abs(spectrum[b, k, c]))
            for k in ranked[:top_k]:
                X = spectrum[b, k, c]
                out[b, :, c] += 2 * abs(X) * np.cos(2 * np.pi * k * t / T + np.angle(X))
    return out


@pytest.mark.parametrize("T", [24, 23])
def test_seasonal_part_is_the_inverse_dft_of_the_top_k_bins(T):
    x = torch.randn(3, T, 4, generator=torch.Generator().manual_seed(T))
    ours = topk_seasonal(x, *seasonal_bases(T))
    np.testing.assert_allclose(ours.numpy(), _kept_bins_reference(x.numpy()), atol=2e-4)


def test_seasonal_part_keeps_the_two_strongest_of_eleven_bins_at_t24():
    """T = 24: 11 bins between DC and Nyquist, int(log 11) = 2 kept; a level, a weak bin and Nyquist go."""
    T = 24
    t = np.arange(T)
    wave = lambda k: np.cos(2 * np.pi * k * t / T)                      # noqa: E731
    kept = 3.0 * wave(2) + 0.5 * np.sin(2 * np.pi * 5 * t / T)
    x = kept + 7.0 + 0.1 * wave(7) + 2.0 * wave(12)                    # level, weak bin, Nyquist (k = T/2)
    out = topk_seasonal(torch.tensor(x, dtype=torch.float32)[None, :, None], *seasonal_bases(T))[0, :, 0]
    np.testing.assert_allclose(out.numpy(), T * kept, atol=1e-3)       # their rFFT is unnormalised: T × the wave


def test_fourier_loss_matches_numpy_fft_on_a_hand_made_pair():
    T = 8
    t = np.arange(T)
    target = np.stack([np.sin(2 * np.pi * t / T), np.linspace(-1, 1, T)], axis=1)[None]      # (1, T, 2)
    output = target + np.stack([0.3 * np.cos(2 * np.pi * 3 * t / T), np.full(T, 0.2)], axis=1)[None]
    weight = math.sqrt(T) / 5
    fft_out, fft_target = np.fft.fft(output, axis=1) / T, np.fft.fft(target, axis=1) / T      # norm="forward"
    expected = np.mean(np.abs(output - target)
                       + weight * (np.abs(fft_out.real - fft_target.real) + np.abs(fft_out.imag - fft_target.imag)))
    output_t, target_t = torch.tensor(output, dtype=torch.float32), torch.tensor(target, dtype=torch.float32)
    ours = reconstruction_loss(output_t, target_t, weight)
    np.testing.assert_allclose(ours.numpy(), [expected], rtol=1e-6)
    assert abs(ours.item() - reconstruction_loss(output_t, target_t, 0.0).item()) > 0.01  # the Fourier term counts


def test_model_loss_weights_each_stay_by_its_step():
    """training_loss = mean over stays of loss_weight[t] · reconstruction loss of x̂0(√ᾱ x0 + √(1 − ᾱ) ε)."""
    torch.manual_seed(0)
    model = DiffusionTSModel(2, 12, DiffusionTSConfig.tiny())
    x0, noise = torch.randn(3, 12, 2), torch.randn(3, 12, 2)
    t = torch.tensor([0, 7, 19])
    expected = 0.0
    for i in range(3):
        ac = model.alphas_cumprod[t[i]]
        x_t = ac.sqrt() * x0[i:i + 1] + (1 - ac).sqrt() * noise[i:i + 1]
        x0_hat = model.denoiser(x_t, t[i:i + 1])
        expected += model.loss_weight[t[i]] * reconstruction_loss(x0_hat, x0[i:i + 1], math.sqrt(12) / 5)[0] / 3
    torch.testing.assert_close(model.training_loss(x0, t, noise), expected, rtol=1e-5, atol=1e-6)


def test_trend_basis_is_powers_of_the_interior_grid():
    T = 5
    grid = np.arange(1, T + 1) / (T + 1)
    np.testing.assert_allclose(trend_basis(T).numpy(), np.stack([grid, grid ** 2, grid ** 3]), rtol=1e-6)


def test_trend_block_output_is_a_cubic_without_constant_in_each_channel():
    torch.manual_seed(1)
    block = TrendBlock(seq_len=10, d_model=8, n_features=3)
    x = torch.randn(2, 10, 8)
    coefficients = block.trend(x).detach().numpy()                    # (B, F, 3): their convs' output
    grid = np.arange(1, 11) / 11
    expected = np.einsum("bfp,pt->btf", coefficients, np.stack([grid, grid ** 2, grid ** 3]))
    np.testing.assert_allclose(block(x).detach().numpy(), expected, atol=1e-5)


def test_cosine_schedule_matches_the_formula():
    T, s = 500, 0.008
    f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2   # noqa: E731
    expected = [min(1 - f(t) / f(t - 1), 0.999) for t in range(1, T + 1)]
    betas = cosine_beta_schedule(T)
    assert betas.dtype == torch.float64
    np.testing.assert_allclose(betas.numpy(), expected, rtol=1e-9, atol=1e-12)
    assert betas[-1].item() == 0.999                                    # the last steps are clipped


def test_schedule_buffers_and_loss_weight_follow_the_betas():
    model = DiffusionTSModel(2, 12, DiffusionTSConfig.tiny())
    betas = cosine_beta_schedule(20).numpy()
    alphas_cumprod = np.cumprod(1 - betas)
    np.testing.assert_allclose(model.alphas_cumprod.numpy(), alphas_cumprod, rtol=1e-6)
    weight = np.sqrt(1 - betas) * np.sqrt(1 - alphas_cumprod) / betas / 100
    np.testing.assert_allclose(model.loss_weight.numpy(), weight, rtol=1e-5)


def test_warm_up_then_halving_after_patience_as_their_scheduler():
    """From 1e-5, +(8e-4 − 1e-5)/warmup a step; then ×0.5 once more than `patience` steps fail to beat the
    best by 10 %, never below min_lr."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([param], lr=1e-5)
    scheduler = WarmupPlateau(optimizer, factor=0.5, patience=3, threshold=0.1, threshold_mode="rel", cooldown=0,
                              min_lr=1e-5, warmup_lr=8e-4, warmup=4)
    lrs = []
    for loss in [9, 9, 9, 9, 1.0, 0.95, 0.95, 0.95, 0.95, 0.5, 0.5, 0.5, 0.5, 0.5] + [0.5] * 30:
        scheduler.step(loss)
        lrs.append(optimizer.param_groups[0]["lr"])
    np.testing.assert_allclose(lrs[:4], [1e-5 + (i + 1) * (8e-4 - 1e-5) / 4 for i in range(4)], rtol=1e-12)
    # step 5 sets best 1.0; 0.95 is not 10 % better: steps 6-9 are bad, the 4th (> patience 3) halves
    assert lrs[4:8] == [lrs[3]] * 4 and lrs[8] == pytest.approx(4e-4)
    assert lrs[9] == pytest.approx(4e-4)                                # 0.5 beats 0.95 by 10 %
    assert min(lrs) == pytest.approx(1e-5) and lrs[-1] == pytest.approx(1e-5)


def test_ema_decay_is_ema_pytorch_021s_warm_up():
    c = DiffusionTSConfig()
    assert ema_decay(101, c) == 0.0                                     # copies up to update_after_step
    assert ema_decay(111, c) == pytest.approx(1 - 11 ** (-2 / 3))       # 10 steps past: 1 − (1 + 10)^(−2/3)
    assert ema_decay(100_000, c) == 0.995                               # capped at beta


def test_fast_sampling_times_truncate_toward_zero_as_theirs():
    assert ddim_times(10, 4) == [(9, 6), (6, 4), (4, 1), (1, -1)]      # linspace(-1, 9, 5) = -1, 1.5, 4, 6.5, 9
    assert ddim_times(5, 5) == [(4, 3), (3, 2), (2, 1), (1, 0), (0, -1)]


def test_fast_sampler_is_seeded_and_ends_on_a_clipped_x0():
    """DDIM over fewer steps (their fast_sample) is seeded, differs from the ancestral draw, ends on x̂0 in [-1, 1]."""
    torch.manual_seed(0)
    model = DiffusionTSModel(2, 12, DiffusionTSConfig.tiny()).eval()
    fast = model.sample(4, torch.Generator().manual_seed(0), sampling_timesteps=5)
    again = model.sample(4, torch.Generator().manual_seed(0), sampling_timesteps=5)
    full = model.sample(4, torch.Generator().manual_seed(0))
    assert fast.shape == (4, 12, 2) and torch.equal(fast, again) and not torch.allclose(fast, full)
    assert fast.abs().max() <= 1.0
    noisy = model.sample(4, torch.Generator().manual_seed(0), sampling_timesteps=5, eta=1.0)
    assert torch.isfinite(noisy).all() and not torch.allclose(noisy, fast)
