"""BioDiffusion held to imics-lab/biodiffusion (`src/signal/modules/modules1D_cls_free.py`, the training loop
of `src/signal/ddpm1d_cls_free.py`) on the same weights, batches, time steps, noise and label-dropout masks.

Their code runs in our .venv with einops from a --target folder (their module imports it; we do not):

    .venv/bin/python -m pip install --target .authors/site einops==0.6.0
    git --git-dir=<fetched snapshot> archive HEAD src | tar -x -C .authors/biodiffusion
    PYTHONPATH=.authors/site .venv/bin/python -m experiments.authors_equivalence authors biodiffusion \
        --repo .authors/biodiffusion

Their randomness is fed, not drawn: the module's `torch` is replaced by a proxy whose `randint`, `randn` and
`randn_like` pop the fixture's draws, and its `prob_mask_like` pops the fixture's keep masks (their
expression, `uniform < 1 − cond_drop_prob`, applied to uniforms drawn here); their file is not edited, and
every call they make must consume exactly the draws given (checked). Ours gets the same draws through the
functions its own loops call: `train_step` (each training step), `GuidedDenoiser` and `p_sample` (one
sampling step), `sample_from` (a whole run).

Compared, at one small configuration with every part of the method (UNet with ResnetBlocks, linear and full
attention, strided down / upsampling, time and class embeddings and the null embedding; cosine schedule of
1,000 steps, ε-prediction, L1 loss; AdamW as their script; guidance at cond_scale 3):
- loss/: the loss of each of the K training steps, and of the first batch with every label kept / dropped;
- grad/: every parameter's gradient at the first step;
- param_after/: every parameter after K AdamW steps (their script: no EMA, no clipping, no lr schedule);
- sample/: one guided noise prediction and one ancestral step at t = 500; a full ancestral run (1,000 steps)
  and a DDIM run (20 steps, η = 1, their `ddim_sample`) from the same x_T, unnormalised to [0, 1] as theirs.
  Each twice: "released" (their `forward_with_cond_scale` as published: the conditional pass drops each label
  with the training probability 0.5, fed the same masks; ours with sample_cond_drop_prob = 0.5) and
  "described" (their model's `cond_drop_prob` set to 0 for sampling, lucidrains's original guidance; ours at
  its default sample_cond_drop_prob = 0).

Tolerances are measured, not chosen: the authors' code is rerun in float64 (their dtype-dependent eps,
1e-3 outside float32, rewritten to 1e-5 in that run's copy of the source only, so it computes the same
function) on the same weights and draws; the tolerance of each category is TOLERANCE_FACTOR × the largest
relative float32-vs-float64 difference of the authors' own code over that category's outputs (two float32
implementations each that far from the exact result can be twice as far apart; twice again for margin).
"""
from __future__ import annotations

import importlib.util
import platform
from dataclasses import replace
from pathlib import Path

import numpy as np

AUTHORS_REPO = "imics-lab/biodiffusion"
MODULE_PATH = "src/signal/modules/modules1D_cls_free.py"
# the smallest network with every part: two levels (one strided down/upsampling, one plain conv), 2 channels
# per GroupNorm group (at 1 a conv bias's gradient is 0 in exact arithmetic and only float noise, which Adam
# would turn into lr-sized steps of random sign); their attention is 4 heads of 32, fixed in their code
CONFIG = {"dim": 8, "dim_mults": [1, 2], "resnet_block_groups": 4, "attn_heads": 4, "attn_dim_head": 32,
          "channels": 2, "seq_length": 16, "num_classes": 3, "timesteps": 1000, "cond_drop_prob": 0.5,
          "lr": 3e-4, "weight_decay": 0.01, "batch_size": 8, "cond_scale": 3.0, "ddim_sampling_timesteps": 20,
          "ddim_sampling_eta": 1.0, "sample_batch": 3, "step_t": 500, "seed": 29}
K = 20
TOLERANCE_FACTOR = 4.0
VARIANTS = ("released", "described")


# --------------------------------------------------------------------------- the draws, made once


