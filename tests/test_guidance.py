"""Influence and classifier guidance against slow, obviously correct references."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tardiff.classifier import ClassifierConfig, RNNClassifier
from tardiff.guidance import (_gru_layers, _stack_forward, classifier_guidance, original_guidance,
                              influence_guidance_loop, influence_scores, pair_influence_guidance,
                              target_labels, train_grad)

T, NF = 12, 8


def small(hidden=8, layers=2, bidirectional=True, dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    cfg = ClassifierConfig(hidden=hidden, layers=layers, bidirectional=bidirectional)
    return RNNClassifier(NF, cfg).to(dtype)


def toy(n, dtype=torch.float64, seed=1):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, T, NF, generator=g, dtype=dtype)
    y = (X[:, :, 0].mean(1) + 0.5 * X[:, -3:, 1].mean(1) > 0).to(dtype)  # learnable, depends on time
    return X, y


def rel_err(a, b):
    """max over samples of ‖a_i - b_i‖∞ / ‖b_i‖∞."""
    a, b = a.flatten(1), b.flatten(1)
    return ((a - b).abs().amax(1) / b.abs().amax(1)).max().item()


@pytest.fixture(scope="module")
def trained():
    """A small biGRU trained a few epochs on the toy task (float32), with dropout on while training."""
    model = small(dtype=torch.float32, seed=3)
    X, y = toy(256, torch.float32)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(8):
        for i in range(0, 256, 32):
            opt.zero_grad()
            F.binary_cross_entropy_with_logits(model(X[i:i + 32]), y[i:i + 32]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = ((model(X) > 0).float() == y).float().mean().item()
    assert acc > 0.75, f"toy classifier did not train (accuracy {acc:.2f})"
    return model


def setup(model, dtype, n=5):
    model = copy.deepcopy(model).to(dtype)
    X, y = toy(64, dtype, seed=2)
    G = train_grad(model, X, y, batch_size=16)
    x = torch.randn(n, T, NF, generator=torch.Generator().manual_seed(5), dtype=dtype)
    target = torch.tensor([0, 1, 1, 0, 1] * (n // 5 + 1), dtype=dtype)[:n]
    return model, G, x, target


def test_functional_gru_equals_nn_gru():
    model = small(hidden=6, layers=3).eval()  # nn.GRU drops out between layers in train mode
    x = torch.randn(4, T, NF, dtype=torch.float64)
    layers = _gru_layers(model.rnn, dict(model.named_parameters()), "rnn.", x.device, x.dtype)
    _, out, feat = _stack_forward(layers, x, dirs=2)
    ref_out, _ = model.rnn(x)
    torch.testing.assert_close(out[0], ref_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(feat[0], model.features(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-4), (torch.float32, 1e-3)])
@pytest.mark.parametrize("weights", ["random", "trained"])
def test_influence_guidance_equals_per_sample_loop(trained, weights, dtype, tol):
    model, G, x, y = setup(trained if weights == "trained" else small(), dtype)
    fast = pair_influence_guidance([(model, G)], "cos")(None, None, x, y)
    slow = influence_guidance_loop(model, G, x, y)
    assert fast.shape == x.shape and fast.dtype == dtype
    assert rel_err(fast, slow) <= tol


@pytest.mark.parametrize("layers,bidirectional", [(1, False), (1, True), (3, True)])
def test_influence_guidance_other_gru_shapes(layers, bidirectional):
    model, G, x, y = setup(small(hidden=5, layers=layers, bidirectional=bidirectional), torch.float64)
    assert rel_err(pair_influence_guidance([(model, G)], "cos")(None, None, x, y), influence_guidance_loop(model, G, x, y)) <= 1e-8


def test_influence_scores_are_cosines(trained):
    model, G, x, y = setup(trained, torch.float64)
    params = list(model.parameters())
    for i in range(x.shape[0]):
        g = torch.autograd.grad(F.binary_cross_entropy_with_logits(model(x[i:i + 1]), y[i:i + 1]), params)
        flat_g = torch.cat([t.flatten() for t in g])
        flat_G = torch.cat([G[n].flatten() for n, _ in model.named_parameters()])
        cos = flat_g @ flat_G / flat_g.norm() / flat_G.norm()
        assert influence_scores(model, G, x, y)[i].item() == pytest.approx(cos.item(), rel=1e-9)


def test_score_gradient_matches_finite_differences(trained):
    model, G, x, y = setup(trained, torch.float64)
    v = torch.randn_like(x)
    guidance = pair_influence_guidance([(model, G)], "cos")(None, None, x, y)
    eps = 1e-5
    fd = (influence_scores(model, G, x + eps * v, y) - influence_scores(model, G, x - eps * v, y)) / (2 * eps)
    torch.testing.assert_close((guidance * v).flatten(1).sum(1), fd, rtol=1e-6, atol=1e-9)


def test_sample_guidance_is_per_sample_batch_guidance_is_not(trained):
    model, G, x, y = setup(trained, torch.float64)
    x2 = x.clone()
    x2[3] += torch.randn_like(x2[3])
    per_sample = pair_influence_guidance([(model, G)], "cos")
    a, b = per_sample(None, None, x, y), per_sample(None, None, x2, y)
    torch.testing.assert_close(a[:3], b[:3], rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(a[4:], b[4:], rtol=1e-10, atol=1e-14)
    coupled = original_guidance(model, G)
    a, b = coupled(None, None, x, y), coupled(None, None, x2, y)
    assert rel_err(b[:3], a[:3]) > 1e-3


def test_batch_guidance_equals_its_naive_reference(trained):
    """Original's way, rebuilt from per-sample gradients: ḡ = mean_i g_i, score = ⟨ḡ/(‖ḡ‖+1e-6), G⟩."""
    model, G, x, y = setup(trained, torch.float64)
    names, params = zip(*model.named_parameters())
    xl = x.clone().requires_grad_(True)
    per = [torch.autograd.grad(F.binary_cross_entropy_with_logits(model(xl[i:i + 1]), y[i:i + 1]), params,
                               create_graph=True) for i in range(x.shape[0])]
    mean = [sum(g[k] for g in per) / x.shape[0] for k in range(len(params))]
    norm = torch.sqrt(sum((g * g).sum() for g in mean))
    score = sum((g * G[n]).sum() for g, n in zip(mean, names)) / (norm + 1e-6)
    ref = torch.autograd.grad(score, xl)[0]
    assert rel_err(original_guidance(model, G)(None, None, x, y), ref) <= 1e-8


