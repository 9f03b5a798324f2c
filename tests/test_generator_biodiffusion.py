"""BioDiffusion's distinctive pieces against slow, obviously correct references.

Classifier-free guidance (the guided prediction, label dropout), the cosine schedule and posterior
coefficients, one ancestral and one DDIM step, weight standardisation and the channel LayerNorm.
"""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tardiff.generators import get_generator
from tardiff.generators.biodiffusion import (BioDiffusionConfig, BioDiffusionModel, GuidedDenoiser, LayerNorm,
                                             WeightStandardizedConv1d, _keep_mask, cosine_beta_schedule)

N_FEATURES, SEQ_LEN, N_CLASSES = 3, 8, 3


def _model(seed: int = 0, seq_len: int = SEQ_LEN, **overrides) -> BioDiffusionModel:
    """A tiny float64 model with its weights moved off their initialisation."""
    torch.manual_seed(seed)
    config = BioDiffusionConfig(**{**vars(BioDiffusionConfig.tiny()), **overrides})
    model = BioDiffusionModel(N_FEATURES, seq_len, N_CLASSES, config).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def test_guided_prediction_is_null_plus_scaled_difference():
    """Each sequence: null + (cond − null) · s when its label is kept, null when the conditional pass dropped it."""
    model = _model()
    x = torch.randn(6, N_FEATURES, SEQ_LEN, dtype=torch.float64)
    classes = torch.tensor([0, 2, 1, 1, 0, 2])
    keep = torch.tensor([True, False, True, True, False, True])
    t, scale = 7, 3.0
    with torch.no_grad(), GuidedDenoiser(model.model, classes) as denoiser:
        guided = denoiser(x, t, keep, scale)
        plain = denoiser(x, t, keep, 1.0)
        for i in range(len(x)):  # one sequence at a time, through the training forward
            xi, ti, ci = x[i:i + 1], torch.tensor([t]), classes[i:i + 1]
            cond = model.model(xi, ti, ci)
            null = model.model(xi, ti, ci, keep=torch.tensor([False]))
            expected = null + (cond - null) * scale if keep[i] else null
            torch.testing.assert_close(guided[i:i + 1], expected, rtol=1e-9, atol=1e-10)
            torch.testing.assert_close(plain[i:i + 1], cond if keep[i] else null, rtol=1e-9, atol=1e-10)


def test_a_dropped_label_is_the_null_embedding_whatever_the_label():
    model = _model()
    x = torch.randn(2, N_FEATURES, SEQ_LEN, dtype=torch.float64)
    t = torch.tensor([3, 3])
    drop = torch.tensor([False, False])
    with torch.no_grad():
        a = model.model(x, t, torch.tensor([0, 1]), keep=drop)
        b = model.model(x, t, torch.tensor([2, 0]), keep=drop)
        kept = model.model(x, t, torch.tensor([2, 0]))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, kept)


@pytest.mark.parametrize("drop", [0.5, 0.2])
def test_training_drops_labels_at_the_configured_rate(drop, monkeypatch):
    seen = []
    original = BioDiffusionModel.loss

    def spy(self, x_start, t, noise, classes, keep):
        seen.append(keep.clone())
        return original(self, x_start, t, noise, classes, keep)

    monkeypatch.setattr(BioDiffusionModel, "loss", spy)
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(200, SEQ_LEN, N_FEATURES)).astype(np.float32), np.arange(200) % 2
    get_generator("biodiffusion", BioDiffusionConfig.tiny(), cond_drop_prob=drop, epochs=4, batch_size=50) \
        .fit(X, y, seed=0, progress=False)
    keep = torch.cat(seen)
    assert len(keep) == 800
    assert abs((~keep).float().mean().item() - drop) < 4 * math.sqrt(drop * (1 - drop) / len(keep))


