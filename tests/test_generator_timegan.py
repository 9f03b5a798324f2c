"""TimeGAN's own pieces against slow references: TF1's GRU cell, the losses of timegan.py, the phases, TF1's Adam.

The contract every generator keeps (shapes, seeds, save/load, resume, bad input) is tests/test_generators.py.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from tardiff.generators.base import Checkpoint
from tardiff.generators.timegan import (TF1Adam, TF1GRUCell, TF1GRULayer, TimeGAN, TimeGANConfig, TimeGANModel,
                                        _Batches, discriminator_step, embedder_step, embedding_step,
                                        generator_step, joint_iteration, moment_loss, supervised_loss,
                                        supervised_step)

pytestmark = pytest.mark.usefixtures("one_thread")

B, T, F = 8, 6, 3             # a short batch keeps each test in milliseconds
CONFIG = TimeGANConfig.tiny()  # hidden 8, 2 layers
NETWORKS = TimeGANModel.NETWORKS


def _model(seed: int = 0) -> TimeGANModel:
    torch.manual_seed(seed)
    return TimeGAN(CONFIG).build(F, T, None)


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand((B, T, F), generator=g), torch.rand((B, T, F), generator=g)


def _weights(model: TimeGANModel) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _changed(model: TimeGANModel, before: dict) -> set:
    """The networks with at least one weight that differs from `before`."""
    return {k.split(".")[0] for k, v in model.state_dict().items() if not torch.equal(v, before[k])}


# --------------------------------------------------------------------------- TF1's GRUCell

def _sigmoid(a):
    return 1 / (1 + np.exp(-a))


def _tf1_gru_numpy(x, gate_kernel, gate_bias, candidate_kernel, candidate_bias):
    """tf.nn.rnn_cell.GRUCell.call, one step at a time from a zero state, as rnn_cell_impl.py writes it."""
    H = len(candidate_bias)
    h, out = np.zeros((x.shape[1], H)), []
    for x_t in x:
        value = _sigmoid(np.concatenate([x_t, h], 1) @ gate_kernel + gate_bias)
        r, u = value[:, :H], value[:, H:]
        c = np.tanh(np.concatenate([x_t, r * h], 1) @ candidate_kernel + candidate_bias)
        h = u * h + (1 - u) * c
        out.append(h)
    return np.stack(out)


def _gru_args(seed=0, steps=5, batch=3, inputs=2, hidden=4):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(steps, batch, inputs)), rng.normal(size=(inputs + hidden, 2 * hidden)),
            rng.normal(size=2 * hidden), rng.normal(size=(inputs + hidden, hidden)), rng.normal(size=hidden)]


def test_gru_layer_forward_is_tf1_gru_cell():
    args = _gru_args()
    ours = TF1GRULayer.apply(*(torch.as_tensor(a) for a in args)).numpy()
    np.testing.assert_allclose(ours, _tf1_gru_numpy(*args), rtol=0, atol=1e-12)


def test_gru_layer_backward_matches_finite_differences():
    args = [torch.as_tensor(a).requires_grad_() for a in _gru_args(seed=1)]
    assert torch.autograd.gradcheck(TF1GRULayer.apply, args)


def test_gru_cell_starts_as_tf1():
    """Gate bias 1.0, candidate bias 0, Glorot-uniform kernels over (input + state) rows, not torch's U(±1/√H)."""
    torch.manual_seed(0)
    cell = TF1GRUCell(3, 8)
    assert torch.equal(cell.gate_bias, torch.ones(16)) and torch.equal(cell.candidate_bias, torch.zeros(8))
    for kernel, limit in ((cell.gate_kernel, math.sqrt(6 / (11 + 16))), (cell.candidate_kernel, math.sqrt(6 / 19))):
        assert kernel.abs().max() <= limit and kernel.abs().max() > 0.9 * limit > 1 / math.sqrt(8)
    head = _model().embedder.head                                   # fully_connected: Glorot weights, zero bias
    assert head.weight.abs().max() <= math.sqrt(6 / 16) and not head.bias.any()


# --------------------------------------------------------------------------- the five networks