def test_train_grad_equals_one_sample_at_a_time_sum():
    model = small()
    model.train()  # train_grad must switch dropout off by itself, and restore the mode
    X, y = toy(23)
    names, params = zip(*model.named_parameters())
    model.eval()
    ref = [torch.zeros_like(p) for p in params]
    for i in range(len(X)):
        for acc, g in zip(ref, torch.autograd.grad(
                F.binary_cross_entropy_with_logits(model(X[i:i + 1]), y[i:i + 1], reduction="sum"), params)):
            acc += g
    model.train()
    raw = train_grad(model, X, y, batch_size=5, normalize=False)
    assert model.training
    for n, r in zip(names, ref):
        torch.testing.assert_close(raw[n], r, rtol=1e-10, atol=1e-12)
    unit = train_grad(model, X, y, batch_size=512)
    norm = torch.sqrt(sum((r * r).sum() for r in ref))
    for n, r in zip(names, ref):
        torch.testing.assert_close(unit[n], r / norm, rtol=1e-10, atol=1e-12)


def test_train_grad_label_restricts_to_one_class():
    model = small()
    X, y = toy(30)
    positives = train_grad(model, X[y == 1], y[y == 1], normalize=False)
    restricted = train_grad(model, X, y, label=1, normalize=False)
    for n in positives:
        torch.testing.assert_close(restricted[n], positives[n])
    with pytest.raises(ValueError, match="label 2"):
        train_grad(model, X, y, label=2)


def test_classifier_guidance_equals_autograd_of_log_sigmoid(trained):
    model, _, x, y = setup(trained, torch.float64)
    out = classifier_guidance(model)(None, None, x, y)
    for i in range(x.shape[0]):
        xi = x[i:i + 1].clone().requires_grad_(True)
        logit = model(xi)[0]
        logp = F.logsigmoid(logit) if y[i] == 1 else F.logsigmoid(-logit)
        torch.testing.assert_close(out[i], torch.autograd.grad(logp, xi)[0][0], rtol=1e-10, atol=1e-14)


def test_lstm_needs_batch_mode():
    lstm = RNNClassifier(NF, ClassifierConfig(rnn="lstm", hidden=4)).double()
    X, y = toy(10)
    G = train_grad(lstm, X, y)
    with pytest.raises(ValueError, match="GRU"):
        pair_influence_guidance([(lstm, G)], "cos")
    assert torch.isfinite(original_guidance(lstm, G)(None, None, X[:3], y[:3])).all()


def test_missing_train_gradient_entry_is_reported():
    model = small()
    X, y = toy(10)
    G = train_grad(model, X, y)
    G.pop("head.bias")
    with pytest.raises(ValueError, match="head.bias"):
        pair_influence_guidance([(model, G)], "cos")(None, None, X[:2], y[:2])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_influence_guidance_on_cuda_equals_cpu(trained):
    model, G, x, y = setup(trained, torch.float32)
    cpu = pair_influence_guidance([(model, G)], "cos")(None, None, x, y)
    gpu_model = copy.deepcopy(model).cuda()
    gpu = pair_influence_guidance([(gpu_model, G)], "cos")(None, None, x.cuda(), y.cuda())
    assert rel_err(gpu.cpu(), cpu) <= 1e-3


