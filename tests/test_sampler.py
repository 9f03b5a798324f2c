"""The sampler's logic against plain references: hook choice, the late schedule, `cfg` as a plain backbone draw,
the top-k selection per label and rank-matched pseudo-labels."""
import numpy as np
import pytest
import torch

from tardiff import artifacts, guidance, methods
from tardiff.api import TarDiff
from tardiff.classifier import predict_proba
from tardiff.diffusion import GaussianDiffusion, ddim_sample, load_diffusion
from tardiff.sampler import HOOKS, Sampler, pseudo_label, top_per_label

SMOKE = {"diffusion_train.steps": 20, "sampling.ddim_steps": 3}
FITTED = ["cfg", "ddpm", "tardiff_dot", "tardiff_late", "tardiff_select", "tardiff_original"]


def top_per_label_loop(scores, y_pool, y_target):
    """Obvious reference: for each label, walk the pool from the best score down (ties: pool order)."""
    keep = []
    for label in sorted(set(y_target.tolist())):
        want = int((y_target == label).sum())
        ranked = sorted((i for i in range(len(y_pool)) if y_pool[i] == label), key=lambda i: (-scores[i], i))
        keep += ranked[:want]
    return set(keep)


def test_top_per_label_equals_a_python_loop():
    rng = np.random.default_rng(0)
    for trial in range(20):
        y_target = rng.integers(0, 2, size=rng.integers(1, 30))
        y_pool = np.tile(y_target, 3)
        scores = rng.normal(size=len(y_pool)).round(1)  # rounded: ties happen
        kept = top_per_label(scores, y_pool, y_target, seed=trial)
        assert set(kept.tolist()) == top_per_label_loop(scores, y_pool, y_target)
        assert np.array_equal(np.bincount(y_pool[kept], minlength=2), np.bincount(y_target, minlength=2))


def test_pseudo_label_matches_real_label_counts_and_ranks():
    proba = np.random.default_rng(0).random(500)
    labels = pseudo_label(proba, np.array([430, 70]))
    assert labels.sum() == 70
    assert proba[labels == 1].min() > proba[labels == 0].max()
    assert pseudo_label(proba[:250], {0: 430, 1: 70}).sum() == 35  # same prevalence, other size
    with pytest.raises(ValueError, match="counts"):
        pseudo_label(proba, (0, 0))


def test_every_guidance_of_the_registry_has_a_hook_builder():
    for name, method in methods.REGISTRY.items():
        assert method.guidance is None or method.guidance in HOOKS, name
    with pytest.raises(TypeError):  # rows are keyword-only: no positional argument lands in the wrong field
        methods.Method("x", "baseline", "cond")


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    rng = np.random.default_rng(0)
    y = (rng.random(160) < 0.3).astype(np.int64)
    X = (rng.normal(size=(160, 24, 3)) + 1.5 * y[:, None, None]).astype(np.float32)
    torch.set_num_threads(1)
    model = TarDiff("smoke", overrides=SMOKE).fit(X, y, models_dir=tmp_path_factory.mktemp("m"), methods=FITTED,
                                                 progress=False)
    cohort = model._cohort
    return Sampler(cohort.X_train, cohort.y_train, "label", model.profile, model.models_dir, seed=3, progress=False)


@pytest.mark.slow
def test_cfg_is_a_plain_backbone_draw_with_the_same_seed(fitted):
    X, y, _ = fitted.sample("cfg")
    s = fitted.profile.sampling
    backbone = load_diffusion(artifacts.diffusion(fitted.models_dir, "cond", "label"))
    plain = ddim_sample(backbone, GaussianDiffusion(fitted.profile.diffusion), y, steps=s.ddim_steps, eta=s.ddim_eta,
                        cfg_scale=s.cfg_scale, batch_size=s.batch_size, seed=3, progress=False).numpy()
    np.testing.assert_array_equal(X, plain)
    assert np.array_equal(np.bincount(y), np.bincount(fitted.y_train))  # the real training counts per label


@pytest.mark.slow
def test_late_hook_is_zero_above_its_cutoff_and_the_full_hook_below(fitted):
    late, full = fitted.hook(methods.get_method("tardiff_late")), fitted.hook(methods.get_method("tardiff_dot"))
    cutoff = int(0.5 * fitted.profile.diffusion.timesteps)
    x = torch.as_tensor(fitted.X_train[:6])
    y = torch.as_tensor(fitted.y_train[:6])
    above = late(x, torch.full((6,), cutoff + 1), x, y)
    assert torch.count_nonzero(above) == 0
    below = late(x, torch.full((6,), cutoff), x, y)
    torch.testing.assert_close(below, full(x, torch.full((6,), cutoff), x, y))
    assert torch.count_nonzero(below) > 0


@pytest.mark.slow
def test_select_keeps_the_highest_influence_per_label_of_the_backbone_pool(fitted):
    X, y, info = fitted.sample("tardiff_select")
    factor = methods.get_method("tardiff_select").select_factor
    pool = np.concatenate([fitted.backbone_draw(fitted.seed + i) for i in range(factor)])
    y_pool = np.tile(fitted.y_target, factor)
    scores = guidance.pair_scores(fitted.pairs("guide"), pool, y_pool, "dot")
    assert info["selection"]["pool"] == len(y_pool)
    for label in (0, 1):
        kept = scores[[_row_of(pool, x) for x in X[y == label]]]
        rest = np.sort(scores[y_pool == label])[::-1]
        np.testing.assert_allclose(np.sort(kept)[::-1], rest[:len(kept)], rtol=1e-6)


def _row_of(pool, x):
    (rows,) = np.nonzero((pool == x).all(axis=(1, 2)))
    return rows[0]


@pytest.mark.slow
def test_ddpm_labels_are_f_theta_rank_matched_to_the_real_prevalence(fitted):
    X, y, _ = fitted.sample("ddpm")
    proba = predict_proba(fitted.classifier, X)
    assert y.sum() == round(len(y) * fitted.y_train.mean())
    assert proba[y == 1].min() >= proba[y == 0].max()


@pytest.mark.slow
def test_original_hook_is_the_batch_coupled_score_on_the_unit_training_gradient(fitted):
    hook = fitted.hook(methods.get_method("tardiff_original"))
    x, y = torch.as_tensor(fitted.X_train[:5]), torch.as_tensor(fitted.y_train[:5])
    G = guidance.train_grad(fitted.classifier, fitted.X_train, fitted.y_train)
    torch.testing.assert_close(hook(None, None, x, y), guidance.original_guidance(fitted.classifier, G)(None, None, x, y))


def test_every_sampling_setting_is_reachable_by_set():
    from dataclasses import fields

    from tardiff.config import SamplingConfig, get_profile, parse_overrides, with_overrides

    values = {"ddim_steps": "7", "ddim_eta": "0.5", "batch_size": "64", "cfg_scale": "2.0", "clip_x0": "3.5",
              "guidance_norm_stays": "128"}
    assert set(values) == {f.name for f in fields(SamplingConfig)}
    profile = with_overrides(get_profile("default"), **parse_overrides([f"sampling.{k}={v}" for k, v in values.items()]))
    for key, value in values.items():
        assert getattr(profile.sampling, key) == type(getattr(SamplingConfig(), key))(value), key
    with pytest.raises(ValueError, match="sampling.ddim_steps"):
        with_overrides(get_profile("default"), **{"sampling.ddim_steps": "many"})