def test_sampling_reads_the_generators_sampling_fields(monkeypatch):
    """By default every guided step keeps every label (the guidance as described); as released
    (sample_cond_drop_prob 0.5) a label is kept with probability 0.5; the sampling fields of a fitted
    generator's config (steps, dropout, scale) take effect without refitting."""
    rng = np.random.default_rng(0)
    gen = get_generator("biodiffusion", BioDiffusionConfig.tiny(), epochs=1)
    assert gen.config.sample_cond_drop_prob == 0.0
    gen.config = replace(gen.config, sample_cond_drop_prob=0.5)
    gen.fit(rng.normal(size=(16, SEQ_LEN, 2)).astype(np.float32), np.arange(16) % 2, progress=False)
    seen = []
    original = GuidedDenoiser.__call__

    def spy(self, x, t, keep, cond_scale):
        seen.append((t, keep.clone(), cond_scale))
        return original(self, x, t, keep, cond_scale)

    monkeypatch.setattr(GuidedDenoiser, "__call__", spy)
    gen.sample(np.arange(200) % 2, progress=False)
    assert [t for t, _, _ in seen] == list(range(19, -1, -1)) and {s for _, _, s in seen} == {3.0}
    kept = torch.cat([keep for _, keep, _ in seen]).float().mean().item()
    assert abs(kept - 0.5) < 4 * math.sqrt(0.25 / 4000)
    seen.clear()
    gen.config = replace(gen.config, sample_cond_drop_prob=0.0, sampling_timesteps=5, cond_scale=2.0)
    gen.sample(np.arange(10) % 2, progress=False)
    assert [t for t, _, _ in seen] == [19, 15, 11, 7, 3] and all(keep.all() for _, keep, _ in seen)
    assert {s for _, _, s in seen} == {2.0}


def test_keep_mask_rate_and_its_edges():
    g = torch.Generator().manual_seed(0)
    assert abs(_keep_mask(100_000, 0.5, g).float().mean().item() - 0.5) < 0.01
    assert _keep_mask(10, 0.0, g).all() and not _keep_mask(10, 1.0, g).any()


def test_cosine_schedule_is_its_formula():
    T, s = 1000, 0.008
    f = [math.cos(((t / T) + s) / (1 + s) * math.pi / 2) ** 2 for t in range(T + 1)]
    alpha_bar = [v / f[0] for v in f]
    betas = [min(1 - alpha_bar[t + 1] / alpha_bar[t], 0.999) for t in range(T)]
    np.testing.assert_allclose(cosine_beta_schedule(T).numpy(), betas, rtol=1e-9, atol=1e-12)
    assert cosine_beta_schedule(T)[-1] == 0.999  # alpha_bar reaches 0 at T: the last beta is clipped


def test_posterior_coefficients_are_their_formulas():
    model = _model()
    betas = cosine_beta_schedule(model.num_timesteps).tolist()
    alpha_bar, prev = [], 1.0
    for beta in betas:
        prev *= 1 - beta
        alpha_bar.append(prev)
    for t, beta in enumerate(betas):
        ab, ab_prev = alpha_bar[t], (alpha_bar[t - 1] if t else 1.0)
        expected = {"posterior_mean_coef1": beta * math.sqrt(ab_prev) / (1 - ab),
                    "posterior_mean_coef2": (1 - ab_prev) * math.sqrt(1 - beta) / (1 - ab),
                    "posterior_variance": beta * (1 - ab_prev) / (1 - ab),
                    "sqrt_recipm1_alphas_cumprod": math.sqrt(1 / ab - 1)}
        for name, value in expected.items():
            assert getattr(model, name)[t].item() == pytest.approx(value, rel=1e-5, abs=1e-9), (name, t)


def _reference_step(x_t, eps, z, t, betas, t_next=None, eta=None):
    """x_{t-1} (ancestral) or x_{t_next} (DDIM) from x_t and the predicted noise, in float64 scalars."""
    alpha_bar = np.cumprod(1 - np.asarray(betas, np.float64))
    ab = alpha_bar[t]
    x0 = np.clip((x_t - math.sqrt(1 - ab) * eps) / math.sqrt(ab), -1, 1)
    if t_next is None:  # DDPM posterior q(x_{t-1} | x_t, x0)
        ab_prev = alpha_bar[t - 1] if t else 1.0
        mean = (betas[t] * math.sqrt(ab_prev) * x0 + (1 - ab_prev) * math.sqrt(1 - betas[t]) * x_t) / (1 - ab)
        var = betas[t] * (1 - ab_prev) / (1 - ab)
        return mean + (math.sqrt(max(var, 1e-20)) * z if t else 0)
    if t_next < 0:
        return x0
    eps_hat = eps  # their pred_noise stays the network's, x0 alone is clipped
    ab_next = alpha_bar[t_next]
    sigma = eta * math.sqrt((1 - ab / ab_next) * (1 - ab_next) / (1 - ab))
    return math.sqrt(ab_next) * x0 + math.sqrt(1 - ab_next - sigma ** 2) * eps_hat + sigma * z