def test_target_labels_counts():
    y = np.array([0] * 7 + [1] * 3)
    default = target_labels(y, seed=1)
    assert sorted(default.tolist()) == sorted(y.tolist())
    assert default.dtype == y.dtype
    assert np.array_equal(default, target_labels(y, seed=1))
    scaled = target_labels(y, n=25)
    assert len(scaled) == 25 and (scaled == 1).sum() in (7, 8)
    assert np.bincount(target_labels(y, n={0: 2, 1: 5})).tolist() == [2, 5]
    assert len(target_labels(y, n=0)) == 0
    with pytest.raises(ValueError):
        target_labels(y, n=-1)


def test_hook_inside_ddim_sampler():
    diffusion = pytest.importorskip("tardiff.diffusion")
    from tardiff.unet1d import UNet1D, UNetConfig
    torch.manual_seed(0)
    unet = UNet1D(NF, UNetConfig.smoke())
    model = small(dtype=torch.float32)
    X, y = toy(32, torch.float32)
    hook = pair_influence_guidance([(model, train_grad(model, X, y))], "cos")
    labels = np.array([0, 1, 1, 0])
    kw = dict(steps=3, batch_size=4, seed=0, progress=False, seq_len=T)
    plain = diffusion.ddim_sample(unet, diffusion.DiffusionConfig(), labels, **kw)
    guided = diffusion.ddim_sample(unet, diffusion.DiffusionConfig(), labels, guidance=hook, guidance_scale=1.0, **kw)
    assert guided.shape == plain.shape == (4, T, NF)
    assert torch.isfinite(guided).all() and not torch.allclose(guided, plain)


# --------------------------------------------------------------------------- TarDiff variants
def dot_guidance_loop(model, G, x, y):
    """Reference for score="dot": one sample at a time, ∇_x of g_iᵀG by double backward."""
    names, params = zip(*model.named_parameters())
    out = []
    for i in range(len(x)):
        xi = x[i:i + 1].detach().requires_grad_(True)
        loss = F.binary_cross_entropy_with_logits(model(xi), y[i:i + 1], reduction="sum")
        grads = torch.autograd.grad(loss, params, create_graph=True)
        score = sum((g * G[n]).sum() for g, n in zip(grads, names))
        out.append(torch.autograd.grad(score, xi)[0])
    return torch.cat(out)


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-8), (torch.float32, 1e-3)])
def test_dot_score_guidance_equals_per_sample_loop(trained, dtype, tol):
    from tardiff.guidance import pair_influence_guidance

    model, G, x, y = setup(trained, dtype)
    fast = pair_influence_guidance([(model, G)], "dot")(None, None, x, y)
    assert rel_err(fast, dot_guidance_loop(model, G, x, y)) < tol


@pytest.mark.parametrize("score", ["cos", "dot"])
def test_pair_guidance_sums_its_pairs_and_scores_match(trained, score):
    """Pairs of one architecture run stacked (members x directions), others apart: each equals its own pass."""
    from tardiff.guidance import pair_influence_guidance, pair_scores, random_gradient

    model, G, x, y = setup(trained, torch.float64)
    other, uni = small(seed=7), small(hidden=5, layers=1, bidirectional=False, seed=8)
    pairs = [(model, G), (other, random_gradient(other, seed=1)), (uni, random_gradient(uni, seed=2)),
             (model, random_gradient(model, seed=3))]
    both = pair_influence_guidance(pairs, score)(None, None, x, y)
    apart = sum(pair_influence_guidance([pair], score)(None, None, x, y) for pair in pairs)
    assert rel_err(both, apart) < 1e-10
    if score == "cos":
        loop = sum(influence_guidance_loop(m, g, x, y) for m, g in pairs)
        assert rel_err(both, loop) < 1e-8
    scores = pair_scores(pairs, x, y, score, batch_size=2)
    want = sum(pair_scores([pair], x, y, score) for pair in pairs)
    assert np.allclose(scores, want, atol=1e-10)
    if score == "cos":
        assert np.allclose(scores, sum(influence_scores(m, g, x, y) for m, g in pairs).numpy(), atol=1e-10)


def test_reference_and_random_gradients():
    from tardiff.guidance import random_gradient, reference_gradient

    model = small()
    X, y = toy(40)
    mean = reference_gradient(model, X, y)
    summed = train_grad(model, X, y, normalize=False)
    assert all(torch.allclose(mean[k], summed[k] / 40) for k in mean)
    R = random_gradient(model, seed=3)
    assert abs(sum((g * g).sum() for g in R.values()).item() - 1) < 1e-10
    assert all(torch.equal(R[k], random_gradient(model, seed=3)[k]) for k in R)
    assert not torch.equal(R["head.weight"], random_gradient(model, seed=4)["head.weight"])