def make_inputs() -> dict:
    """Every batch and random draw of the comparison, from one seeded numpy generator."""
    c = CONFIG
    rng = np.random.default_rng(c["seed"])
    b, f, n, sb = c["batch_size"], c["channels"], c["seq_length"], c["sample_batch"]
    # signal-like batches in [0, 1], as their MIT-BIH loader gives: noisy sines of random frequency and phase
    grid = np.arange(n) / n
    freq, phase = rng.uniform(1, 3, (K, b, f, 1)), rng.uniform(0, 2 * np.pi, (K, b, f, 1))
    x = 0.5 + 0.35 * np.sin(2 * np.pi * freq * grid + phase) + 0.05 * rng.normal(size=(K, b, f, n))
    keep_prob = 1 - c["cond_drop_prob"]  # their prob_mask_like(shape, 1 - cond_drop_prob): uniform < prob
    inputs = {
        "input/train_x": np.clip(x, 0, 1).astype(np.float32),                                 # (K, B, F, T)
        "input/train_y": rng.integers(0, c["num_classes"], (K, b)),
        "input/train_t": rng.integers(0, c["timesteps"], (K, b)),
        "input/train_noise": rng.normal(size=(K, b, f, n)).astype(np.float32),
        "input/train_keep": rng.random((K, b)) < keep_prob,
        "input/sample_classes": np.arange(sb) % c["num_classes"],
        "input/step_x": rng.normal(size=(sb, f, n)).astype(np.float32),                       # x_t at step_t
        "input/step_keep": rng.random(sb) < keep_prob,
        "input/step_noise": rng.normal(size=(sb, f, n)).astype(np.float32),
        "input/x_T": rng.normal(size=(sb, f, n)).astype(np.float32),
        "input/ancestral_keep": rng.random((c["timesteps"], sb)) < keep_prob,
        "input/ancestral_noise": rng.normal(size=(c["timesteps"] - 1, sb, f, n)).astype(np.float32),  # none at t=0
        "input/ddim_keep": rng.random((c["ddim_sampling_timesteps"], sb)) < keep_prob,
        "input/ddim_noise": rng.normal(size=(c["ddim_sampling_timesteps"] - 1, sb, f, n)).astype(np.float32),
    }
    first = inputs["input/train_keep"][0]
    if first.all() or not first.any():
        raise RuntimeError("the first batch must keep some labels and drop others (both embeddings' gradients)")
    return inputs


# --------------------------------------------------------------------------- the authors' side


class _Fed:
    """Their module's `torch`, except that randint / randn / randn_like return the next given draw."""

    def __init__(self, torch):
        self._torch, self.queues = torch, {"randint": [], "randn": [], "randn_like": [], "mask": []}

    def __getattr__(self, name):
        return getattr(self._torch, name)

    def feed(self, name, *arrays):
        self.queues[name].extend(arrays)

    def _pop(self, name, shape, dtype):
        if not self.queues[name]:
            raise RuntimeError(f"their code drew more {name} than given")
        value = self._torch.as_tensor(self.queues[name].pop(0))
        if tuple(value.shape) != tuple(shape):
            raise RuntimeError(f"their {name} draw has shape {tuple(shape)}, the given one {tuple(value.shape)}")
        return value.to(dtype) if dtype is not None else value

    def randint(self, low, high, size, device=None):
        value = self._pop("randint", size, self._torch.long)
        if value.min() < low or value.max() >= high:
            raise RuntimeError("a given time step is outside their range")
        return value

    def randn(self, shape, device=None):
        return self._pop("randn", shape, self._torch.get_default_dtype())

    def randn_like(self, x):
        return self._pop("randn_like", x.shape, x.dtype)

    def prob_mask_like(self, original):
        """Their prob_mask_like, the draw for 0 < prob < 1 given (a keep mask: uniform < prob)."""
        def fed(shape, prob, device):
            if prob in (0, 1):
                return original(shape, prob, device)
            return self._pop("mask", shape, self._torch.bool)
        return fed

    def check_empty(self):
        left = {k: len(v) for k, v in self.queues.items() if v}
        if left:
            raise RuntimeError(f"their code drew fewer than given: {left} left")


def _load_their_module(repo_dir: Path, float64_eps: bool):
    """Their modules1D_cls_free, as published; float64_eps: the float64 reference copy, whose eps (theirs:
    1e-3 outside float32) is 1e-5, so that it computes the float32 run's function."""
    path = repo_dir / MODULE_PATH
    source = path.read_text()
    name = "biodiffusion_authors"
    if float64_eps:
        before = "eps = 1e-5 if x.dtype == torch.float32 else 1e-3"
        if source.count(before) != 2:
            raise RuntimeError(f"{path}: expected their dtype-dependent eps twice (weight standardisation, "
                               f"LayerNorm); the source has changed")
        source, name = source.replace(before, "eps = 1e-5"), name + "_f64"
    spec = importlib.util.spec_from_loader(name, loader=None, origin=str(path))
    module = importlib.util.module_from_spec(spec)
    module.__file__ = str(path)
    exec(compile(source, str(path), "exec"), module.__dict__)
    return module


