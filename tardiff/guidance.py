"""Guidance hooks for the DDIM sampler: TarDiff influence guidance and classifier guidance.

A hook is `hook(x_t, t, pred_x0, y) -> Tensor like pred_x0`; the sampler adds
`guidance_scale * hook(...)` to pred_x0. Influence guidance steers each sample towards
a positive influence on the downstream classifier: score_i = Σ_m s(∇θ ℓ(f_m(x̂0_i), y_i), G_m)
over (classifier, reference gradient) pairs, s the dot product or the cosine, and
guidance_i = ∇_{x̂0_i} score_i (`pair_influence_guidance`). Which G a method uses (held-out
folds, the training set, H⁻¹G, TracIn checkpoints, a random control) is its registry row
(`tardiff.methods`); the released code's batch-coupled update is `original_guidance`.

Per sample and exact, without a loop over samples and without materialising B
per-sample gradients of 1.6 M parameters: a functional GRU with a hand-written
backward gives every sample's pre-activation gradients δ_it; a weight W used at every
step has per-sample gradient Σ_t δ_it a_itᵀ, so ⟨g_i, G⟩ = Σ_t δ_it·(G_W a_it) and
‖g_i‖² = Σ_{t,s} (δ_it·δ_is)(a_it·a_is) (the "ghost norm"). Every score_i is then a
differentiable expression of sample i alone, and one autograd backward of Σ_i score_i
gives every sample's guidance (derivation and a map from symbols to functions: docs/influence-guidance.md).
"""
from __future__ import annotations

import copy
from typing import Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jvp, vjp

from tardiff.utils import largest_remainder

Hook = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
Gradient = dict  # parameter name (as in classifier.named_parameters()) -> tensor shaped like it

_BATCH_EPS = 1e-6    # the original adds it to the batch gradient norm
_SAMPLE_EPS = 1e-12  # keeps ‖g_i‖ (and its derivative) finite when a sample has zero gradient


# --------------------------------------------------------------------------- train gradient
def _as_tensor(a, dtype, device) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a) if not torch.is_tensor(a) else a, dtype=dtype, device=device)


def _param_device_dtype(module: nn.Module):
    p = next(module.parameters())
    return p.device, p.dtype


def train_grad(classifier: nn.Module, X, y, batch_size: int = 512, label: int | None = None,
               normalize: bool = True, device=None) -> Gradient:
    """G = ∇θ Σ_i ℓ(f(x_i), y_i) over the real training set, as {parameter name: tensor}.

    Batched (the sum of a batch's losses has exactly the sum of per-sample gradients),
    classifier in eval mode (dropout off), L2-normalised over all parameters when
    `normalize`; `label=0/1` keeps one class only. batch_size=1 is the original's loop.
    """
    dev0, dtype = _param_device_dtype(classifier)
    device = dev0 if device is None else torch.device(device)
    model = classifier if device == dev0 else copy.deepcopy(classifier).to(device)
    X = _as_tensor(X, dtype, "cpu")
    y = _as_tensor(y, dtype, "cpu").reshape(-1)
    if X.ndim != 3 or X.shape[0] != y.shape[0]:
        raise ValueError(f"train_grad needs X (N, T, F) and y (N,), got {tuple(X.shape)} and {tuple(y.shape)}")
    if label is not None:
        keep = y == float(label)
        if not keep.any():
            raise ValueError(f"no training sample has label {label}; labels present: {sorted(set(y.tolist()))}")
        X, y = X[keep], y[keep]
    names, params = zip(*[(n, p) for n, p in model.named_parameters() if p.requires_grad])
    total = [torch.zeros_like(p) for p in params]
    was_training = model.training
    model.eval()
    try:
        for start in range(0, X.shape[0], batch_size):
            xb = X[start:start + batch_size].to(device)
            yb = y[start:start + batch_size].to(device)
            loss = F.binary_cross_entropy_with_logits(model(xb), yb, reduction="sum")
            for acc, g in zip(total, torch.autograd.grad(loss, params)):
                acc += g
    finally:
        model.train(was_training)
    if normalize:
        norm = torch.sqrt(sum((g * g).sum() for g in total))
        if norm == 0:
            raise ValueError("the training gradient is exactly zero; is the classifier's loss saturated?")
        total = [g / norm for g in total]
    return dict(zip(names, total))


# --------------------------------------------------------------------------- functional GRU
def _check_gru(classifier: nn.Module) -> nn.GRU:
    rnn = getattr(classifier, "rnn", None)
    if not isinstance(rnn, nn.GRU) or not rnn.batch_first or not isinstance(getattr(classifier, "head", None), nn.Linear):
        raise ValueError("per-sample influence guidance needs an RNNClassifier with a batch_first nn.GRU `.rnn` "
                         "and an nn.Linear `.head` (ClassifierConfig(rnn='gru')); for other classifiers use "
                         "normalize='batch' or influence_guidance_loop")
    if not rnn.bias:
        raise ValueError("the functional GRU expects nn.GRU(bias=True), as RNNClassifier builds it")
    return rnn