def test_inverse_hvp_equals_dense_damped_solve():
    """(H + λI)⁻¹G by CG with HVPs equals a dense solve with the autograd Hessian of the mean loss."""
    from torch.func import functional_call

    from tardiff.guidance import inverse_hvp, reference_gradient

    torch.manual_seed(0)
    model = RNNClassifier(3, ClassifierConfig(hidden=2, layers=1, dropout=0.0)).double().eval()
    X = torch.randn(20, 5, 3, dtype=torch.float64)
    y = (torch.rand(20) < 0.5).double()
    G = reference_gradient(model, X, y)
    solution, info = inverse_hvp(model, X, y, G, damping=0.5, max_iter=300, tol=1e-12, batch_size=7,
                                 curvature="hessian")
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    flat = torch.cat([p.detach().reshape(-1) for _, p in model.named_parameters()])

    def loss(theta):
        params, i = {}, 0
        for n, s in zip(names, shapes):
            k = int(np.prod(s))
            params[n], i = theta[i:i + k].reshape(s), i + k
        return F.binary_cross_entropy_with_logits(functional_call(model, params, (X,)), y)

    H = torch.autograd.functional.hessian(loss, flat)
    want = torch.linalg.solve(H + 0.5 * torch.eye(len(flat), dtype=torch.float64),
                              torch.cat([G[n].reshape(-1) for n in names]))
    got = torch.cat([solution[n].reshape(-1) for n in names])
    assert ((got - want).norm() / want.norm()).item() < 1e-8
    assert info["relative_residual"] < 1e-8 and info["damping"] == 0.5
    # Gauss-Newton: (1/N) Jᵀ diag(σ(1 − σ)) J from the dense Jacobian of the logits
    ggn, info = inverse_hvp(model, X, y, G, damping=0.5, max_iter=300, tol=1e-12, batch_size=7)

    def logits(theta):
        params, i = {}, 0
        for n, s in zip(names, shapes):
            k = int(np.prod(s))
            params[n], i = theta[i:i + k].reshape(s), i + k
        return functional_call(model, params, (X,))

    J = torch.autograd.functional.jacobian(logits, flat)  # (N, P)
    p = torch.sigmoid(logits(flat))
    GGN = J.T @ (J * (p * (1 - p))[:, None]) / len(y)
    want = torch.linalg.solve(GGN + 0.5 * torch.eye(len(flat), dtype=torch.float64),
                              torch.cat([G[n].reshape(-1) for n in names]))
    got = torch.cat([ggn[n].reshape(-1) for n in names])
    assert ((got - want).norm() / want.norm()).item() < 1e-8 and info["curvature"] == "ggn"


def test_normalized_step_has_unit_rms_on_its_reference_and_stays_per_sample(trained):
    from tardiff.guidance import normalized, pair_influence_guidance

    model, G, x, y = setup(trained, torch.float32, n=10)
    hook = pair_influence_guidance([(model, G)], "dot")
    X_ref, y_ref = toy(32, torch.float32, seed=4)
    scaled = normalized(hook, X_ref, y_ref)
    t0 = torch.zeros(32, dtype=torch.long)
    assert scaled(X_ref, t0, X_ref, y_ref).pow(2).mean().sqrt().item() == pytest.approx(1.0, rel=1e-4)
    full = scaled(None, None, x, y)
    assert rel_err(full[:3], scaled(None, None, x[:3], y[:3])) < 1e-5  # a constant: samples stay independent


def test_scheduled_guidance_acts_only_at_low_noise():
    from tardiff.guidance import scheduled

    hook = scheduled(lambda x_t, t, x0, y: torch.ones_like(x0), t_max=50)
    x = torch.zeros(2, T, NF)
    assert hook(x, torch.full((2,), 120), x, None).abs().sum() == 0
    assert torch.equal(hook(x, torch.full((2,), 50), x, None), torch.ones_like(x))


def test_score_name_is_checked(trained):
    from tardiff.guidance import pair_influence_guidance

    with pytest.raises(ValueError, match="score must be one of"):
        pair_influence_guidance([(trained, {})], "cosine")


def test_dot_guidance_is_per_sample(trained):
    """The dot score's guidance is one batch double backward, yet no sample's guidance depends on another's x."""
    from tardiff.guidance import pair_influence_guidance

    model, G, x, y = setup(trained, torch.float64)
    x2 = x.clone()
    x2[3] += torch.randn_like(x2[3])
    hook = pair_influence_guidance([(model, G)], "dot")
    a, b = hook(None, None, x, y), hook(None, None, x2, y)
    torch.testing.assert_close(a[:3], b[:3], rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(a[4:], b[4:], rtol=1e-10, atol=1e-14)
    assert rel_err(b[3:4], a[3:4]) > 1e-3
