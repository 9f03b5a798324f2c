"""The field's fidelity metrics (tardiff.field_metrics, tardiff.ts2vec) against slow, obviously correct references,
and the metric code checked on real data as the issue asks (the published real-data scores)."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from tardiff import benchmark_data, field_metrics as fm
from tardiff.ts2vec import TS2Vec, hierarchical_contrastive_loss


def test_frechet_distance_against_scipy_sqrtm():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6))
    b = rng.normal(size=(250, 6)) @ rng.normal(size=(6, 6)) + 0.3
    mu_a, mu_b, s_a, s_b = a.mean(0), b.mean(0), np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s_a @ s_b).real  # Diffusion-TS's calculate_fid
    direct = ((mu_a - mu_b) ** 2).sum() + np.trace(s_a + s_b - 2 * covmean)
    assert fm.frechet_distance(a, b) == pytest.approx(direct, rel=1e-8)
    assert fm.frechet_distance(a, a) == pytest.approx(0, abs=1e-8)


def _loop_cross_correlation(X):
    """Each lower-triangle pair (i, j), diagonal included, by an explicit loop over series and steps."""
    flat = X.reshape(-1, X.shape[2])
    mean, sd = flat.mean(0), flat.std(0, ddof=1)
    out = []
    for i in range(X.shape[2]):
        for j in range(i + 1):
            total = 0.0
            for series in X:
                for step in series:
                    total += (step[i] - mean[i]) / sd[i] * (step[j] - mean[j]) / sd[j]
            out.append(total / (X.shape[0] * X.shape[1]))
    return np.asarray(out)


def test_cross_correlation_against_a_loop_over_feature_pairs():
    rng = np.random.default_rng(1)
    base = rng.normal(size=(40, 24, 1))
    X = np.concatenate([base, 2 * base + 0.1 * rng.normal(size=base.shape), rng.normal(size=base.shape)], axis=2)
    np.testing.assert_allclose(fm.cross_correlation(X), _loop_cross_correlation(X), rtol=1e-10)
    assert fm.cross_correlation(X)[1] > 0.95            # feature 1 follows feature 0
    assert abs(fm.cross_correlation(X)[3]) < 0.1        # feature 2 is noise


def test_correlational_score_by_hand_on_a_hand_made_pair():
    rng = np.random.default_rng(2)
    real = rng.normal(size=(50, 24, 2))
    real[..., 1] = real[..., 0]                         # corr(0, 1) = 1
    syn = rng.normal(size=(50, 24, 2))                  # corr(0, 1) ~ 0
    scores = fm.correlational_scores(real, syn, repeats=5, seed=0)
    draw = np.random.default_rng(0)                     # the same draws: 50 // 5 series of each, with replacement
    by_hand = []
    for _ in range(5):
        r, s = real[draw.integers(0, 50, 10)], syn[draw.integers(0, 50, 10)]
        by_hand.append(np.abs(_loop_cross_correlation(s) - _loop_cross_correlation(r)).sum() / 10)
    np.testing.assert_allclose(scores, by_hand, rtol=1e-7)
    assert scores.mean() > 0.09                         # |1 − 0| / 10, up to sampling noise


def test_tf1_gru_cell_against_a_numpy_step_loop():
    rngs = fm.repeat_rngs(0, 2)
    model = fm.StackedTFGRU(rngs, 3, 2, 1)
    with torch.no_grad():
        model.gate_bias.normal_()
        model.candidate_bias.normal_()
    x = np.random.default_rng(3).normal(size=(2, 4, 5, 3)).astype(np.float32)
    per_step, last = model(torch.as_tensor(x))
    sig = lambda v: 1 / (1 + np.exp(-v))
    for r in range(2):
        Wg, bg = model.gate_kernel[r].detach().numpy(), model.gate_bias[r, 0].detach().numpy()
        Wc, bc = model.candidate_kernel[r].detach().numpy(), model.candidate_bias[r, 0].detach().numpy()
        Wd, bd = model.dense[r].detach().numpy(), model.dense_bias[r, 0].detach().numpy()
        for b in range(4):
            h = np.zeros(2)
            for t in range(5):
                gates = sig(np.concatenate([x[r, b, t], h]) @ Wg + bg)
                reset, update = gates[:2], gates[2:]
                c = np.tanh(np.concatenate([x[r, b, t], reset * h]) @ Wc + bc)
                h = update * h + (1 - update) * c
                np.testing.assert_allclose(per_step[r, b, t].detach().numpy(), h @ Wd + bd, atol=1e-5)
            np.testing.assert_allclose(last[r, b].detach().numpy(), h @ Wd + bd, atol=1e-5)


def test_tf1_initialisation():
    model = fm.StackedTFGRU(fm.repeat_rngs(0, 3), 4, 2, 1)
    assert torch.all(model.gate_bias == 1) and torch.all(model.candidate_bias == 0)
    limit = np.sqrt(6 / (6 + 4))
    assert model.gate_kernel.abs().max() <= limit and model.gate_kernel.std() > limit / 3
    assert not torch.equal(model.gate_kernel[0], model.gate_kernel[1])   # each repeat its own draw


def test_stacked_members_equal_one_at_a_time(one_thread):
    """Repeat r of a set, trained in a stack of three repeats and two sets, scores what it scores alone."""
    rng = np.random.default_rng(4)
    real = rng.uniform(size=(60, 24, 4)).astype(np.float32)
    syn = np.clip(real + 0.2 * rng.normal(size=real.shape), 0, 1).astype(np.float32)
    other = rng.uniform(size=(50, 24, 4)).astype(np.float32)
    kwargs = dict(iterations=30, batch_size=16, device="cpu")
    many = fm.predictive_scores(real, {"syn": syn, "other": other}, repeats=3, seed=7, **kwargs)
    alone = fm._predictive(real, [other], [fm.repeat_rngs(7, 3)[2]], 30, 16, "cpu")
    assert many["other"][2] == pytest.approx(alone[0], rel=1e-5)
    np.testing.assert_allclose(fm.predictive_scores(real, syn, repeats=3, seed=7, **kwargs), many["syn"], rtol=1e-5)
    many = fm.discriminative_scores(real, {"syn": syn, "other": other}, repeats=3, seed=7, **kwargs)
    alone = fm._discriminative(real, [other], [fm.repeat_rngs(7, 3)[1]], 30, 16, "cpu")
    assert many["other"][1] == pytest.approx(alone[0], abs=1e-12)


def test_discriminative_score_sees_an_obvious_fake(one_thread):
    real = benchmark_data.sines(400)
    fake = np.random.default_rng(0).uniform(size=real.shape).astype(np.float32)
    assert fm.discriminative_scores(real, fake, repeats=2, iterations=1000).min() > 0.4


def test_summary_t_interval():
    s = fm.Summary.of([1.0, 2.0, 3.0, 4.0, 5.0])
    assert s.mean == 3.0
    assert s.half_width == pytest.approx(np.std([1, 2, 3, 4, 5], ddof=1) / np.sqrt(5) * 2.7764451, rel=1e-6)


def test_bad_input_named():
    good = benchmark_data.sines(20)
    with pytest.raises(ValueError, match="synthetic has NaN/inf values in 1 series"):
        bad = good.copy()
        bad[2, 3, 1] = np.nan
        fm.correlational_scores(good, bad)
    with pytest.raises(ValueError, match=r"real series are \(24, 5\).*synthetic \(24, 4\)"):
        fm.predictive_scores(good, good[..., :4])
    with pytest.raises(ValueError, match="need at least 2 features"):
        fm.predictive_scores(good[..., :1], good[..., :1], iterations=1)


def test_ts2vec_is_seeded_and_its_embedding_is_batch_invariant(one_thread):
    X = benchmark_data.sines(64)
    a, b = TS2Vec(5, seed=3), TS2Vec(5, seed=3)
    losses_a, losses_b = a.fit(X, n_iters=5), b.fit(X, n_iters=5)
    assert losses_a == losses_b
    np.testing.assert_allclose(a.encode(X, batch_size=7), a.encode(X, batch_size=64), atol=1e-5)
    assert a.encode(X).shape == (64, 320)


def test_hierarchical_loss_levels_by_hand():
    """A 3-step series has two pyramid levels (T = 3, then 1): the loss is their mean."""
    z1, z2 = torch.randn(4, 3, 8, generator=torch.Generator().manual_seed(0)), torch.randn(4, 3, 8)
    from tardiff.ts2vec import _instance_loss, _temporal_loss
    level0 = 0.5 * _instance_loss(z1, z2) + 0.5 * _temporal_loss(z1, z2)
    p1 = torch.nn.functional.max_pool1d(z1.transpose(1, 2), 2).transpose(1, 2)
    p2 = torch.nn.functional.max_pool1d(z2.transpose(1, 2), 2).transpose(1, 2)
    level1 = 0.5 * _instance_loss(p1, p2)
    torch.testing.assert_close(hierarchical_contrastive_loss(z1, z2), (level0 + level1) / 2)


def test_stocks_windows_against_a_direct_reading(tmp_path):
    csv = tmp_path / "stock_data.csv"
    rows = np.arange(30 * 6, dtype=float).reshape(30, 6) ** 1.5
    csv.write_text(",".join(benchmark_data.STOCK_COLUMNS) + "\n" + "\n".join(",".join(map(str, r)) for r in rows))
    W = benchmark_data.stocks(csv, seq_len=24)
    scaled = (rows - rows.min(0)) / (rows.max(0) - rows.min(0))
    assert W.shape == (7, 24, 6)
    np.testing.assert_allclose(W[3], scaled[3:27], rtol=1e-6)
    csv.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="columns"):
        benchmark_data.stocks(csv)


# --------------------------------------------------------------------------- the metric code on real data

@pytest.mark.slow
def test_real_data_predictive_score_is_the_published_one(one_thread):
    """A predictor trained on the real Sines windows scores .094 in the Diffusion-TS paper (Table 1)."""
    real = benchmark_data.sines()
    scores = fm.predictive_scores(real, real, repeats=3, seed=0)
    assert abs(scores.mean() - 0.094) <= 0.003, scores


@pytest.mark.slow
def test_real_against_real_discriminative_score_is_small(one_thread):
    real = benchmark_data.sines()
    scores = fm.discriminative_scores(real[:5000], real[5000:], repeats=3, seed=0)
    assert scores.mean() <= 0.03, scores