def _gru_layers(rnn: nn.GRU, source: Mapping[str, torch.Tensor], prefix: str, device, dtype):
    """Per layer (W_ih (D,3H,in), W_hh (D,3H,H), b_ih (D,3H), b_hh (D,3H)), directions stacked."""
    suffixes = [""] + (["_reverse"] if rnn.bidirectional else [])
    layers = []
    for layer in range(rnn.num_layers):
        def get(kind):
            return torch.stack([source[f"{prefix}{kind}_l{layer}{s}"].detach() for s in suffixes]).to(device, dtype)
        layers.append((get("weight_ih"), get("weight_hh"), get("bias_ih"), get("bias_hh")))
    return layers


def _flip_second(Xp: torch.Tensor, dirs: int) -> torch.Tensor:
    """(K*dirs, B, T, ·), members x directions, with every member's direction 1 time-reversed:
    original order <-> processing order."""
    if dirs == 1:
        return Xp
    # unbind, not indexing: indexing's backward zero-fills all of Xp
    forward, backward = Xp.unflatten(0, (-1, 2)).unbind(1)
    return torch.stack([forward, backward.flip(2)], 1).flatten(0, 1)


def _gru_forward(Xp, W_ih, W_hh, b_ih, b_hh):
    """One layer, all directions at once. Xp (D, B, T, in) in each direction's processing order.

    Returns the states hs (D,B,T,H) and `back`, what the hand-written backward needs.
    """
    D, B, T, n_in = Xp.shape
    H = W_hh.shape[-1]
    gi = torch.baddbmm(b_ih.unsqueeze(1), Xp.reshape(D, B * T, n_in), W_ih.transpose(1, 2))  # (D, B*T, 3H)
    # per-gate, per-step views; unbind (not indexing or per-step split): each backward is one stack
    g_r, g_z, g_n = (g.unbind(2) for g in gi.view(D, B, T, 3, H).unbind(3))
    W_hhT = W_hh.transpose(1, 2)  # (D, H, 3H)
    b_hh = b_hh.unsqueeze(1)      # (D, 1, 3H)
    h = Xp.new_zeros(D, B, H)
    hs, zs, A_ns, Cs = [], [], [], []
    for t in range(T):
        gh_r, gh_z, gh_n = torch.baddbmm(b_hh, h, W_hhT).view(D, B, 3, H).unbind(2)
        r = torch.sigmoid(g_r[t] + gh_r)
        z = torch.sigmoid(g_z[t] + gh_z)
        n = torch.tanh(torch.addcmul(g_n[t], r, gh_n))
        # local derivatives for the backward, computed here while this step's tensors are in cache:
        # δn = δh A_n, A_n = (1-z)(1-n²);  δ(W_hh h + b_hh) = δh * [A_n r(1-r) gh_n, (h-n) z(1-z), A_n r]
        A_n = (1 - z) * (1 - n * n)
        Cs.append(torch.stack([A_n * r * (1 - r) * gh_n, (h - n) * z * (1 - z), A_n * r], -2))  # (D, B, 3, H)
        zs.append(z), A_ns.append(A_n)
        h = torch.lerp(n, h, z)  # (1 - z) n + z h
        hs.append(h)
    h_prev = torch.stack([torch.zeros_like(h)] + hs[:-1], 2)
    return torch.stack(hs, 2), dict(A_n=A_ns, z=zs, C=Cs, h_prev=h_prev)


def _stack_forward(layers, x, dirs: int):
    """Functional nn.GRU (batch_first) of K stacked members over x (B, T, F): per layer (input Xp, backward
    cache), the last layer's outputs (K, B, T, dirs*H) and the head's features (K, B, dirs*H) =
    [fwd h_T, bwd h_0]. Members and directions share every batched product (D = K*dirs)."""
    D, H, (B, T, _) = layers[0][0].shape[0], layers[0][1].shape[-1], x.shape
    K = D // dirs
    Xp = _flip_second(x.expand(D, *x.shape), dirs)  # (D, B, T, F)
    saved = []
    for W_ih, W_hh, b_ih, b_hh in layers:
        hs, back = _gru_forward(Xp, W_ih, W_hh, b_ih, b_hh)
        saved.append((Xp, back))
        # (K, B, T, dirs*H), original time order: each member's outputs feed only its own next layer
        out = _flip_second(hs, dirs).unflatten(0, (K, dirs)).permute(0, 2, 3, 1, 4).reshape(K, B, T, dirs * H)
        Xp = _flip_second(out.unsqueeze(1).expand(K, dirs, B, T, dirs * H).flatten(0, 1), dirs)
    feat = hs.unbind(2)[-1].unflatten(0, (K, dirs)).transpose(1, 2).reshape(K, B, dirs * H)
    return saved, out, feat


