"""TimeVQVAE's own pieces (tardiff.generators.timevqvae) against slow, obviously correct references.

The frequency split, the token grid at length 24, the quantiser (nearest code, EMA, k-means start), MaskGIT's
cosine masking and iterative decoding, classifier-free guidance, the learning-rate schedule, the data
standardisation and a resume inside stage 2. The shared contract is tests/test_generators.py.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch

from tardiff.generators import get_generator
from tardiff.generators.base import Checkpoint
from tardiff.generators.timevqvae import (VQVAE, TimeVQVAEConfig, TimeVQVAEModel, VectorQuantizer, WarmupCosine,
                                          _gumbel, cosine_schedule, decoding_step, guided_logits, iterative_decoding,
                                          masked_count, random_token_mask, sample_categorical, split_bands, stft)


def test_stft_channels_are_each_series_real_then_imaginary_part():
    x = torch.randn(2, 3, 24, generator=torch.Generator().manual_seed(0))
    spec = stft(x, 4)                                                       # (B, 2C, 3, 25)
    window = torch.hann_window(4)
    for c in range(3):
        ref = torch.stft(x[:, c], 4, normalized=True, return_complex=True, window=window)
        torch.testing.assert_close(spec[:, 2 * c], ref.real)
        torch.testing.assert_close(spec[:, 2 * c + 1], ref.imag)


def test_low_plus_high_band_equals_the_input():
    x = torch.randn(4, 3, 24, generator=torch.Generator().manual_seed(1))
    x_l, x_h = split_bands(x, 4)
    torch.testing.assert_close(x_l + x_h, x, atol=1e-5, rtol=0)
    assert x_l.abs().mean() > 0.1 and x_h.abs().mean() > 0.1               # both bands carry part of x


def test_length_24_gives_6_lf_and_24_hf_tokens_at_the_authors_sizes():
    torch.manual_seed(0)
    vqvae = VQVAE(5, 24, TimeVQVAEConfig()).eval()
    x = torch.randn(2, 5, 24)
    with torch.no_grad():
        z_l, tokens_l, _, _ = vqvae.quantize("lf", x)
        z_h, tokens_h, _, _ = vqvae.quantize("hf", x)
        assert vqvae.grids == {"lf": (1, 6), "hf": (2, 12)}
        assert z_l.shape == (2, 128, 1, 6) and z_h.shape == (2, 128, 2, 12)
        assert tokens_l.shape == (2, 6) and tokens_h.shape == (2, 24)
        assert vqvae.decode_tokens("lf", tokens_l).shape == vqvae.decode_tokens("hf", tokens_h).shape == (2, 5, 24)


@pytest.mark.parametrize("seq_len", [4, 9, 50, 128])
def test_token_grid_formula_matches_the_encoders_and_decoders_give_back_the_length(seq_len):
    torch.manual_seed(0)
    vqvae = VQVAE(2, seq_len, TimeVQVAEConfig.tiny()).eval()
    x = torch.randn(2, 2, seq_len)
    with torch.no_grad():
        for kind in ("lf", "hf"):
            z, tokens, _, _ = vqvae.quantize(kind, x)
            assert tuple(z.shape[2:]) == vqvae.grids[kind]
            assert vqvae.decode_tokens(kind, tokens).shape == (2, 2, seq_len)


def test_quantiser_returns_the_nearest_codeword():
    torch.manual_seed(0)
    vq = VectorQuantizer(6, 10, 3, kmeans_init=False).eval()               # projections 6 -> 3 -> 6, random codes
    z = torch.randn(4, 7, 6, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        z_q, index, _, _ = vq(z)
        x = vq.project_in(z).reshape(-1, 3)
    for i, row in enumerate(x.tolist()):
        dists = [sum((a - b) ** 2 for a, b in zip(row, code)) for code in vq.embed.tolist()]
        assert index.reshape(-1)[i] == dists.index(min(dists))
    torch.testing.assert_close(z_q, vq.project_out(vq.embed[index]))


def test_codebook_ema_update_matches_a_hand_computation():
    vq = VectorQuantizer(2, 3, 2, decay=0.8, eps=1e-5, kmeans_init=False).train()   # identity projections
    codes = [[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]]
    vq.embed.copy_(torch.tensor(codes))
    vq.embed_avg.copy_(torch.tensor([[1.0, 1.0], [20.0, 2.0], [3.0, 30.0]]))
    vq.cluster_size.copy_(torch.tensor([2.0, 1.0, 4.0]))
    x = [[1.0, 0.0], [0.0, 1.0], [9.0, 1.0]]                                # codes 0, 0, 1; code 2 unused
    z_q, index, commit, _ = vq(torch.tensor([x]))
    assert index.tolist() == [[0, 0, 1]]
    counts, sums = [2, 1, 0], [[1.0, 1.0], [9.0, 1.0], [0.0, 0.0]]
    size = [0.8 * s + 0.2 * n for s, n in zip([2.0, 1.0, 4.0], counts)]
    avg = [[0.8 * a + 0.2 * s for a, s in zip(row, srow)]
           for row, srow in zip([[1.0, 1.0], [20.0, 2.0], [3.0, 30.0]], sums)]
    total = sum(size)
    smoothed = [(s + 1e-5) / (total + 3 * 1e-5) * total for s in size]
    expected = [[a / s for a in row] for row, s in zip(avg, smoothed)]
    torch.testing.assert_close(vq.cluster_size, torch.tensor(size))
    torch.testing.assert_close(vq.embed_avg, torch.tensor(avg))
    torch.testing.assert_close(vq.embed, torch.tensor(expected))
    # the output is the code before the update (straight-through), the commitment loss its MSE to x
    torch.testing.assert_close(z_q[0], torch.tensor([codes[0], codes[0], codes[1]]))
    hand = sum((a - b) ** 2 for row, i in zip(x, [0, 0, 1]) for a, b in zip(row, codes[i])) / 6
    assert commit.item() == pytest.approx(hand, rel=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kmeans_starts_the_codebook_at_the_cluster_means(seed):
    vq = VectorQuantizer(2, 2, 2, kmeans_init=True).eval()                 # eval: k-means, then no EMA
    noise = torch.randn(10, 2, generator=torch.Generator().manual_seed(seed)) * 0.1
    x = noise + torch.tensor([[10.0, 0.0]] * 5 + [[-10.0, 0.0]] * 5)
    vq(x[None], torch.Generator().manual_seed(seed))
    means = sorted([x[:5].mean(0).tolist(), x[5:].mean(0).tolist()])
    np.testing.assert_allclose(sorted(vq.embed.tolist()), means, rtol=1e-6)
    assert bool(vq.initted) and vq.cluster_size.tolist() == [5.0, 5.0]
    torch.testing.assert_close(vq.embed_avg, vq.embed)                    # their vq.py: the means, not sums


def test_cosine_schedule_values():
    np.testing.assert_allclose(cosine_schedule([0, 1 / 3, 0.5, 1]), [1, math.sqrt(3) / 2, math.sqrt(0.5), 0],
                               atol=1e-12)


def test_training_mask_keeps_floor_of_cosine_share_of_tokens():
    tokens = torch.arange(8 * 10).reshape(8, 10) % 7
    masked, known = random_token_mask(tokens, 99, torch.Generator().manual_seed(3))
    ratios = torch.rand(8, generator=torch.Generator().manual_seed(3), dtype=torch.float64).tolist()
    expected = [min(math.floor(math.cos(r * math.pi / 2) * 10), 9) for r in ratios]
    assert known.sum(1).tolist() == expected
    assert torch.equal(masked[known], tokens[known]) and (masked[~known] == 99).all()


@pytest.mark.parametrize("n_tokens, trace", [(6, [5, 5, 5, 4, 4, 3, 2, 1, 0, 0]),
                                             (24, [23, 22, 21, 19, 16, 14, 10, 7, 3, 0])])
def test_iterative_decoding_masks_the_hand_traced_count_at_each_step(n_tokens, trace):
    """floor(n cos(π/2 · t/10)) tokens stay masked after step t, and a decoded token never changes."""
    seen = []
    noise = torch.Generator().manual_seed(4)

    def predict(tokens):
        seen.append(tokens.clone())
        return torch.randn(*tokens.shape, 5, generator=noise)

    final = iterative_decoding(predict, 3, n_tokens, mask_id=5, n_steps=10, choice_temperature=10.0,
                               generator=torch.Generator().manual_seed(5))
    assert [masked_count(n_tokens, t, 10) for t in range(10)] == trace
    counts = [int((s == 5).sum(1).unique()) for s in seen[1:]] + [int((final == 5).sum(1).unique())]
    assert counts == trace
    for before, after in zip(seen[1:], seen[2:] + [final]):
        decoded = before != 5
        assert torch.equal(after[decoded], before[decoded])


def test_one_decoding_step_remasks_the_least_confident_new_tokens(monkeypatch):
    """Hand trace at choice temperature 0, the sampler fixed to the most likely token."""
    import tardiff.generators.timevqvae as module
    monkeypatch.setattr(module, "sample_categorical", lambda probs, generator=None: probs.argmax(-1))
    top = torch.tensor([[0.9, 0.5, 0.7, 0.6, 0.95, 0.8]])                  # probability of each position's best
    probs = torch.stack([top, (1 - top) / 2, (1 - top) / 2], dim=-1)        # (1, 6, 3), best is token 0
    tokens = torch.tensor([[9, 2, 9, 9, 9, 9]])                              # position 1 known (token 2), mask 9
    # step 3 of 10: floor(6 cos(0.4 π/2)) = 4 stay masked: the known position is kept and the 4 least
    # confident new ones (0.6, 0.7, 0.8, 0.9 at positions 3, 2, 5, 0) are masked again
    out = decoding_step(tokens, probs.log(), step=3, n_steps=10, n_tokens=6, mask_id=9, choice_temperature=0.0)
    assert out.tolist() == [[9, 2, 9, 9, 0, 9]]


def test_choice_noise_is_standard_gumbel():
    g = _gumbel((200_000,), torch.Generator().manual_seed(7), "cpu").double()
    assert torch.isfinite(g).all()
    assert g.mean().item() == pytest.approx(0.5772, abs=0.01)              # Euler-Mascheroni constant
    assert g.var().item() == pytest.approx(math.pi ** 2 / 6, abs=0.03)


def test_sample_categorical_draws_the_given_distribution():
    probs = torch.tensor([0.5, 0.0, 0.2, 0.3]).expand(40_000, 4)
    draws = sample_categorical(probs, torch.Generator().manual_seed(6))
    freq = torch.bincount(draws, minlength=4).float() / len(draws)
    assert freq[1] == 0
    torch.testing.assert_close(freq, probs[0], atol=0.01, rtol=0)


def test_classifier_free_guidance_logits():
    torch.manual_seed(0)
    model = TimeVQVAEModel(2, 24, 3, TimeVQVAEConfig.tiny()).eval()
    tokens = torch.randint(0, 32, (4, 6))
    labels = torch.tensor([[0], [2], [1], [0]])
    with torch.no_grad():
        cond = model.transformer_l(tokens, class_condition=labels)
        uncond = model.transformer_l(tokens, class_condition=None)
        null = model.transformer_l(tokens, class_condition=torch.full((4, 1), 3))   # class n_classes is null
        torch.testing.assert_close(uncond, null)
        torch.testing.assert_close(model.prior_logits("lf", labels, tokens), cond)   # cfg_scale 1: cond alone
        model.config.cfg_scale = 3.0
        torch.testing.assert_close(model.prior_logits("lf", labels, tokens), uncond + 3.0 * (cond - uncond))
    torch.testing.assert_close(guided_logits(torch.tensor([2.0]), torch.tensor([0.5]), 1.5), torch.tensor([2.75]))


def test_lr_schedule_is_their_warmup_cosine_stepped_before_the_optimiser():
    """Against torch's LambdaLR + CosineAnnealingLR chained as their utils/optim.py, stepped as their
    training_step does (scheduler first)."""
    max_steps, rate, lr, min_lr = 100, 0.05, 5e-3, 5e-4
    warmup = int(max_steps * rate)
    ref_opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    ref = torch.optim.lr_scheduler.SequentialLR(
        ref_opt, [torch.optim.lr_scheduler.LambdaLR(ref_opt, lambda s: 1.0 if s >= warmup else s / max(1, warmup)),
                  torch.optim.lr_scheduler.CosineAnnealingLR(ref_opt, max_steps - warmup, eta_min=min_lr)],
        milestones=[warmup])
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    ours = torch.optim.lr_scheduler.LambdaLR(opt, WarmupCosine(max_steps, rate, min_lr / lr))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                                     # scheduler before optimiser
        for _ in range(max_steps):
            ref.step()
            assert opt.param_groups[0]["lr"] == pytest.approx(ref_opt.param_groups[0]["lr"], rel=1e-9)
            ref_opt.step()
            opt.step()
            ours.step()
    assert opt.param_groups[0]["lr"] > 0


def test_model_holds_their_per_channel_standardisation(one_thread):
    rng = np.random.default_rng(0)
    X = (rng.normal(size=(40, 24, 2)) * [1.0, 5.0] + [0.0, 100.0]).astype(np.float32)
    gen = get_generator("timevqvae", TimeVQVAEConfig.tiny(), max_steps_stage1=2, max_steps_stage2=2)
    model = gen.fit(X, None, progress=False).parts[None].model
    np.testing.assert_allclose(model.data_mean.ravel().numpy(), X.mean(axis=(0, 1)), rtol=1e-5)
    np.testing.assert_allclose(model.data_std.ravel().numpy(), X.std(axis=(0, 1)), rtol=1e-5)   # population std


class _Interrupt(Exception):
    pass


def test_a_fit_interrupted_in_stage_2_resumes_to_the_same_model(tmp_path, monkeypatch, one_thread):
    X = np.random.default_rng(1).normal(size=(40, 24, 2)).astype(np.float32)
    y = np.arange(40) % 2
    config = replace(TimeVQVAEConfig.tiny(), max_steps_stage1=4, max_steps_stage2=6)

    def fit(folder):
        return get_generator("timevqvae", config).fit(X, y, seed=2, progress=False, checkpoint_dir=folder,
                                                       checkpoint_every=1)

    straight = fit(tmp_path / "a")
    original = Checkpoint.step

    def step_then_die(self, progress, count, final=False):
        original(self, progress, count, final)
        if progress["stage2_steps"] == 3:
            raise _Interrupt

    monkeypatch.setattr(Checkpoint, "step", step_then_die)
    with pytest.raises(_Interrupt):
        fit(tmp_path / "b")
    monkeypatch.setattr(Checkpoint, "step", original)
    resumed = fit(tmp_path / "b")
    for key, value in straight.parts[None].model.state_dict().items():
        torch.testing.assert_close(resumed.parts[None].model.state_dict()[key], value, rtol=0, atol=0, msg=key)
    assert resumed.parts[None].history["loss"] == straight.parts[None].history["loss"]
    labels = np.array([0, 1, 1, 0])
    np.testing.assert_array_equal(resumed.sample(labels, seed=0, progress=False),
                                  straight.sample(labels, seed=0, progress=False))