def _authors_outputs(module, weights: dict | None, inputs: dict, dtype) -> tuple[dict, dict]:
    """Their code on the given draws: (outputs, initial weights); weights None: their own initialisation."""
    import torch
    c = CONFIG
    fed = _Fed(torch)
    module.torch = fed
    module.prob_mask_like = fed.prob_mask_like(module.prob_mask_like)
    module.tqdm = lambda iterable, **kwargs: iterable   # their sampling loops' progress bars, silenced
    torch.set_default_dtype(dtype)
    try:
        def build(sampling_timesteps=None):
            module.torch = torch            # their initialisation draws from the real RNG (null embedding)
            torch.manual_seed(c["seed"])
            unet = module.Unet1D_cls_free(dim=c["dim"], num_classes=c["num_classes"],
                                          cond_drop_prob=c["cond_drop_prob"], dim_mults=tuple(c["dim_mults"]),
                                          channels=c["channels"], resnet_block_groups=c["resnet_block_groups"])
            if weights is not None:
                unet.load_state_dict({k: torch.as_tensor(v, dtype=dtype) for k, v in weights.items()})
            diffusion = module.GaussianDiffusion1D_cls_free(unet, seq_length=c["seq_length"],
                                                            timesteps=c["timesteps"],
                                                            sampling_timesteps=sampling_timesteps)
            module.torch = fed
            return unet, diffusion

        unet, diffusion = build()
        initial = {k: v.detach().float().numpy().copy() for k, v in unet.state_dict().items()}
        out = {}
        x_all = torch.as_tensor(inputs["input/train_x"], dtype=dtype)
        y_all = torch.as_tensor(inputs["input/train_y"]).long()

        def feed_batch(k):
            fed.feed("randint", inputs["input/train_t"][k])
            fed.feed("randn_like", inputs["input/train_noise"][k])
            fed.feed("mask", inputs["input/train_keep"][k])

        # the label-dropout mechanism at both ends, on the first batch: every label kept, every label dropped
        for name, drop in (("all_kept", 0.0), ("all_dropped", 1.0)):
            unet.cond_drop_prob = drop
            fed.feed("randint", inputs["input/train_t"][0])
            fed.feed("randn_like", inputs["input/train_noise"][0])
            with torch.no_grad():
                out[f"loss/first_batch_{name}"] = diffusion(x_all[0], classes=y_all[0]).item()
        unet.cond_drop_prob = c["cond_drop_prob"]
        fed.check_empty()

        # their training loop (ddpm1d_cls_free.py): AdamW(lr), loss = diffusion(signals, classes), step
        optimizer = torch.optim.AdamW(unet.parameters(), lr=c["lr"])
        for k in range(K):
            feed_batch(k)
            loss = diffusion(x_all[k], classes=y_all[k])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            out[f"loss/step_{k:02d}"] = loss.item()
            if k == 0:
                out.update({f"grad/{n}": p.grad.detach().numpy().copy() for n, p in unet.named_parameters()})
        fed.check_empty()
        out.update({f"param_after/{n}": p.detach().numpy().copy() for n, p in unet.named_parameters()})

        # sampling, from the initial weights
        classes = torch.as_tensor(inputs["input/sample_classes"]).long()
        x_t = torch.as_tensor(inputs["input/step_x"], dtype=dtype)
        t = c["step_t"]
        for variant in VARIANTS:
            unet, diffusion = build()
            if weights is None:
                unet.load_state_dict({k: torch.as_tensor(v) for k, v in initial.items()})
            if variant == "described":
                unet.cond_drop_prob = 0.0   # lucidrains's guidance: the conditional pass keeps every label
            masks = [inputs["input/step_keep"]] if variant == "released" else []
            with torch.no_grad():
                fed.feed("mask", *masks)
                eps = unet.forward_with_cond_scale(x_t, torch.full((len(x_t),), t, dtype=torch.long), classes,
                                                   cond_scale=c["cond_scale"])
                out[f"sample/step_guided_eps_{variant}"] = eps.numpy().copy()
                fed.feed("mask", *masks)
                fed.feed("randn_like", inputs["input/step_noise"])
                step, _ = diffusion.p_sample(x_t, t, classes, cond_scale=c["cond_scale"])
                out[f"sample/step_ancestral_{variant}"] = step.numpy().copy()
                fed.check_empty()
                for run, sampler in (("ancestral", diffusion), ("ddim", build(c["ddim_sampling_timesteps"])[1])):
                    if run == "ddim":
                        sampler.model = unet       # the same network (build() made a fresh one)
                    if variant == "released":
                        fed.feed("mask", *inputs[f"input/{run}_keep"])
                    fed.feed("randn", inputs["input/x_T"])
                    fed.feed("randn_like", *inputs[f"input/{run}_noise"])
                    out[f"sample/{run}_{variant}"] = sampler.sample(classes, cond_scale=c["cond_scale"]).numpy()
                    fed.check_empty()
        return out, initial
    finally:
        torch.set_default_dtype(torch.float32)