def _gru_backward(back, W_hh, dh_last=None, dhs=None):
    """Hand-written BPTT for one layer: δ of the pre-activations (D, B, T, ·), processing order.

    dh_last (D,B,H): gradient on each direction's final state; dhs (D,B,T,H): on every output.
    Returns d_recurrent = δ(W_hh h + b_hh) (D,B,T,3H) and d_new_input (D,B,T,H); δ(W_ih x + b_ih) is
    [d_recurrent[..., :2H], d_new_input] (the n gate's recurrent part is scaled by r, its input part is not).
    """
    z, C = back["z"], back["C"]
    T = len(z)
    D, B, _, H = C[0].shape
    dh = torch.zeros_like(z[0]) if dh_last is None else dh_last
    dhs = dhs.unbind(2) if dhs is not None else None
    dghs, dns = [None] * T, [None] * T
    for t in range(T - 1, -1, -1):
        if dhs is not None:
            dh = dh + dhs[t]
        dghs[t] = (dh.unsqueeze(-2) * C[t]).view(D, B, 3 * H)
        dns[t] = dh * back["A_n"][t]
        if t > 0:
            dh = torch.baddbmm(dh * z[t], dghs[t], W_hh)
    return torch.stack(dghs, 2), torch.stack(dns, 2)


def _gi_matmul(d_reset_update, d_new_input, M):
    """[d_reset_update, d_new_input] @ M over all steps: (D,B,T,2H), (D,B,T,H), M (D,3H,k) -> (D,B,T,k)."""
    D, B, T, H = d_new_input.shape
    out = torch.bmm(d_new_input.reshape(D, B * T, H), M[:, 2 * H:])
    return torch.baddbmm(out, d_reset_update.reshape(D, B * T, 2 * H), M[:, :2 * H]).view(D, B, T, -1)


def _rowdot(a, b, dirs: int):
    """Σ over every dim but K and B of a*b, for (K*dirs, B, ...) tensors -> (K, B)."""
    return (a * b).flatten(2).sum(-1).unflatten(0, (-1, dirs)).sum(1)


def _gram(a):
    """Per (D, B) Gram matrix over time: (D, B, T, k) -> (D, B, T, T)."""
    return a @ a.transpose(-1, -2)