@pytest.mark.parametrize("t", [0, 1, 9, 19])
def test_one_ancestral_step_matches_a_hand_written_reference(t):
    model = _model()
    g = torch.Generator().manual_seed(t)
    x_t, eps, z = (torch.randn(2, N_FEATURES, SEQ_LEN, generator=g, dtype=torch.float64) for _ in range(3))
    betas = cosine_beta_schedule(model.num_timesteps).float().double().tolist()
    out = model.p_sample(x_t, t, eps, z if t else None)
    expected = np.vectorize(lambda a, b, c: _reference_step(a, b, c, t, betas))(x_t.numpy(), eps.numpy(), z.numpy())
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("t, t_next, eta", [(19, 15, 1.0), (9, 4, 0.0), (3, -1, 1.0)])
def test_one_ddim_step_matches_a_hand_written_reference(t, t_next, eta):
    model = _model()
    g = torch.Generator().manual_seed(t)
    x_t, eps, z = (torch.randn(2, N_FEATURES, SEQ_LEN, generator=g, dtype=torch.float64) for _ in range(3))
    betas = cosine_beta_schedule(model.num_timesteps).float().double().tolist()
    out = model.ddim_step(x_t, t, t_next, eps, z, eta)
    expected = np.vectorize(lambda a, b, c: _reference_step(a, b, c, t, betas, t_next, eta))(
        x_t.numpy(), eps.numpy(), z.numpy())
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_ddim_time_pairs_are_theirs():
    model = _model(timesteps=1000)
    pairs = model.ddim_times(50)
    assert pairs[0] == (999, 979) and pairs[-1] == (19, -1) and len(pairs) == 50
    assert [t for t, _ in model.ddim_times(1000)] == list(range(999, -1, -1))


def test_weight_standardisation_is_a_direct_computation():
    torch.manual_seed(0)
    conv = WeightStandardizedConv1d(4, 5, 3, padding=1)
    with torch.no_grad():
        conv.weight.mul_(torch.linspace(0.5, 3, 5)[:, None, None]).add_(torch.linspace(-1, 1, 5)[:, None, None])
    w = conv.weight.detach().double().numpy()
    expected = np.empty_like(w)
    for o in range(w.shape[0]):  # per output channel, over (in, kernel), biased variance, eps 1e-5
        mean = sum(w[o].ravel()) / w[o].size
        var = sum((v - mean) ** 2 for v in w[o].ravel()) / w[o].size
        expected[o] = (w[o] - mean) / math.sqrt(var + 1e-5)
    np.testing.assert_allclose(conv.standardized_weight(torch.float32).detach().numpy(), expected, rtol=1e-5,
                               atol=1e-6)
    x = torch.randn(2, 4, 7)
    torch.testing.assert_close(conv(x), F.conv1d(x, torch.as_tensor(expected, dtype=torch.float32), conv.bias,
                                                 padding=1), rtol=1e-5, atol=1e-5)


def test_channel_layer_norm_is_a_direct_computation():
    norm = LayerNorm(4)
    with torch.no_grad():
        norm.g.copy_(torch.tensor([0.5, 1.0, 2.0, -1.0])[None, :, None])
    x = torch.randn(2, 4, 5, dtype=torch.float64) * 3 + 1
    expected = torch.empty_like(x)
    for b in range(2):
        for t in range(5):
            column = x[b, :, t]
            mean, var = column.mean(), ((column - column.mean()) ** 2).mean()
            # their eps: 1e-5 in float32, 1e-3 in any other dtype
            expected[b, :, t] = (column - mean) / math.sqrt(var + 1e-3) * norm.g[0, :, 0].double()
    torch.testing.assert_close(norm.double()(x), expected, rtol=1e-9, atol=1e-9)