def test_network_shapes_and_heads():
    model = _model()
    X, Z = _batch()
    H = CONFIG.hidden_dim
    with torch.no_grad():
        shapes = {"embedder": (X, H), "recovery": (torch.rand(B, T, H), F), "generator": (Z, H),
                  "supervisor": (torch.rand(B, T, H), H), "discriminator": (torch.rand(B, T, H), 1)}
        for name, (inputs, width) in shapes.items():
            net = getattr(model, name)
            out = net(inputs)
            assert out.shape == (B, T, width), name
            assert len(net.cells) == CONFIG.num_layer - (name == "supervisor"), name
            assert net.cells[0].gate_kernel.shape[0] == inputs.shape[2] + H, name
            if name != "discriminator":
                assert ((out > 0) & (out < 1)).all(), name          # sigmoid heads
        torch.nn.init.constant_(model.discriminator.head.bias, -100.0)
        assert (model.discriminator(torch.rand(B, T, H)) < 0).all()  # logits: no sigmoid
        np.testing.assert_array_equal(model(Z), model.recovery(model.supervisor(model.generator(Z))))


# --------------------------------------------------------------------------- the losses, against numpy

def test_moment_loss_against_numpy():
    rng = np.random.default_rng(0)
    X, X_hat = rng.uniform(size=(5, 4, 2)), rng.uniform(size=(5, 4, 2)) ** 2
    v1, v2 = [], []
    for t in range(4):
        for f in range(2):
            mean, mean_hat = sum(X[:, t, f]) / 5, sum(X_hat[:, t, f]) / 5
            var = sum((X[:, t, f] - mean) ** 2) / 5                 # population variance, as tf.nn.moments
            var_hat = sum((X_hat[:, t, f] - mean_hat) ** 2) / 5
            v1.append(abs(math.sqrt(var_hat + 1e-6) - math.sqrt(var + 1e-6)))
            v2.append(abs(mean_hat - mean))
    ours = moment_loss(torch.as_tensor(X_hat), torch.as_tensor(X))
    np.testing.assert_allclose([float(v) for v in ours], [np.mean(v1), np.mean(v2)], rtol=1e-12)


def test_supervised_loss_against_numpy():
    """H_hat_supervise at step t predicts H at step t + 1."""
    rng = np.random.default_rng(1)
    H, S = rng.uniform(size=(3, 5, 4)), rng.uniform(size=(3, 5, 4))
    terms = [(H[b, t, k] - S[b, t - 1, k]) ** 2 for b in range(3) for t in range(1, 5) for k in range(4)]
    ours = supervised_loss(torch.as_tensor(H), torch.as_tensor(S))
    np.testing.assert_allclose(float(ours), sum(terms) / len(terms), rtol=1e-12)


def _bce(logits, label):
    """tf.nn.sigmoid_cross_entropy_with_logits, averaged as tf.losses does."""
    return (logits.clamp(min=0) - logits * label + torch.log1p(torch.exp(-logits.abs()))).mean()


def _reference_losses(model, X, Z, gamma=1.0) -> dict:
    """timegan.py's graph, line by line, each network run on each input separately."""
    H = model.embedder(X)
    X_tilde = model.recovery(H)
    E_hat = model.generator(Z)
    H_hat = model.supervisor(E_hat)
    H_hat_supervise = model.supervisor(H)
    X_hat = model.recovery(H_hat)
    Y_fake, Y_real, Y_fake_e = model.discriminator(H_hat), model.discriminator(H), model.discriminator(E_hat)
    D_loss = _bce(Y_real, 1) + _bce(Y_fake, 0) + gamma * _bce(Y_fake_e, 0)
    G_loss_U, G_loss_U_e = _bce(Y_fake, 1), _bce(Y_fake_e, 1)
    G_loss_S = ((H[:, 1:, :] - H_hat_supervise[:, :-1, :]) ** 2).mean()
    mean, mean_hat = X.mean(0), X_hat.mean(0)
    var, var_hat = ((X - mean) ** 2).mean(0), ((X_hat - mean_hat) ** 2).mean(0)
    G_loss_V1 = (torch.sqrt(var_hat + 1e-6) - torch.sqrt(var + 1e-6)).abs().mean()
    G_loss_V2 = (mean_hat - mean).abs().mean()
    G_loss = G_loss_U + gamma * G_loss_U_e + 100 * torch.sqrt(G_loss_S) + 100 * (G_loss_V1 + G_loss_V2)
    E_loss_T0 = ((X - X_tilde) ** 2).mean()
    E_loss0 = 10 * torch.sqrt(E_loss_T0)
    return {"E_loss0": E_loss0, "E_loss": E_loss0 + 0.1 * G_loss_S, "G_loss": G_loss, "G_loss_S": G_loss_S,
            "D_loss": D_loss, "E_loss_T0": E_loss_T0, "G_loss_U": G_loss_U, "G_loss_V": G_loss_V1 + G_loss_V2}