class _LayerTerms(torch.autograd.Function):
    """One GRU layer's share of ⟨g_i, G⟩ and ‖g_i‖² (per member, (K, B)), and δ on its input, from its δ.
    D = K members x `dirs` directions; ‖g_i‖² (the Grams) only if `norms`.

    Inputs (processing order): d_recurrent = δ(W_hh h + b_hh) (D,B,T,3H), d_new_input = δ of the n gate's
    input pre-activation (D,B,T,H), the layer's inputs Xp (D,B,T,in) and h_prev (D,B,T,H); the rest are
    constants. δ(W_ih x + b_ih) = [d_reset_update, d_new_input] with d_reset_update = d_recurrent[..., :2H];
    d_new_recurrent = d_recurrent[..., 2H:] (the n gate's recurrent part, scaled by r).
      ⟨g_i, G⟩ = Σ_t (δ G_W)·a_t + (Σ_t δ)·G_b over (W_ih, x) and (W_hh, h_prev);
      ‖g_i‖² = Σ_ts gram_reset_update∘(gram_inputs + gram_states) + gram_new_input∘gram_inputs
               + gram_new_recurrent∘gram_states,
    with gram_* of the δ over time, gram_inputs = Xp Xpᵀ + 1 and gram_states = h_prev h_prevᵀ + 1 (ghost norm;
    +1 for biases; docs/influence-guidance.md). The backward is written out: fused matmuls, no split/cat.
    """

    @staticmethod
    def forward(ctx, d_recurrent, d_new_input, Xp, h_prev, W_ih, G_ih, G_hh, G_bih, G_bhh, dirs, norms):
        D, B, T, H = d_new_input.shape
        n_in = Xp.shape[-1]
        d_reset_update, d_new_recurrent = d_recurrent[..., :2 * H], d_recurrent[..., 2 * H:]
        # (D,B,T,2in): δ on the layer input and δ G_ih in one product
        both = _gi_matmul(d_reset_update, d_new_input, torch.cat([W_ih, G_ih], 2))
        d_layer_input, d_G_input = both[..., :n_in], both[..., n_in:]
        d_G_hidden = torch.bmm(d_recurrent.reshape(D, B * T, 3 * H), G_hh).view(D, B, T, H)
        bias = (torch.einsum("dbk,dk->db", d_recurrent.sum(2), G_bhh)
                + torch.einsum("dbk,dk->db", d_reset_update.sum(2), G_bih[:, :2 * H])
                + torch.einsum("dbk,dk->db", d_new_input.sum(2), G_bih[:, 2 * H:])).unflatten(0, (-1, dirs)).sum(1)
        num = _rowdot(d_G_input, Xp, dirs) + _rowdot(d_G_hidden, h_prev, dirs) + bias
        grams = ()
        if norms:  # ‖g_i‖² only where the score needs it (cos): the Grams are most of this layer's cost
            grams = (_gram(d_reset_update), _gram(d_new_input), _gram(d_new_recurrent), _gram(Xp) + 1,
                     _gram(h_prev) + 1)
            gram_reset_update, gram_new_input, gram_new_recurrent, gram_inputs, gram_states = grams
            sq = (_rowdot(gram_reset_update, gram_inputs + gram_states, dirs)
                  + _rowdot(gram_new_input, gram_inputs, dirs) + _rowdot(gram_new_recurrent, gram_states, dirs))
        else:
            sq = torch.zeros_like(num)
            ctx.mark_non_differentiable(sq)
        ctx.save_for_backward(d_recurrent, d_new_input, Xp, h_prev, d_G_input, d_G_hidden, W_ih, G_ih, G_hh, G_bih,
                              G_bhh, *grams)
        ctx.dirs, ctx.norms = dirs, norms
        return num, sq, d_layer_input

    @staticmethod
    def backward(ctx, grad_num, grad_sq, grad_d_layer_input):
        (d_recurrent, d_new_input, Xp, h_prev, d_G_input, d_G_hidden, W_ih, G_ih, G_hh, G_bih, G_bhh,
         *grams) = ctx.saved_tensors
        D, B, T, H = d_new_input.shape
        n_in = Xp.shape[-1]
        u = grad_num.repeat_interleave(ctx.dirs, 0)[:, :, None, None]  # (K, B) -> (K*dirs, B, 1, 1)
        # δ-side: u (G_W a + G_b) from the numerator, grad_d_layer_input W_ih from d_layer_input
        P = torch.bmm(torch.cat([u * Xp, grad_d_layer_input], -1).view(D, B * T, 2 * n_in),
                      torch.cat([G_ih, W_ih], 2).transpose(1, 2)).view(D, B, T, 3 * H)
        grad_d_recurrent = torch.bmm((u * h_prev).view(D, B * T, H), G_hh.transpose(1, 2)).view(D, B, T, 3 * H)
        grad_d_recurrent += u * G_bhh[:, None, None, :]
        grad_d_recurrent[..., :2 * H] += P[..., :2 * H] + u * G_bih[:, None, None, :2 * H]
        grad_d_new_input = P[..., 2 * H:] + u * G_bih[:, None, None, 2 * H:]
        # input side: u δ G_W from the numerator
        grad_Xp = u * d_G_input
        grad_h_prev = u * d_G_hidden
        if ctx.norms:  # 2 c K δ and 2 c K a from the ghost norm (Grams are symmetric: ∂ Σ K∘(a aᵀ) / ∂a = 2 K a)
            gram_reset_update, gram_new_input, gram_new_recurrent, gram_inputs, gram_states = grams
            c2 = 2 * grad_sq.repeat_interleave(ctx.dirs, 0)[:, :, None, None]
            grad_d_recurrent += (c2 * gram_states) @ d_recurrent
            grad_d_recurrent[..., :2 * H] += (c2 * gram_inputs) @ d_recurrent[..., :2 * H]
            grad_d_new_input += (c2 * gram_inputs) @ d_new_input
            grad_Xp += (c2 * (gram_reset_update + gram_new_input)) @ Xp
            grad_h_prev += (c2 * (gram_reset_update + gram_new_recurrent)) @ h_prev
        return grad_d_recurrent, grad_d_new_input, grad_Xp, grad_h_prev, None, None, None, None, None, None, None


def _architecture(classifier) -> tuple:
    rnn = _check_gru(classifier)
    return rnn.input_size, rnn.hidden_size, rnn.num_layers, rnn.bidirectional


def _stacked_layers(rnns, sources, device, dtype):
    """Per layer, the members' (W_ih, W_hh, b_ih, b_hh) concatenated along D = members x directions."""
    per_member = [_gru_layers(rnn, source, "rnn.", device, dtype) for rnn, source in zip(rnns, sources)]
    return [tuple(torch.cat(parts) for parts in zip(*layer)) for layer in zip(*per_member)]