def test_a_length_the_unet_cannot_halve_is_padded_and_cropped():
    """T = 10 with two halvings: trained on the stay padded to 12 with its last step, sampled at 10."""
    model = _model(seq_len=10, dim_mults=(1, 2, 4))
    X = torch.arange(2 * 10 * N_FEATURES, dtype=torch.float64).reshape(2, 10, N_FEATURES)
    z = model.to_model_space(X)
    assert z.shape == (2, N_FEATURES, 12)
    torch.testing.assert_close(z[:, :, 10:], X[:, -1:, :].transpose(1, 2).expand(-1, -1, 2))
    torch.testing.assert_close(model.from_model_space(z), X)
    rng = np.random.default_rng(0)
    gen = get_generator("biodiffusion", BioDiffusionConfig.tiny(), dim_mults=(1, 2, 4), epochs=1)
    gen.fit(rng.normal(size=(16, 10, 2)).astype(np.float32), np.arange(16) % 2, progress=False)
    assert gen.parts[None].model.padded_len == 12
    assert gen.sample(np.array([0, 1, 1]), progress=False).shape == (3, 10, 2)


class _Interrupt(Exception):
    pass


def test_a_fit_interrupted_mid_epoch_resumes_to_the_same_model(tmp_path, monkeypatch):
    """Killed after step 2 of a 4-step epoch: the rerun replays that epoch's shuffle from the checkpoint."""
    from tardiff.generators.base import Checkpoint
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(16, SEQ_LEN, 2)).astype(np.float32), np.arange(16) % 2
    make = lambda: get_generator("biodiffusion", BioDiffusionConfig.tiny(), batch_size=4, epochs=2)
    straight = make().fit(X, y, seed=1, progress=False, checkpoint_dir=tmp_path / "a", checkpoint_every=1)
    original = Checkpoint.step

    def step_then_die(self, progress, count, final=False):
        original(self, progress, count, final)
        if count == 2:
            raise _Interrupt

    monkeypatch.setattr(Checkpoint, "step", step_then_die)
    with pytest.raises(_Interrupt):
        make().fit(X, y, seed=1, progress=False, checkpoint_dir=tmp_path / "b", checkpoint_every=1)
    monkeypatch.setattr(Checkpoint, "step", original)
    resumed = make().fit(X, y, seed=1, progress=False, checkpoint_dir=tmp_path / "b", checkpoint_every=1)
    assert resumed.parts[None].history["steps"] == 8
    for key, value in straight.parts[None].model.state_dict().items():
        torch.testing.assert_close(resumed.parts[None].model.state_dict()[key], value, rtol=0, atol=0, msg=key)
    np.testing.assert_array_equal(resumed.parts[None].history["loss"], straight.parts[None].history["loss"])


@pytest.mark.parametrize("sampling_timesteps, drop", [(None, 0.5), (5, 0.5), (5, 0.0)])
def test_sample_draws_x_T_then_each_steps_mask_then_noise(sampling_timesteps, drop):
    """`sample` is `sample_from` on its generator's draws in their order: x_T, then per step the label mask
    (none at drop 0) and the noise (none at the last step); the authors-equivalence check feeds sample_from."""
    model = _model(sampling_timesteps=sampling_timesteps, sample_cond_drop_prob=drop).float()
    classes = torch.tensor([0, 2, 1, 1])
    shape = (len(classes), N_FEATURES, SEQ_LEN)
    pairs = model.sampling_pairs(model.config)
    g = torch.Generator().manual_seed(5)
    x_T, draws = torch.randn(shape, generator=g), []
    for _, t_next in pairs:
        keep = torch.rand(len(classes), generator=g) < 1 - drop if drop else torch.ones(len(classes), dtype=torch.bool)
        draws.append((keep, torch.randn(shape, generator=g) if t_next >= 0 else None))
    expected = model.sample_from(x_T, classes, draws)
    torch.testing.assert_close(model.sample(classes, torch.Generator().manual_seed(5)), expected, rtol=0, atol=0)
