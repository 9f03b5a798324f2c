"""UNet shapes, DDIM sampler against references, guidance hook, toy fit, checkpoint resume, CFG."""
import numpy as np
import pytest
import torch
from torch import nn

from tardiff.diffusion import (DiffusionConfig, DiffusionTrainConfig, GaussianDiffusion, ddim_sample,
                               load_diffusion, save_diffusion, train_diffusion)
from tardiff.unet1d import UNet1D, UNetConfig

TINY = UNetConfig(model_channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_levels=(1,), num_heads=2)
# Toy: two classes with opposite means on channels 0-1; per-channel sds differ.
MU = np.array([[-1.5, 0.5, 0.0], [1.5, -0.5, 0.0]], np.float32)
SD = np.array([0.4, 0.8, 1.2], np.float32)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def random_unet(config=TINY, n_features=3, seed=0):
    """A UNet whose zero-initialised layers are randomised, so eps depends on x, t and y."""
    torch.manual_seed(seed)
    model = UNet1D(n_features, config).eval()
    for p in model.parameters():
        if p.dim() > 1 and not p.any():
            nn.init.normal_(p, std=0.05)
    return model


class OracleEps(nn.Module):
    """The exact eps of i.i.d. Gaussian data N(mu, sd^2): the sampler alone decides the samples' law."""

    def __init__(self, mu, sd, diffusion):
        super().__init__()
        self.mu, self.sd, self.diffusion, self.n_features = torch.tensor(mu), torch.tensor(sd), diffusion, len(mu)
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x, t, y=None):
        ab = self.diffusion.alphas_cumprod[t.cpu()].float().reshape(-1, 1, 1)
        return (1 - ab).sqrt() * (x - ab.sqrt() * self.mu) / (ab * self.sd ** 2 + 1 - ab)


# --------------------------------------------------------------------------- UNet


@pytest.mark.parametrize("config, T", [(UNetConfig(), 24), (UNetConfig.paper(), 24), (UNetConfig.smoke(), 24),
                                       (UNetConfig.paper(), 10), (UNetConfig(num_classes=2), 24),
                                       (UNetConfig(channel_mult=(1, 2, 4, 4), num_res_blocks=2), 7)])
def test_unet_output_shape(config, T):
    model = UNet1D(8, config)
    x = torch.randn(3, T, 8)
    y = torch.tensor([0, 1, 1]) if config.num_classes else None
    out = model(x, torch.tensor([0, 17, 199]), y)
    assert out.shape == x.shape and out.dtype == torch.float32


def test_unet_labels_change_output_and_none_is_null():
    model = random_unet(UNetConfig(**{**TINY.__dict__, "num_classes": 2}))
    x, t = torch.randn(4, 8, 3), torch.full((4,), 50)
    with torch.no_grad():
        e0, e1 = model(x, t, torch.zeros(4, dtype=torch.long)), model(x, t, torch.ones(4, dtype=torch.long))
        assert not torch.allclose(e0, e1)
        torch.testing.assert_close(model(x, t, None), model(x, t, torch.full((4,), 2)))


def test_unet_bad_config_errors():
    with pytest.raises(ValueError, match="num_heads"):
        UNet1D(8, UNetConfig(num_heads=7))
    with pytest.raises(ValueError, match="attention_levels"):
        UNet1D(8, UNetConfig(attention_levels=(5,)))


# --------------------------------------------------------------------------- schedule and sampler