def _influence_terms(pairs, x, y, norms: bool = True):
    """Per-sample ⟨g_i, G⟩ and ‖g_i‖² of each (classifier, G) pair, (K, B) each, differentiable w.r.t.
    x (B, T, F); ‖g_i‖² is None unless `norms`. The K pairs (one architecture) run stacked: every GRU step is one batched product for all
    of them, which is what makes cross-fit folds and TracIn checkpoints cheap."""
    classifiers = [classifier for classifier, _ in pairs]
    if len({_architecture(c) for c in classifiers}) != 1:
        raise ValueError("stacked influence terms need classifiers of one architecture; group the pairs first")
    for classifier, G in pairs:
        _check_gradient(classifier, G)
    device, dtype = x.device, x.dtype
    rnns = [c.rnn for c in classifiers]
    Ws = [{n: p.detach() for n, p in c.named_parameters()} for c in classifiers]
    Gs = [G for _, G in pairs]
    layers = _stacked_layers(rnns, Ws, device, dtype)
    glayers = _stacked_layers(rnns, Gs, device, dtype)

    def head(sources, name):
        return torch.stack([s[name].detach().to(device, dtype).reshape(-1) for s in sources])

    w_head, b_head = head(Ws, "head.weight"), head(Ws, "head.bias")    # (K, dirs*H), (K, 1)
    Gw_head, Gb_head = head(Gs, "head.weight"), head(Gs, "head.bias")
    dirs, H, (B, T, _) = (2 if rnns[0].bidirectional else 1), rnns[0].hidden_size, x.shape
    K = len(pairs)

    saved, _, feat = _stack_forward(layers, x, dirs)                   # feat (K, B, dirs*H)
    dlogit = torch.sigmoid(torch.einsum("kbf,kf->kb", feat, w_head) + b_head) - y  # dℓ/dlogit of BCE

    # head: per-sample gradient dlogit * [feat, 1]
    num = dlogit * (torch.einsum("kbf,kf->kb", feat, Gw_head) + Gb_head)
    sq = dlogit * dlogit * ((feat * feat).sum(-1) + 1) if norms else None

    dh_last = (dlogit[..., None] * w_head[:, None]).view(K, B, dirs, H).transpose(1, 2).flatten(0, 1)  # (D, B, H)
    dhs = None
    for li in range(len(layers) - 1, -1, -1):
        W_ih, W_hh, _, _ = layers[li]
        G_ih, G_hh, G_bih, G_bhh = glayers[li]
        Xp, back = saved[li]
        d_recurrent, d_new_input = _gru_backward(back, W_hh, dh_last=dh_last if dhs is None else None, dhs=dhs)
        num_l, sq_l, d_layer_input = _LayerTerms.apply(d_recurrent, d_new_input, Xp, back["h_prev"], W_ih, G_ih,
                                                       G_hh, G_bih, G_bhh, dirs, norms)
        num, sq = num + num_l, (sq + sq_l if norms else None)
        if li > 0:  # δ on this layer's input = δ on the outputs of the layer below, summed over directions
            d_below_outputs = _flip_second(d_layer_input, dirs).unflatten(0, (K, dirs)).sum(1)  # (K, B, T, dirs*H)
            dhs = _flip_second(d_below_outputs.view(K, B, T, dirs, H).permute(0, 3, 1, 2, 4).flatten(0, 1), dirs)
    return num, sq


SCORES = ("cos", "dot")


def _sample_scores(pairs, x, y, score: str = "cos") -> torch.Tensor:
    """Per pair and sample (K, B): score="cos": cos(g_i, G) (the original's per-sample form); "dot": g_iᵀG,
    which keeps the |σ − y| weight."""
    num, sq = _influence_terms(pairs, x, y, norms=score != "dot")
    if score == "dot":
        return num
    return num / torch.sqrt(sq.clamp_min(_SAMPLE_EPS ** 2))


def _pair_scores(pairs, x, y, score: str) -> torch.Tensor:
    """Σ over (classifier, reference gradient) pairs of each sample's score: cross-fit folds, TracIn checkpoints.
    Pairs of one architecture are scored stacked, in one pass."""
    groups: dict = {}
    for pair in pairs:
        groups.setdefault(_architecture(pair[0]), []).append(pair)
    return sum(_sample_scores(group, x, y, score).sum(0) for group in groups.values())


def _targets(y, like: torch.Tensor) -> torch.Tensor:
    y = torch.as_tensor(y, device=like.device).to(like.dtype).reshape(-1)
    if y.shape[0] != like.shape[0]:
        raise ValueError(f"need one target label per sample: got {y.shape[0]} labels for {like.shape[0]} samples")
    return y


def _check_gradient(classifier, train_gradient):
    missing = [n for n, p in classifier.named_parameters() if p.requires_grad and n not in train_gradient]
    if missing:
        raise ValueError(f"train_gradient has no entry for {missing[:3]}: compute it with "
                         f"train_grad(classifier, X_train, y_train) for this classifier")


def _module_params(classifier, train_gradient, like):
    _check_gradient(classifier, train_gradient)
    names, params = zip(*[(n, p) for n, p in classifier.named_parameters() if p.requires_grad])
    return params, [train_gradient[n].to(like.device, like.dtype) for n in names]


