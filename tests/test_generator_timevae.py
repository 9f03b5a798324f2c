"""TimeVAE's own pieces against slow references: its loss by hand, Keras's "same" padding and transposed
convolution, Keras's Adam, the decoder terms, and the two Keras callbacks against a hand trace."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from tardiff.generators import get_generator
from tardiff.generators.timevae import (KerasAdam, TimeVAE, TimeVAEConfig, TimeVAEModel,
                                       _conv_transpose_same, _same_pad)


def test_loss_against_numpy_by_hand():
    """3 · (Σ (x − x̂)² + Σ_{stay, t} (mean_f x − mean_f x̂)²) + Σ KL, summed over the batch as theirs."""
    torch.manual_seed(0)
    config = TimeVAEConfig(hidden_layer_sizes=(4, 8), latent_dim=3)
    model = TimeVAEModel(2, 8, config)
    x = torch.rand(5, 8, 2)
    eps = torch.randn(5, 3)
    loss = model.loss(x, eps).item()
    mean, log_var = (t.detach().numpy().astype(np.float64) for t in model.encode(x))
    z = mean + np.exp(0.5 * log_var) * eps.numpy()
    x_hat = model.decode(torch.as_tensor(z, dtype=torch.float32)).detach().numpy().astype(np.float64)
    xn = x.numpy().astype(np.float64)
    by_hand = 0.0
    for i in range(5):
        for t in range(8):
            by_hand += 3.0 * sum((xn[i, t, f] - x_hat[i, t, f]) ** 2 for f in range(2))
            by_hand += 3.0 * (xn[i, t].mean() - x_hat[i, t].mean()) ** 2
        for j in range(3):
            by_hand += -0.5 * (1 + log_var[i, j] - mean[i, j] ** 2 - math.exp(log_var[i, j]))
    assert loss == pytest.approx(by_hand, rel=1e-5)


@pytest.mark.parametrize("length, expected", [(24, (0, 1)), (12, (0, 1)), (6, (0, 1)), (7, (1, 1)), (3, (1, 1))])
def test_keras_same_padding_for_stride_two(length, expected):
    """Keras pads max((ceil(L/2) − 1)·2 + 3 − L, 0) in all, the odd one on the right; output ceil(L/2)."""
    assert _same_pad(length) == expected
    conv = torch.nn.Conv1d(1, 1, 3, stride=2)
    out = conv(torch.nn.functional.pad(torch.zeros(1, 1, length), expected))
    assert out.shape[-1] == math.ceil(length / 2)


def test_keras_same_transposed_convolution_against_a_loop():
    """Keras's Conv1DTranspose(3, stride 2, "same") places w[k] h[j] at 2j + k and keeps 2L steps (TF pads the
    forward convolution it transposes on the right only): a loop over j and k."""
    torch.manual_seed(0)
    conv = torch.nn.ConvTranspose1d(2, 3, 3, stride=2)
    h = torch.randn(2, 2, 5)                                                # (B, C_in, L)
    w, b = conv.weight.detach().numpy(), conv.bias.detach().numpy()        # (C_in, C_out, k)
    expected = np.zeros((2, 3, 10)) + b[None, :, None]
    for j in range(5):
        for k in range(3):
            if 2 * j + k < 10:
                expected[:, :, 2 * j + k] += np.einsum("bi,io->bo", h[:, :, j].numpy(), w[:, :, k])
    np.testing.assert_allclose(_conv_transpose_same(conv, h).detach().numpy(), expected, rtol=1e-5, atol=1e-6)


def test_keras_adam_against_a_loop():
    """Keras's Adam: ε added to √v with α = lr·√(1 − β2^t)/(1 − β1^t), β^t of float32 β (what tf.cast of a
    Python float computes), a halved lr taking effect at the next step; in float64, to rounding."""
    rng = np.random.default_rng(0)
    grads = rng.normal(size=(30, 4)) * np.array([1e-7, 1e-3, 1.0, 100.0])
    p = torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))
    optimizer = KerasAdam([p], lr=1e-3)
    theta, m, v, lr = np.zeros(4), np.zeros(4), np.zeros(4), 1e-3
    b1, b2 = float(np.float32(0.9)), float(np.float32(0.999))
    for t, g in enumerate(grads, start=1):
        if t == 20:
            lr /= 2
            optimizer.param_groups[0]["lr"] /= 2
        p.grad = torch.as_tensor(g)
        optimizer.step()
        m += (g - m) * (1 - 0.9)
        v += (g * g - v) * (1 - 0.999)
        theta -= m * (lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)) / (np.sqrt(v) + 1e-7)
        np.testing.assert_allclose(p.detach().numpy(), theta, rtol=1e-12, atol=0)


def test_keras_adam_resumes_from_its_state_and_refuses_torch_adams():
    """Its step count is checkpointed: a reloaded optimiser continues the same trajectory; a state written by
    torch's Adam (older TimeVAE checkpoints) is refused with a message, not resumed with another bias correction."""
    grads = torch.randn(6, 3, dtype=torch.float64)
    p = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    optimizer = KerasAdam([p])
    for g in grads[:3]:
        p.grad = g.clone()
        optimizer.step()
    q = torch.nn.Parameter(p.detach().clone())
    resumed = KerasAdam([q])
    resumed.load_state_dict(copy.deepcopy(optimizer.state_dict()))         # as a checkpoint file holds it
    for g in grads[3:]:
        p.grad, q.grad = g.clone(), g.clone()
        optimizer.step()
        resumed.step()
    assert torch.equal(p, q)
    with pytest.raises(ValueError, match="torch's Adam"):
        KerasAdam([q]).load_state_dict(torch.optim.Adam([q]).state_dict())