def _relative(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = np.max(np.abs(b))
    return float(np.max(np.abs(a - b)) / scale) if scale > 0 else float(np.max(np.abs(a - b)))


def run_authors(repo_dir) -> tuple[dict, dict]:
    import einops
    import torch
    from experiments.authors_equivalence import CATEGORIES
    repo_dir = Path(repo_dir).resolve()
    torch.set_num_threads(1)
    inputs = make_inputs()
    outputs, weights = _authors_outputs(_load_their_module(repo_dir, False), None, inputs, torch.float32)
    reference, _ = _authors_outputs(_load_their_module(repo_dir, True), weights, inputs, torch.float64)
    noise = {c: max(_relative(outputs[k], reference[k]) for k in outputs if k.startswith(c)) for c in CATEGORIES}
    worst = {c: max((k for k in outputs if k.startswith(c)), key=lambda k: _relative(outputs[k], reference[k]))
             for c in CATEGORIES}
    arrays = {**inputs, **{f"weights/{k}": v for k, v in weights.items()},
              **{f"authors/{k}": np.asarray(v, np.float32) for k, v in outputs.items()}}
    commit = _commit(repo_dir)
    info = {
        "commit": commit,
        "environment": {"python": platform.python_version(), "torch": torch.__version__,
                        "numpy": np.__version__, "einops": einops.__version__,
                        "how": "our .venv (torch, numpy); einops, which their module imports and we do not, "
                               "from `pip install --target .authors/site einops==0.6.0` on PYTHONPATH",
                        "threads": 1, "device": "cpu"},
        "changes": [
            "none to their file (read from the checkout, not edited)",
            "at run time their module's global `torch` is a proxy whose randint / randn / randn_like return the "
            "fixture's draws (time steps, training noise, x_T, sampling noise), and its `prob_mask_like` returns "
            "the fixture's keep masks for 0 < prob < 1 (theirs: uniform < prob; prob 0 and 1 unchanged); "
            "every draw given is consumed, no more",
            "their training script's loop body run on the fixture's batches (no DataLoader, tensorboard, "
            "per-epoch plots or checkpoints); model and diffusion built as the script builds them, at CONFIG",
            "their module's tqdm (sampling progress bars) replaced by the bare iterable",
            "'described' sampling variant only: `unet.cond_drop_prob = 0` before sampling (their forward_with_"
            "cond_scale otherwise drops labels in its conditional pass; ours by default does not)",
            "float64 reference run only (the tolerances): the source copy's `eps = 1e-5 if x.dtype == "
            "torch.float32 else 1e-3` (twice) reads `eps = 1e-5`",
        ],
        "config": CONFIG,
        "K": K,
        "tolerances": {c: TOLERANCE_FACTOR * noise[c] for c in CATEGORIES},
        "noise_measured": {c: {"relative": noise[c], "worst_output": worst[c]} for c in CATEGORIES},
        "tolerance_basis": (
            f"per category, {TOLERANCE_FACTOR:g} x the largest relative difference max|f32 - f64| / max|f64| "
            "over that category's outputs between the authors' code run in float32 (the fixture) and the "
            "same code in float64 (eps rewritten to float32's 1e-5 so it is the same function) on the same "
            "weights and draws: the float rounding of one float32 implementation; two such implementations "
            "may differ by twice that, doubled again for margin"),
        "sizes": {c: sum(k.startswith(c) for k in outputs) for c in CATEGORIES},
    }
    return arrays, info


def _commit(repo_dir: Path) -> str:
    """The commit the checkout was exported from: `git archive` records it nowhere, so the export writes it to
    <checkout>/COMMIT."""
    marker = repo_dir / "COMMIT"
    if not marker.exists():
        raise FileNotFoundError(f"{marker} is missing: write the exported commit there "
                                f"(`git --git-dir=<snapshot> rev-parse HEAD > {marker}`)")
    return marker.read_text().strip()


# --------------------------------------------------------------------------- ours


def run_ours(fixture: dict) -> dict:
    """Our package on the fixture's weights and draws: BioDiffusion.build, train_step with make_optimizer,
    GuidedDenoiser + p_sample, sample_from, and the Scaler BioDiffusion's data pass through."""
    import torch
    from tardiff.generators import get_generator
    from tardiff.generators.base import Scaler
    from tardiff.generators.biodiffusion import GuidedDenoiser, make_optimizer, train_step
    c = CONFIG
    torch.set_num_threads(1)
    generator = get_generator("biodiffusion", dim=c["dim"], dim_mults=tuple(c["dim_mults"]),
                              resnet_block_groups=c["resnet_block_groups"], attn_heads=c["attn_heads"],
                              attn_dim_head=c["attn_dim_head"], timesteps=c["timesteps"],
                              cond_drop_prob=c["cond_drop_prob"], lr=c["lr"], weight_decay=c["weight_decay"],
                              batch_size=c["batch_size"], cond_scale=c["cond_scale"],
                              ddim_sampling_eta=c["ddim_sampling_eta"])
    config = generator.config
    weights = {k[len("weights/"):]: torch.as_tensor(v) for k, v in fixture.items() if k.startswith("weights/")}
    scaler = Scaler.fit("two_x_minus_1", None)   # their normalize_to_neg_one_to_one of [0, 1] data

    def build():
        model = generator.build(c["channels"], c["seq_length"], c["num_classes"])
        model.model.load_state_dict(weights)
        return model

    out = {}
    model = build()
    x_all = torch.as_tensor(scaler.forward(fixture["input/train_x"]))          # (K, B, F, T) in [-1, 1]
    y_all, t_all = (torch.as_tensor(fixture[k]).long() for k in ("input/train_y", "input/train_t"))
    noise_all, keep_all = torch.as_tensor(fixture["input/train_noise"]), torch.as_tensor(fixture["input/train_keep"])
    with torch.no_grad():
        for name, keep in (("all_kept", True), ("all_dropped", False)):
            mask = torch.full((len(y_all[0]),), keep)
            out[f"loss/first_batch_{name}"] = model.loss(x_all[0], t_all[0], noise_all[0], y_all[0], mask).item()
    optimizer = make_optimizer(model, config, torch.device("cpu"))
    for k in range(len(x_all)):
        out[f"loss/step_{k:02d}"] = train_step(model, optimizer, x_all[k], t_all[k], noise_all[k], y_all[k],
                                               keep_all[k]).item()
        if k == 0:
            out.update({f"grad/{n}": p.grad.numpy().copy() for n, p in model.model.named_parameters()})
    out.update({f"param_after/{n}": p.detach().numpy().copy() for n, p in model.model.named_parameters()})

    classes = torch.as_tensor(fixture["input/sample_classes"]).long()
    x_t, t = torch.as_tensor(fixture["input/step_x"]), c["step_t"]
    ddim = replace(config, sampling_timesteps=c["ddim_sampling_timesteps"])
    for variant in VARIANTS:
        model = build()
        step_keep = torch.as_tensor(fixture["input/step_keep"]) if variant == "released" \
            else torch.ones(len(classes), dtype=torch.bool)   # sample_cond_drop_prob 0: every label kept
        with torch.no_grad():
            with GuidedDenoiser(model.model, classes) as denoiser:
                eps = denoiser(x_t, t, step_keep, c["cond_scale"])
            out[f"sample/step_guided_eps_{variant}"] = eps.numpy()
            out[f"sample/step_ancestral_{variant}"] = model.p_sample(
                x_t, t, eps, torch.as_tensor(fixture["input/step_noise"])).numpy()
            for run, sampling in (("ancestral", config), ("ddim", ddim)):
                keeps = torch.as_tensor(fixture[f"input/{run}_keep"])
                if variant == "described":
                    keeps = torch.ones_like(keeps)
                noises = [*torch.as_tensor(fixture[f"input/{run}_noise"]), None]   # none at the last step
                x = model.sample_from(torch.as_tensor(fixture["input/x_T"]), classes, zip(keeps, noises), sampling)
                out[f"sample/{run}_{variant}"] = scaler.inverse(x.numpy())        # their unnormalize_to_zero_to_one
    return out