def _loss_gradient(classifier, train_gradient, x, y, reduction: str):
    """∇θ of the batch's BCE loss (`reduction` "mean" or "sum"), differentiable w.r.t. x, and its dot with G."""
    params, Gs = _module_params(classifier, train_gradient, x)
    loss = F.binary_cross_entropy_with_logits(classifier(x), y, reduction=reduction)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    return grads, sum((g * G).sum() for g, G in zip(grads, Gs))


def _batch_guidance(classifier, train_gradient, x, y) -> torch.Tensor:
    """The original's way: ∇_x ⟨ḡ/(‖ḡ‖+1e-6), G⟩, ḡ the gradient of the batch's mean loss (couples the batch)."""
    x = x.detach().requires_grad_(True)
    grads, dot = _loss_gradient(classifier, train_gradient, x, y, "mean")
    norm = torch.sqrt(sum((g * g).sum() for g in grads))
    return torch.autograd.grad(dot / (norm + _BATCH_EPS), x)[0]


def influence_scores(classifier: nn.Module, train_gradient: Gradient, x: torch.Tensor, y,
                     score: str = "cos") -> torch.Tensor:
    """score_i = cos(∇θ ℓ(f(x_i), y_i), G) (or g_iᵀG with score="dot") for every sample, (B,); exact, vectorised."""
    _check_score(score)
    with torch.no_grad():
        return _sample_scores([(classifier, train_gradient)], x.detach(), _targets(y, x), score)[0]


def _check_score(score: str) -> None:
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")


def original_guidance(classifier: nn.Module, train_gradient: Gradient) -> Hook:
    """The released code's coupled score: the mean-loss gradient of the whole batch, normalised once, dotted
    with G and differentiated w.r.t. the batch; a sample's guidance then depends on the others and is ~1/B
    as large. The exact per-sample cosine is `pair_influence_guidance([(classifier, G)], "cos")`."""

    def hook(x_t, t, pred_x0, y):
        was_training = classifier.training
        classifier.eval()  # the original's module path must not run dropout
        try:
            with torch.enable_grad():
                return _batch_guidance(classifier, train_gradient, pred_x0, _targets(y, pred_x0)).detach()
        finally:
            classifier.train(was_training)

    return hook


def influence_guidance_loop(classifier: nn.Module, train_gradient: Gradient, x: torch.Tensor, y) -> torch.Tensor:
    """Slow reference: one sample at a time, plain autograd (double backward) on the module, as the
    original computes it for a batch of one. Works for any classifier; for tests and benchmarks."""
    y = _targets(y, x)
    params, Gs = _module_params(classifier, train_gradient, x)
    was_training = classifier.training
    classifier.eval()
    out = []
    try:
        with torch.enable_grad():
            for i in range(x.shape[0]):
                xi = x[i:i + 1].detach().requires_grad_(True)
                loss = F.binary_cross_entropy_with_logits(classifier(xi), y[i:i + 1], reduction="sum")
                grads = torch.autograd.grad(loss, params, create_graph=True)
                sq = sum((g * g).sum() for g in grads)
                score = sum((g * G).sum() for g, G in zip(grads, Gs)) / torch.sqrt(sq.clamp_min(_SAMPLE_EPS ** 2))
                out.append(torch.autograd.grad(score, xi)[0])
    finally:
        classifier.train(was_training)
    return torch.cat(out).detach()


# --------------------------------------------------------------------------- classifier guidance
def classifier_guidance(classifier: nn.Module) -> Hook:
    """Hook returning ∇_{pred_x0} log p(y | pred_x0) per sample (classifier in eval mode)."""

    def hook(x_t, t, pred_x0, y):
        was_training = classifier.training
        classifier.eval()
        try:
            with torch.enable_grad():
                x = pred_x0.detach().requires_grad_(True)
                target = _targets(y, x)
                logit = classifier(x)
                # log p(y|x) = y log σ(f) + (1 - y) log σ(-f); samples are independent in eval mode
                logp = target * F.logsigmoid(logit) + (1 - target) * F.logsigmoid(-logit)
                (grad,) = torch.autograd.grad(logp.sum(), x)
        finally:
            classifier.train(was_training)
        return grad.detach()

    return hook


# --------------------------------------------------------------------------- labels to generate
def target_labels(y_train, n: int | Mapping | None = None, seed: int = 0) -> np.ndarray:
    """Labels to generate, shuffled: by default as many of each label as in y_train; an int `n`
    keeps the proportions (largest remainder, total exactly n); a dict {label: count} is explicit."""
    y_train = np.asarray(y_train).reshape(-1)
    if isinstance(n, Mapping):
        if any(int(c) < 0 for c in n.values()):
            raise ValueError(f"label counts must be >= 0, got {dict(n)}")
        counts = {k: int(c) for k, c in n.items()}
    else:
        labels, real = np.unique(y_train, return_counts=True)
        if len(labels) == 0:
            raise ValueError("y_train is empty: cannot take label proportions from it")
        if n is None:
            counts = dict(zip(labels.tolist(), real.tolist()))
        else:
            if int(n) < 0:
                raise ValueError(f"n must be >= 0, got {n}")
            counts = dict(zip(labels.tolist(), largest_remainder(real, int(n)).tolist()))
    dtype = y_train.dtype if y_train.size else np.int64
    out = np.concatenate([np.full(c, k, dtype=dtype) for k, c in counts.items()]) if counts else np.array([], dtype)
    return np.random.default_rng(seed).permutation(out)