def test_shapes_for_a_length_not_a_power_of_two():
    model = TimeVAEModel(3, 23, TimeVAEConfig(hidden_layer_sizes=(4, 8, 16)))
    assert model.lengths == [23, 12, 6, 3]
    mean, _ = model.encode(torch.zeros(2, 23, 3))
    assert model.decode(mean).shape == (2, 23, 3)


def test_trend_and_seasonality_terms():
    """The interpretable decoder: a polynomial trend (orders 1..P, no constant) and repeated seasonal values."""
    torch.manual_seed(0)
    config = TimeVAEConfig(hidden_layer_sizes=(4,), latent_dim=2, trend_poly=2, custom_seas=((3, 2),),
                           use_residual_conn=False)
    model = TimeVAEModel(1, 9, config)
    z = torch.randn(1, 2)
    base = model.level(z)[:, None, :]
    params = model.trend(z).reshape(1, 1, 2)[0, 0].detach().numpy()
    t = np.arange(9) / 9
    trend = params[0] * t + params[1] * t ** 2
    season = model.seasons[0](z).reshape(1, 1, 3)[0, 0].detach().numpy()[[0, 0, 1, 1, 2, 2, 0, 0, 1]]
    np.testing.assert_allclose(model.decode(z)[0, :, 0].detach().numpy(),
                               base[0, 0, 0].item() + trend + season, rtol=1e-5, atol=1e-6)


def test_keras_initialisation():
    model = TimeVAEModel(2, 8, TimeVAEConfig(hidden_layer_sizes=(4, 8)))
    for module in model.modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.ConvTranspose1d)):
            assert torch.all(module.bias == 0)
            fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(module.weight)
            assert module.weight.abs().max() <= math.sqrt(6 / (fan_in + fan_out)) + 1e-7


def _trace(losses, early_stop_patience, reduce_lr_patience):
    config = TimeVAEConfig(early_stop_patience=early_stop_patience, reduce_lr_patience=reduce_lr_patience)
    gen = TimeVAE(config)
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=config.lr)
    state = {"epoch": 0, "lr": config.lr, "best_stop": math.inf, "wait_stop": 0, "best_lr": math.inf, "wait_lr": 0,
             "stopped_early": False}
    trace = []
    for loss in losses:
        state["epoch"] += 1
        gen._callbacks(state, loss, optimizer)
        trace.append((state["lr"], state["stopped_early"]))
        if state["stopped_early"]:
            break
    assert optimizer.param_groups[0]["lr"] == state["lr"]
    return trace


def test_callbacks_against_a_hand_trace():
    """Keras's EarlyStopping (an improvement beats the best by min_delta 1e-2) and ReduceLROnPlateau (by 1e-4,
    ×0.5 after `patience` epochs without one), in their order, on a made-up loss curve."""
    losses = [10.0, 9.0, 8.995, 8.99, 8.99, 8.99, 5.0]
    # the plateau counts 8.995 and 8.99 as improvements (> 1e-4), then waits 1, 2: halves at epoch 6
    assert _trace(losses, 5, 2) == [(1e-3, False)] * 5 + [(5e-4, False), (5e-4, False)]
    # early stopping does not (< 1e-2): it waits 1, 2, 3 after epoch 2 and stops at epoch 5
    assert _trace(losses, 3, 30) == [(1e-3, False)] * 4 + [(1e-3, True)]


def test_as_released_the_callbacks_never_fire(one_thread):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 8, 2)).astype(np.float32)
    config = TimeVAEConfig.tiny()
    gen = get_generator("timevae", config, max_epochs=6, callbacks=False, early_stop_patience=1,
                        reduce_lr_patience=1)
    gen.fit(X, None, progress=False)
    assert gen.parts[None].history["epochs"] == 6 and gen.parts[None].history["final_lr"] == config.lr