SOLVERS = {  # solver: (its loss, its var_list, the step that runs it)
    "E0_solver": ("E_loss0", ("embedder", "recovery"), lambda m, opt, X, Z: embedding_step(m, opt, X)),
    "GS_solver": ("G_loss_S", ("generator", "supervisor"), lambda m, opt, X, Z: supervised_step(m, opt, X)),
    "G_solver": ("G_loss", ("generator", "supervisor"), lambda m, opt, X, Z: generator_step(m, opt, X, Z, 1.0)),
    "E_solver": ("E_loss", ("embedder", "recovery"), lambda m, opt, X, Z: embedder_step(m, opt, X)),
    "D_solver": ("D_loss", ("discriminator",),
                 lambda m, opt, X, Z: discriminator_step(m, opt, X, Z, 1.0, -math.inf)),
}


@pytest.mark.parametrize("solver", sorted(SOLVERS))
def test_each_solver_descends_the_authors_loss_on_its_var_list(solver):
    """The gradient each step applies is that of timegan.py's loss, on that solver's variables only."""
    loss_name, var_list, run = SOLVERS[solver]
    model = _model()
    X, Z = _batch()
    params = model.networks(*var_list)
    reference = _reference_losses(model, X, Z)
    expected = torch.autograd.grad(reference[loss_name], params, allow_unused=True)
    returned = run(model, torch.optim.SGD(params, lr=0.0), X, Z)      # lr 0: the gradients stay to be read
    for p, want in zip(params, expected):
        if want is None:                                               # GS_solver's generator: no path
            assert p.grad is None
        else:
            torch.testing.assert_close(p.grad, want, rtol=1e-4, atol=1e-6)
    others = [p for name in NETWORKS if name not in var_list for p in getattr(model, name).parameters()]
    assert all(p.grad is None for p in others)
    scalars = {"E0_solver": lambda r: [r["E_loss_T0"]], "GS_solver": lambda r: [r["G_loss_S"]],
               "E_solver": lambda r: [r["E_loss_T0"]], "D_solver": lambda r: [r["D_loss"]],
               "G_solver": lambda r: [r["G_loss_U"], r["G_loss_S"], r["G_loss_V"]]}[solver](reference)
    got = {"G_solver": lambda v: [v["g_loss_u"], v["g_loss_s"], v["g_loss_v"]],
           "D_solver": lambda v: [v[0]]}.get(solver, lambda v: [v])(returned)
    np.testing.assert_allclose(got, [s.item() for s in scalars], rtol=1e-5)


# --------------------------------------------------------------------------- the phases

def _solvers(model):
    return TimeGAN(CONFIG).solvers(model)


@pytest.mark.parametrize("step, solver, trained", [
    (lambda m, s, X, Z: embedding_step(m, s, X), "e0_solver", {"embedder", "recovery"}),
    (lambda m, s, X, Z: supervised_step(m, s, X), "gs_solver", {"supervisor"}),  # generator: in var_list, no grad
    (lambda m, s, X, Z: generator_step(m, s, X, Z, 1.0), "g_solver", {"generator", "supervisor"}),
    (lambda m, s, X, Z: embedder_step(m, s, X), "e_solver", {"embedder", "recovery"}),
    (lambda m, s, X, Z: discriminator_step(m, s, X, Z, 1.0, -math.inf), "d_solver", {"discriminator"}),
], ids=["phase1", "phase2", "phase3-G", "phase3-E", "phase3-D"])
def test_each_step_changes_only_its_networks(step, solver, trained):
    model = _model()
    solvers = _solvers(model)
    before = _weights(model)
    for seed in range(2):
        step(model, solvers[solver], *_batch(seed))
    assert _changed(model, before) == trained