# --------------------------------------------------------------------------- TarDiff, the general form
# The reference gradients a hook can use: G from a held-out guidance set (the paper's expected loss),
# from the training set (the original's choice), a random direction (a control), H⁻¹G (true influence),
# and any of these summed over several classifiers (cross-fit folds, TracIn checkpoints).
Pairs = list  # [(classifier, reference gradient)], the score is summed over them


def reference_gradient(classifier: nn.Module, X, y, normalize: bool = False, batch_size: int = 512) -> Gradient:
    """∇θ of the *mean* loss over (X, y): the expected-loss gradient a held-out guidance set estimates."""
    G = train_grad(classifier, X, y, batch_size=batch_size, normalize=False)
    n = len(np.asarray(y).reshape(-1))
    G = {k: v / n for k, v in G.items()}
    return unit(G) if normalize else G


def unit(G: Gradient) -> Gradient:
    norm = torch.sqrt(sum((g * g).sum() for g in G.values()))
    if norm == 0:
        raise ValueError("the reference gradient is exactly zero; is the classifier's loss saturated?")
    return {k: v / norm for k, v in G.items()}


def random_gradient(classifier: nn.Module, seed: int = 0) -> Gradient:
    """A random unit direction in parameter space: guidance along it is a control, not influence."""
    generator = torch.Generator().manual_seed(seed)
    G = {n: torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device)
         for n, p in classifier.named_parameters() if p.requires_grad}
    return unit(G)


def inverse_hvp(classifier: nn.Module, X, y, G: Gradient, damping: float = 0.01, max_iter: int = 50,
                tol: float = 1e-3, batch_size: int = 1024, curvature: str = "ggn") -> tuple[Gradient, dict]:
    """(H + λI)⁻¹ G by conjugate gradient, H the curvature of the mean training loss over (X, y).

    curvature="ggn" (default): the Gauss-Newton matrix (1/N) Σ σ_i(1 − σ_i) J_iᵀJ_i, positive semi-definite,
    so CG converges for any λ > 0; products are a forward-mode `torch.func.jvp` then a `vjp`.
    curvature="hessian": the exact Hessian, products reverse-over-reverse (`vjp` of `grad`); at an
    early-stopped GRU it has negative curvature larger than a small λ and CG then does not converge
    (measured: relative residuals 0.2-1.6 after 30 iterations at λ = 0.01). Summed over batches, classifier
    in eval mode. Returns the solution and {iterations, relative_residual ‖(H+λI)v − G‖/‖G‖, damping, curvature}.
    """
    if curvature not in ("ggn", "hessian"):
        raise ValueError(f"curvature must be 'ggn' or 'hessian', got {curvature!r}")

    device, dtype = _param_device_dtype(classifier)
    X = _as_tensor(X, dtype, "cpu")
    y = _as_tensor(y, dtype, "cpu").reshape(-1)
    names = [n for n, p in classifier.named_parameters() if p.requires_grad]
    params = {n: p.detach() for n, p in classifier.named_parameters() if p.requires_grad}
    was_training = classifier.training
    classifier.eval()

    def loss(p, xb, yb):
        return F.binary_cross_entropy_with_logits(functional_call(classifier, p, (xb,)), yb, reduction="sum")

    def hvp(v: dict) -> dict:
        out = {n: torch.zeros_like(params[n]) for n in names}
        for start in range(0, len(y), batch_size):
            xb, yb = X[start:start + batch_size].to(device), y[start:start + batch_size].to(device)
            if curvature == "hessian":
                _, vjp_fn = vjp(lambda p: grad(loss)(p, xb, yb), params)
                product = vjp_fn(v)[0]
            else:
                logits, Jv = jvp(lambda p: functional_call(classifier, p, (xb,)), (params,), (v,))  # (b,), (b,)
                weight = torch.sigmoid(logits) * torch.sigmoid(-logits)   # ∂²ℓ/∂logit² of BCE
                _, vjp_fn = vjp(lambda p: functional_call(classifier, p, (xb,)), params)
                product = vjp_fn(weight * Jv)[0]
            for n, h in product.items():
                out[n] += h
        return {n: out[n] / len(y) + damping * v[n] for n in names}

    def dot(a, b):
        return sum((a[n] * b[n]).sum() for n in names)

    try:
        b = {n: G[n].to(device, dtype) for n in names}
        x = {n: torch.zeros_like(b[n]) for n in names}
        r = dict(b)
        p = dict(b)
        rr, b_norm = dot(r, r), torch.sqrt(dot(b, b))
        iterations = 0
        for iterations in range(1, max_iter + 1):
            Ap = hvp(p)
            alpha = rr / dot(p, Ap)
            x = {n: x[n] + alpha * p[n] for n in names}
            r = {n: r[n] - alpha * Ap[n] for n in names}
            rr_new = dot(r, r)
            if torch.sqrt(rr_new) <= tol * b_norm:
                break
            p = {n: r[n] + (rr_new / rr) * p[n] for n in names}
            rr = rr_new
        Ax = hvp(x)
        residual = float(torch.sqrt(dot({n: Ax[n] - b[n] for n in names}, {n: Ax[n] - b[n] for n in names})) / b_norm)
    finally:
        classifier.train(was_training)
    return x, {"iterations": iterations, "relative_residual": residual, "damping": damping, "curvature": curvature}