def test_schedule_inverts():
    d = GaussianDiffusion()
    x0, noise = torch.randn(5, 24, 8), torch.randn(5, 24, 8)
    t = torch.tensor([0, 1, 50, 150, 199])
    x_t = d.q_sample(x0, t, noise)
    torch.testing.assert_close(d.predict_x0(x_t, t, noise), x0, atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(d.predict_eps(x_t, t, x0), noise, atol=1e-4, rtol=1e-4)
    assert d.ddim_timesteps(20)[0] == 0 and d.ddim_timesteps(20)[-1] == 199 and len(d.ddim_timesteps(20)) == 20


def reference_ddim(model, d, y, steps, seed, seq_len, guidance=None, guidance_scale=0.0):
    """One sample at a time, straight from the DDIM paper's eq. 12, float64 coefficients."""
    x_T = torch.randn((len(y), seq_len, model.n_features), generator=torch.Generator().manual_seed(seed))
    times = d.ddim_timesteps(steps)[::-1]
    out = []
    for i in range(len(y)):
        x = x_T[i:i + 1]
        for j, t in enumerate(times):
            a = float(d.alphas_cumprod[t])
            a_prev = float(d.alphas_cumprod[times[j + 1]]) if j + 1 < len(times) else 1.0
            with torch.no_grad():
                eps = model(x, torch.tensor([t]), None)
            x0 = ((x - (1 - a) ** 0.5 * eps) / a ** 0.5).clamp(-5, 5)
            if guidance is not None:
                x0 = x0 + guidance_scale * guidance(x, torch.tensor([t]), x0, torch.as_tensor(y[i:i + 1]))
            eps = (x - a ** 0.5 * x0) / (1 - a) ** 0.5
            x = a_prev ** 0.5 * x0 + (1 - a_prev) ** 0.5 * eps
        out.append(x[0])
    return torch.stack(out)


def pull_to_label(x_t, t, pred_x0, y):
    """A guidance that depends on every argument: pulls pred_x0 towards y, harder at small t."""
    return (y.float().reshape(-1, 1, 1) - pred_x0) * (1.0 - t.float().reshape(-1, 1, 1) / 400) + 0.01 * x_t


@pytest.mark.parametrize("guidance, scale", [(None, 0.0), (pull_to_label, 0.7)])
def test_ddim_matches_per_sample_reference(guidance, scale):
    model, d, y = random_unet(), GaussianDiffusion(), np.array([0, 1, 2, 1, 0])
    fast = ddim_sample(model, d, y, steps=6, seq_len=8, batch_size=5, seed=1, progress=False,
                       guidance=guidance, guidance_scale=scale)
    slow = reference_ddim(model, d, y, steps=6, seed=1, seq_len=8, guidance=guidance, guidance_scale=scale)
    torch.testing.assert_close(fast, slow, atol=1e-4, rtol=1e-4)


def test_ddim_deterministic_for_seed_and_shapes():
    model, d = random_unet(), DiffusionConfig()
    a = ddim_sample(model, d, np.zeros(5), steps=5, seq_len=8, batch_size=2, seed=0, progress=False)
    b = ddim_sample(model, d, torch.zeros(5, dtype=torch.long), steps=5, seq_len=8, batch_size=2, seed=0,
                    progress=False)
    c = ddim_sample(model, d, np.zeros(5), steps=5, seq_len=8, batch_size=2, seed=1, progress=False)
    assert a.shape == (5, 8, 3) and a.dtype == torch.float32 and a.device.type == "cpu"
    assert torch.equal(a, b) and not torch.allclose(a, c)
    e1 = ddim_sample(model, d, np.zeros(3), steps=5, eta=1.0, seq_len=8, seed=0, progress=False)
    e2 = ddim_sample(model, d, np.zeros(3), steps=5, eta=1.0, seq_len=8, seed=0, progress=False)
    assert torch.equal(e1, e2) and not torch.allclose(e1, a[:3])


def test_ddim_with_exact_eps_recovers_gaussian_law():
    d = GaussianDiffusion()
    mu, sd = np.array([-2.0, 0.0, 2.0], np.float32), np.array([0.3, 1.0, 1.5], np.float32)
    S = ddim_sample(OracleEps(mu, sd, d), d, np.zeros(3000), steps=200, seq_len=4, batch_size=3000,
                    progress=False).numpy()
    np.testing.assert_allclose(S.mean((0, 1)), mu, atol=0.05)
    np.testing.assert_allclose(S.std((0, 1)), sd, rtol=0.06)


def test_guidance_hook_called_every_step_with_shapes():
    model, d = random_unet(), GaussianDiffusion()
    calls = []

    def hook(x_t, t, pred_x0, y):
        assert x_t.shape == pred_x0.shape == (y.shape[0], 8, 3) and t.shape == y.shape and t.dtype == torch.long
        assert not pred_x0.requires_grad and torch.is_grad_enabled()  # the hook differentiates on its own
        calls.append((int(t[0]), y.tolist()))
        return torch.zeros_like(pred_x0)

    y = np.array([0, 1, 1, 0, 1])
    ddim_sample(model, d, y, steps=4, seq_len=8, batch_size=3, guidance=hook, guidance_scale=1.0, progress=False)
    times = d.ddim_timesteps(4)[::-1]
    assert [c[0] for c in calls] == times * 2
    assert calls[0][1] == [0, 1, 1] and calls[-1][1] == [0, 1]


def test_constant_guidance_shifts_samples_its_way():
    model, d = random_unet(), GaussianDiffusion()
    base = ddim_sample(model, d, np.zeros(64), steps=10, seq_len=8, progress=False)
    push = torch.tensor([1.0, -1.0, 0.0])

    def hook(x_t, t, pred_x0, y):
        return push.expand_as(pred_x0)

    moved = ddim_sample(model, d, np.zeros(64), steps=10, seq_len=8, guidance=hook, guidance_scale=0.5,
                        progress=False)
    shift = (moved - base).mean((0, 1))
    assert shift[0] > 0.4 and shift[1] < -0.4 and abs(shift[2]) < 0.1


# --------------------------------------------------------------------------- training


def toy(n=1000, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return (MU[y][:, None, :] + SD * rng.normal(size=(n, 8, 3))).astype(np.float32), y


@pytest.fixture(scope="module")
def trained():
    """A tiny class-conditional model fit to the toy (about 10 s on one core)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    X, y = toy()
    cfg = UNetConfig(model_channels=16, channel_mult=(1, 2), num_res_blocks=1, attention_levels=(1,), num_heads=2,
                     num_classes=2)
    model, hist = train_diffusion(X, y, unet=cfg, train=DiffusionTrainConfig(steps=400, batch_size=64, lr=3e-3,
                                                                             warmup=20), progress=False)
    torch.set_num_threads(old)
    return model, hist


def law_matches(S, c):
    mean, std = S.mean((0, 1)), S.std((0, 1))
    return bool(np.all(np.abs(mean - MU[c]) < 0.2) and np.all((std / SD > 0.7) & (std / SD < 1.35)))


@pytest.mark.slow
def test_toy_fit_lowers_loss_and_matches_class_laws(trained):
    model, hist = trained
    assert len(hist["loss"]) == 400 and hist["wall_time_s"] > 0
    assert np.mean(hist["loss"][-50:]) < 0.6 * np.mean(hist["loss"][:20])
    untrained = UNet1D(3, model.config)
    for c in (0, 1):
        S = ddim_sample(model, DiffusionConfig(), np.full(400, c), steps=20, seq_len=8, progress=False).numpy()
        assert law_matches(S, c), (c, S.mean((0, 1)), S.std((0, 1)))
        S0 = ddim_sample(untrained, DiffusionConfig(), np.full(400, c), steps=20, seq_len=8, progress=False)
        assert not law_matches(S0.numpy(), c)


@pytest.mark.slow
def test_cfg_separates_classes(trained):
    model, _ = trained
    y = np.repeat([0, 1], 200)
    S = ddim_sample(model, DiffusionConfig(), y, steps=20, seq_len=8, cfg_scale=2.0, progress=False).numpy()
    m0, m1 = S[:200].mean((0, 1)), S[200:].mean((0, 1))
    assert m1[0] - m0[0] > 2.5 and m0[1] - m1[1] > 0.7
    # The null label alone gives the mixture: channel 0 lies between the classes and spreads wider than
    # either. (Where between depends on how well ~10 % label dropout taught the null label in 400 steps,
    # which varied across machines; between-ness and spread do not.)
    null = ddim_sample(model, DiffusionConfig(), np.zeros(400), steps=20, seq_len=8, progress=False,
                       cfg_scale=-1.0).numpy()
    c0 = [ddim_sample(model, DiffusionConfig(), np.full(400, c), steps=20, seq_len=8, progress=False).numpy()[..., 0]
          for c in (0, 1)]
    assert c0[0].mean() < null[..., 0].mean() < c0[1].mean()
    assert null[..., 0].std() > max(c0[0].std(), c0[1].std())


def test_cfg_needs_conditional_model():
    with pytest.raises(ValueError, match="class-conditional"):
        ddim_sample(random_unet(), DiffusionConfig(), np.zeros(2), steps=2, seq_len=8, cfg_scale=1.0,
                    progress=False)
    with pytest.raises(ValueError, match="num_classes"):
        train_diffusion(toy(20)[0], unet=UNetConfig(**{**TINY.__dict__, "num_classes": 2}), progress=False)


def test_checkpoint_resume_equals_uninterrupted(tmp_path):
    X, _ = toy(64)
    cfg = UNetConfig(**{**TINY.__dict__, "dropout": 0.1})  # dropout: the global RNG must resume too
    train = DiffusionTrainConfig(steps=6, batch_size=8, warmup=3, checkpoint_every=2)
    full, hist_full = train_diffusion(X, unet=cfg, train=train, progress=False)
    half = DiffusionTrainConfig(**{**train.__dict__, "steps": 3})
    train_diffusion(X, unet=cfg, train=half, checkpoint_dir=tmp_path, progress=False)  # "interrupted" at 3
    resumed, hist = train_diffusion(X, unet=cfg, train=train, checkpoint_dir=tmp_path, progress=False)
    assert hist["loss"] == hist_full["loss"]
    for k, v in full.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    # The checkpoint itself loads as the EMA model.
    from_ckpt = load_diffusion(tmp_path / "diffusion.pt")
    assert all(torch.equal(v, from_ckpt.state_dict()[k]) for k, v in full.state_dict().items())
    with pytest.raises(ValueError, match="another config"):
        train_diffusion(X, unet=cfg, train=DiffusionTrainConfig(**{**train.__dict__, "lr": 1.0}),
                        checkpoint_dir=tmp_path, progress=False)


def test_save_load_round_trip(tmp_path):
    model = random_unet(UNetConfig(**{**TINY.__dict__, "num_classes": 2}))
    path = save_diffusion(model, tmp_path / "d.pt", diffusion=DiffusionConfig().__dict__)
    loaded, extra = load_diffusion(path, device="cpu", with_extra=True)
    assert extra["diffusion"]["timesteps"] == 200 and loaded.config == model.config
    x, t, y = torch.randn(2, 8, 3), torch.tensor([3, 100]), torch.tensor([0, 1])
    with torch.no_grad():
        assert torch.equal(loaded(x, t, y), model(x, t, y))


def test_original_update_adds_the_hook_to_x_prev_with_s_squared():
    """guidance_update="original": x_{t-1} = (1 - s) x_{t-1} + s² ∇ (the released TarDiff's rule)."""
    from tardiff.diffusion import DiffusionConfig, GaussianDiffusion

    diffusion = GaussianDiffusion(DiffusionConfig())
    g = torch.Generator().manual_seed(0)
    x, eps = torch.randn(3, 6, 2, generator=g), torch.randn(3, 6, 2, generator=g)
    grad = torch.randn(3, 6, 2, generator=g)
    plain, x0 = diffusion.step(eps, 100, x, 80)
    s = 0.1
    guided, x0_guided = diffusion.step(eps, 100, x, 80, guidance=lambda *a: grad, guidance_scale=s,
                                       guidance_update="original")
    assert torch.allclose(x0_guided, x0)  # pred_x0 itself is untouched
    assert torch.allclose(guided, (1 - s) * plain + s * s * grad, atol=1e-6)
    with pytest.raises(ValueError, match="guidance_update"):
        diffusion.step(eps, 100, x, 80, guidance_update="x0")


def test_parallel_diffusion_models_equal_one_by_one(tmp_path):
    """pipeline.train_generative_models' one-thread worker processes train the weights this (one-thread) process
    trains one model after another, and so does a single model; a worker's error reaches the caller."""
    from dataclasses import replace

    from tardiff import pipeline
    from tardiff.config import get_profile
    profile = get_profile("smoke")
    profile = replace(profile, unet=TINY, diffusion_train=replace(profile.diffusion_train, steps=4, checkpoint_every=2))
    X, y = toy(48)

    def jobs(folder):
        return {folder / "ddpm.pt": ("diffusion", X, None), folder / "cfg.pt": ("diffusion", X, y)}

    parallel = pipeline.train_generative_models(jobs(tmp_path / "a"), profile, progress=False)
    one_by_one = pipeline.train_generative_models(jobs(tmp_path / "b"), profile, progress=False, parallel=False)
    for name in ("ddpm.pt", "cfg.pt"):
        assert parallel[tmp_path / "a" / name]["loss"] == one_by_one[tmp_path / "b" / name]["loss"]
        a, b = load_diffusion(tmp_path / "a" / name), load_diffusion(tmp_path / "b" / name)
        assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items()), name
    torch.set_num_threads(2)  # a single model trains in this process at one thread, then the count is restored
    alone = pipeline.train_generative_models({tmp_path / "c" / "cfg.pt": ("diffusion", X, y)}, profile, progress=False)
    assert torch.get_num_threads() == 2
    torch.set_num_threads(1)
    assert alone[tmp_path / "c" / "cfg.pt"]["loss"] == one_by_one[tmp_path / "b" / "cfg.pt"]["loss"]
    bad = X.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        pipeline.train_generative_models({tmp_path / "d" / "ddpm.pt": ("diffusion", X, None),
                                          tmp_path / "d" / "bad.pt": ("diffusion", bad, None)}, profile, progress=False)