def test_discriminator_steps_only_when_its_loss_exceeds_the_threshold():
    """The check is D_loss on this batch before the update; the step happens iff it is > the threshold."""
    model = _model()
    X, Z = _batch()
    check = _reference_losses(model, X, Z)["D_loss"].item()
    for threshold, should_step in ((check - 1e-4, True), (check + 1e-4, False)):
        m = copy.deepcopy(model)
        loss, stepped = discriminator_step(m, _solvers(m)["d_solver"], X, Z, 1.0, threshold)
        assert stepped == should_step and loss == pytest.approx(check, rel=1e-5)
        assert _changed(m, _weights(model)) == ({"discriminator"} if should_step else set())
    assert TimeGANConfig().d_loss_threshold == 0.15


@pytest.mark.parametrize("threshold, d_steps", [(1e9, 0), (-math.inf, 1)])
def test_joint_iteration_steps_generator_and_embedder_twice_per_discriminator_check(threshold, d_steps):
    model = _model()
    solvers = _solvers(model)
    config = TimeGANConfig.tiny()
    config.d_loss_threshold = threshold
    batches = _Batches(torch.rand(20, T, F), B, torch.Generator().manual_seed(0))
    joint_iteration(model, solvers, batches, config)
    steps = {name: opt.param_groups[0]["tf_step"] for name, opt in solvers.items()}
    assert steps == {"e0_solver": 0, "gs_solver": 0, "g_solver": 2, "e_solver": 2, "d_solver": d_steps}


# --------------------------------------------------------------------------- Adam, batches, sampling, resuming

def _tf1_adam_numpy(grads, lr, b1, b2, eps, float32_constants: bool):
    """training_ops' ApplyAdam: α_t = lr·√(1-β2^t)/(1-β1^t); m += (g-m)(1-β1); v += (g²-v)(1-β2); θ -= α_t·m/(√v + ε).
    With float32_constants, as TF runs it: lr, β, ε float32 and β^t the float32 running product (beta1_power)."""
    c = (lambda x: float(np.float32(x))) if float32_constants else float
    lr, b1, b2, eps = c(lr), c(b1), c(b2), c(eps)
    theta, m, v = np.zeros(grads.shape[1]), np.zeros(grads.shape[1]), np.zeros(grads.shape[1])
    p1 = p2 = np.float32(1) if float32_constants else 1.0
    for g in grads:
        p1, p2 = (p1 * np.float32(b1), p2 * np.float32(b2)) if float32_constants else (p1 * b1, p2 * b2)
        m, v = m + (g - m) * (1 - b1), v + (g * g - v) * (1 - b2)
        theta = theta - lr * math.sqrt(1 - float(p2)) / (1 - float(p1)) * m / (np.sqrt(v) + eps)
    return theta


def test_tf1_adam_matches_tensorflow_update_rule():
    """TF1's Adam with its float32 constants and powers; a large ε makes its placement matter, and the exact
    constants (1 - β2^t off by ~1e-5 relative) are told apart."""
    lr, b1, b2, eps = 0.1, 0.9, 0.999, 1e-3
    grads = np.random.default_rng(0).normal(scale=1e-3, size=(6, 4))
    results = {}
    for name, make in (("tf1", lambda p: TF1Adam([p], lr, (b1, b2), eps)),
                       ("torch", lambda p: torch.optim.Adam([p], lr, (b1, b2), eps))):
        p = torch.zeros(4, requires_grad=True)
        opt = make(p)
        for g in grads:
            p.grad = torch.as_tensor(g, dtype=torch.float32)
            opt.step()
        results[name] = p.detach().numpy()
    np.testing.assert_allclose(results["tf1"], _tf1_adam_numpy(grads, lr, b1, b2, eps, True), rtol=1e-6)
    assert not np.allclose(results["tf1"], _tf1_adam_numpy(grads, lr, b1, b2, eps, False), rtol=1e-6, atol=0)
    assert not np.allclose(results["torch"], _tf1_adam_numpy(grads, lr, b1, b2, eps, True), rtol=1e-2)