def pair_influence_guidance(pairs: Pairs, score: str = "dot") -> Hook:
    """Hook: ∇_{x̂0_i} Σ_m score(g_i(θ_m), G_m), exact per sample and vectorised: score "dot" by one
    double backward of the summed loss (`_dot_guidance`), "cos" by the per-sample GRU algebra.

    One pair (f_θ, G) is TarDiff; several are cross-fit folds or TracIn checkpoints of one run.
    """
    _check_score(score)
    for classifier, _ in pairs:
        _check_gru(classifier)

    def hook(x_t, t, pred_x0, y):
        for classifier, _ in pairs:
            classifier.eval()
        with torch.enable_grad():
            if score == "dot":
                return _dot_guidance(pairs, pred_x0, _targets(y, pred_x0)).detach()
            x = pred_x0.detach().requires_grad_(True)
            total = _pair_scores(pairs, x, _targets(y, x), score)
            return torch.autograd.grad(total.sum(), x)[0].detach()

    return hook


def _dot_guidance(pairs, x, y) -> torch.Tensor:
    """∇_{x_i} Σ_m g_i(θ_m)ᵀG_m for every sample i, exact.

    With the dot score no sample's term depends on another sample's x, so this is the gradient of
    ⟨∇θ Σ_j ℓ_j, G⟩: the original's batch computation with the loss summed and without its batch norm,
    which is what couples its samples. One double backward through the module per pair, the cost of the
    original's coupled gradient (benchmarks/bench_guidance.py measures both)."""
    x = x.detach().requires_grad_(True)
    total = sum(_loss_gradient(classifier, G, x, y, "sum")[1] for classifier, G in pairs)
    return torch.autograd.grad(total, x)[0]


def pair_scores(pairs: Pairs, X, y, score: str = "dot", batch_size: int = 512) -> np.ndarray:
    """(N,) Σ_m score(g_i(θ_m), G_m) of stays X with labels y: used to rank over-generated samples."""
    _check_score(score)
    classifier = pairs[0][0]
    device, dtype = _param_device_dtype(classifier)
    X, y = _as_tensor(X, dtype, "cpu"), _as_tensor(y, dtype, "cpu").reshape(-1)
    out = []
    with torch.no_grad():
        for start in range(0, len(y), batch_size):
            xb, yb = X[start:start + batch_size].to(device), y[start:start + batch_size].to(device)
            out.append(_pair_scores(pairs, xb, yb, score).cpu())
    return torch.cat(out).numpy() if out else np.zeros(0)


def normalized(hook: Hook, X_ref, y_ref) -> Hook:
    """`hook` divided by the RMS of its output on real stays (as x̂0, t = 0), a constant per hook.

    Then guidance_scale is a step in model-space sd per value and means the same for every f_θ,
    score and reference gradient; samples stay independent (the constant does not depend on the batch).
    """
    with torch.enable_grad():
        x = torch.as_tensor(np.asarray(X_ref), dtype=torch.float32)
        t = torch.zeros(len(x), dtype=torch.long)
        rms = float(hook(x, t, x, torch.as_tensor(np.asarray(y_ref))).pow(2).mean().sqrt())
    if not np.isfinite(rms) or rms == 0:
        raise ValueError(f"the guidance is zero or not finite on the reference stays (RMS {rms}); "
                         "cannot normalise its step")

    def scaled(x_t, t, pred_x0, y):
        return hook(x_t, t, pred_x0, y) / rms

    scaled.reference_rms = rms
    return scaled


def scheduled(hook: Hook, t_max: int) -> Hook:
    """Guidance only at diffusion timesteps t <= t_max (the last, low-noise part of sampling)."""

    def gated(x_t, t, pred_x0, y):
        if int(t.max()) > t_max:
            return torch.zeros_like(pred_x0)
        return hook(x_t, t, pred_x0, y)

    if hasattr(hook, "reference_rms"):
        gated.reference_rms = hook.reference_rms
    return gated