def test_tf1_adam_resumes_a_checkpoint_written_before_float32_constants():
    """An optimiser state saved with only tf_eps / tf_step resumes as if it had run with TF's constants throughout."""
    grads = np.random.default_rng(1).normal(size=(5, 3))
    params = [torch.zeros(3, requires_grad=True) for _ in range(2)]
    opts = [TF1Adam([p], 1e-3, (0.9, 0.999), 1e-8) for p in params]
    for i, g in enumerate(grads):
        if i == 3:                                  # the second one saved and restored in the old layout
            state = opts[1].state_dict()
            for group in state["param_groups"]:
                group.update(lr=1e-3, betas=(0.9, 0.999), tf_eps=1e-8)
                del group["tf_lr"], group["tf_powers"]
            opts[1] = TF1Adam([params[1]], 1e-3, (0.9, 0.999), 1e-8)
            opts[1].load_state_dict(state)
        for p, opt in zip(params, opts):
            p.grad = torch.as_tensor(g, dtype=torch.float32)
            opt.step()
    torch.testing.assert_close(params[1], params[0], rtol=1e-6, atol=0)


def test_batches_are_a_fresh_permutations_first_rows_with_uniform_noise():
    X = torch.arange(10.0)[:, None, None].expand(10, T, F)                # row i holds i
    batches = _Batches(X, 4, torch.Generator().manual_seed(0))
    first, Z = batches()
    rows = first[:, 0, 0].tolist()
    assert len(set(rows)) == 4 and Z.shape == (4, T, F) and (Z >= 0).all() and (Z < 1).all()
    assert batches()[0][:, 0, 0].tolist() != rows                       # a fresh permutation each time
    small, Z = _Batches(X[:3], 4, torch.Generator().manual_seed(0))()    # fewer stays than batch_size
    assert sorted(small[:, 0, 0].tolist()) == [0.0, 1.0, 2.0] and Z.shape == (3, T, F)


def test_generate_runs_uniform_noise_through_generator_supervisor_recovery():
    model = _model().eval()
    gen = TimeGAN(CONFIG, sample_batch_size=3)                           # 7 stays: three batches
    with torch.no_grad():
        ours = gen.generate(model, 7, None, seed=5, device=torch.device("cpu"), progress=False)
        Z = torch.rand((7, T, F), generator=torch.Generator().manual_seed(5))
        expected = model.recovery(model.supervisor(model.generator(Z))).numpy()
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-6)


class _Interrupt(Exception):
    pass


def test_a_fit_interrupted_in_the_joint_phase_resumes_there_bit_identically(tmp_path, monkeypatch):
    config = TimeGANConfig.tiny()
    config.iterations, config.log_every = 4, 2
    X = np.random.default_rng(0).normal(size=(16, T, F)).astype(np.float32)
    straight = TimeGAN(config).fit(X, seed=2, progress=False, checkpoint_dir=tmp_path / "a", checkpoint_every=1)
    original = Checkpoint.step

    def die_in_phase_three(self, progress, count, final=False):
        original(self, progress, count, final)
        if count == 2 * config.iterations + 2:
            raise _Interrupt
    monkeypatch.setattr(Checkpoint, "step", die_in_phase_three)
    with pytest.raises(_Interrupt):
        TimeGAN(config).fit(X, seed=2, progress=False, checkpoint_dir=tmp_path / "b", checkpoint_every=1)
    monkeypatch.setattr(Checkpoint, "step", original)
    saved = torch.load(tmp_path / "b" / "timegan_all.pt", weights_only=False)["progress"]
    assert (saved["phase"], saved["step"]) == (2, 2)                     # phases 0, 1, 2: joint, step 2
    resumed = TimeGAN(config).fit(X, seed=2, progress=False, checkpoint_dir=tmp_path / "b", checkpoint_every=1)
    for key, value in straight.parts[None].model.state_dict().items():
        torch.testing.assert_close(resumed.parts[None].model.state_dict()[key], value, rtol=0, atol=0, msg=key)
    history, again = straight.parts[None].history, resumed.parts[None].history
    assert history["loss"] == again["loss"] and history["d_steps"] == again["d_steps"]
    assert {k: len(v) for k, v in history["loss"].items()} == {
        "embedding": 2, "supervised": 2, "g_loss_u": 2, "g_loss_s": 2, "g_loss_v": 2, "e_loss_t0": 2, "d_loss": 2}


@pytest.mark.parametrize("override, message", [({"module": "lstm"}, "only 'gru'"),
                                               ({"num_layer": 1}, "num_layer >= 2")])
def test_unsupported_configs_are_refused(override, message):
    with pytest.raises(ValueError, match=message):
        TimeGAN(CONFIG, **override).build(F, T, None)
