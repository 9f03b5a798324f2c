"""TimeVQVAE against ML4ITS/TimeVQVAE v1.0.1 (PyTorch), on the same weights, batches, masks and draws.

The authors' side builds their `VQVAE` and `MaskGIT` (src/timevqvae at v1.0.1, the version our module follows)
at a small configuration with every part of the method: the STFT split into LF/HF, both encoders, both vector
quantisers (k-means start, EMA codebook update, commitment loss), both decoders and all four loss terms;
the MaskGIT priors per band with class conditioning, p_unconditional label dropout and embedding dropout,
their masked-token loss; iterative decoding with the cosine schedule, choice temperatures and
classifier-free guidance (scale 2; also one stage-2 batch trained at scale 2, where their masked_prediction
applies it too). Their training loop is their LightningModules' (ExpStage1/ExpStage2 at
the parent of b3d87ed, which v1.0.1 no longer ships): AdamW (torch defaults but lr), their
`linear_warmup_cosine_annealingLR` (imported from that commit's utils/optim.py) stepped inside
`training_step`, i.e. before the optimiser, and once more at each epoch's end (Lightning's default for a
scheduler returned from `configure_optimizers`); that loop is transcribed here (Lightning itself is not run).

Draws: their own RNG calls run (numpy's mask ratios, torch.rand for scores and label dropout, randperm for
the k-means start, their Categorical sample, the Gumbel noise) and are recorded as they return, in order;
ours is fed the same values (its module's `torch.rand`/`randperm`/`randint` answered from the record).
Their Categorical draw becomes, for our inverse-CDF sampler, the uniform at the middle of the drawn token's
CDF interval under their probabilities. Dropout masks (the encoder/decoder ResBlocks' and the priors'
embedding dropout) are drawn by this harness and applied as x * mask / (1 - p) on both sides (torch's own
dropout kernel cannot be fed a mask), keyed by module so that call order does not matter.

    .venv/bin/python -m pip install --target .authors/site-timevqvae einops==0.8.2   # their pyproject: >= 0.8.2
    git clone <a full clone of ML4ITS/TimeVQVAE> .authors/timevqvae     # HEAD at v1.0.1 (39f98e9); src/ checked out
    OMP_NUM_THREADS=1 .venv/bin/python -m experiments.authors_equivalence authors timevqvae \\
        --repo .authors/timevqvae
    .venv/bin/python -m experiments.authors_equivalence compare timevqvae

Tolerances are measured, not chosen: the authors' pipeline is run a second time in float64 (same weights and
draws; each phase started from the float32 run's weights, as ours is) and each category's tolerance is
TOLERANCE_FACTOR times the largest relative float32-vs-float64 difference of their outputs in it, at least
TOLERANCE_FLOOR. Tokens are integers decided by identical draws: their tolerance is 0.
"""
from __future__ import annotations

import contextlib
import copy
import importlib
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

AUTHORS_REPO = "ML4ITS/TimeVQVAE"
AUTHORS_TAG, AUTHORS_COMMIT = "v1.0.1", "39f98e99cb103ea00694d01c65fd6e7a49416d24"
TRAINING_COMMIT = "cee52919ac4a389bf67466e4d994ac973707ff38"   # parent of b3d87ed: the Lightning experiments
SITE = Path(__file__).resolve().parents[2] / ".authors" / "site-timevqvae"   # einops 0.8.2 for their code
SEED = 29
N_FEATURES, SEQ_LEN, N_CLASSES, N_STAYS, BATCH = 2, 24, 2, 32, 8
K = 24                     # optimiser steps per stage: 6 epochs of 4 batches, so 6 epoch-end scheduler steps
MAX_STEPS = 80             # the schedules' length: warm-up int(80 * 0.05) = 4 steps, then cosine
# config.yaml at small sizes; L = 24 gives LF 2 halvings (6 tokens) and HF 1 (2 x 12 tokens), as in our runs;
# 64 LF codes > the 48 LF vectors of a batch: their k-means start takes the randint path there (as at 1,024
# codes and batch 32), randperm for HF (192 vectors, 32 codes)
MODEL = dict(n_fft=4, init_dim=4, hid_dim=16, encoder_n_resnet_blocks=1, decoder_n_resnet_blocks=1,
             downsampled_width_lf=8, downsampled_width_hf=32, codebook_size_lf=64, codebook_size_hf=32,
             codebook_dim=4, lf_hidden_dim=16, lf_n_layers=2, lf_heads=2, hf_hidden_dim=8, hf_n_layers=1, hf_heads=1,
             ff_mult=1, p_unconditional=0.2, emb_dropout=0.3, encdec_dropout=0.3)
OPTIM = dict(lr=5e-3, linear_warmup_rate=0.05, min_lr=5e-4)
TRAIN_CFG_SCALE = 2.0     # one stage-2 batch with guidance inside training (config.yaml trains at 1)
SAMPLING = dict(n=8, steps_lf=4, steps_hf=4, choice_temperature_lf=10.0, choice_temperature_hf=4.0, cfg_scale=2.0)
TOLERANCE_FACTOR = 10.0   # twice for the triangle ours - f64 - theirs, five for op order we do not share
TOLERANCE_FLOOR = 1e-6    # a few float32 ulps: a measured noise of 0 still allows a rounding
LOSS_TERMS_1 = ("LF.time", "HF.time", "commit.LF", "commit.HF", "loss", "perplexity.LF", "perplexity.HF")
LOSS_TERMS_2 = ("LF", "HF", "loss")


# --------------------------------------------------------------------------- shared plumbing

def inputs() -> dict:
    """The data both sides see: standardised noisy sines (N, C, L), labels, each stage's batch order."""
    rng = np.random.default_rng(SEED)
    t = np.arange(SEQ_LEN)
    freq = rng.uniform(0.03, 0.25, (N_STAYS, N_FEATURES, 1))
    phase = rng.uniform(0, 2 * np.pi, (N_STAYS, N_FEATURES, 1))
    x = np.sin(2 * np.pi * freq * t + phase) + 0.1 * rng.standard_normal((N_STAYS, N_FEATURES, SEQ_LEN))
    # their DatasetImporterUCR(data_scaling=True): per channel, over stays and time, population std
    x = (x - x.mean(axis=(0, 2), keepdims=True)) / x.std(axis=(0, 2), keepdims=True)
    out = {"input/x": x.astype(np.float32), "input/y": rng.integers(0, N_CLASSES, N_STAYS).astype(np.int64),
           "input/sample_labels": (np.arange(SAMPLING["n"]) % N_CLASSES).astype(np.int64)}
    for stage in (1, 2):   # a shuffling DataLoader: a fresh permutation per epoch, batches in its order
        perms = [rng.permutation(N_STAYS) for _ in range(K * BATCH // N_STAYS)]
        out[f"input/stage{stage}/batch_index"] = np.concatenate(perms).reshape(K, BATCH).astype(np.int64)
    return out


def per_epoch() -> int:
    return N_STAYS // BATCH


class Tape:
    """Random draws in the order a phase consumes them, recorded from their code or replayed to either side."""

    def __init__(self, stored: dict | None = None):
        self.replaying = stored is not None
        self.sequence = defaultdict(list)      # phase -> [{tag: array}] in call order
        self.masks = defaultdict(list)         # (phase, module key) -> [mask]
        self.position = defaultdict(int)
        if stored:
            for key in sorted(k for k in stored if k.startswith("input/draws/")):
                _, _, phase, index, tag = key.split("/")
                seq = self.sequence[phase]
                while len(seq) <= int(index):
                    seq.append({})
                seq[int(index)][tag] = np.asarray(stored[key])
            for key in sorted(k for k in stored if k.startswith("input/dropout/")):
                _, _, phase, module = key.split("/", 3)
                self.masks[(phase, module)] = list(np.asarray(stored[key]))
        self.phase = None

    def record(self, entry: dict) -> None:
        self.sequence[self.phase].append({k: np.asarray(v) for k, v in entry.items()})

    def next(self, tag: str, shape) -> np.ndarray:
        seq, i = self.sequence[self.phase], self.position[self.phase]
        if i >= len(seq):
            raise RuntimeError(f"{self.phase}: one more draw ({tag} {tuple(shape)}) than the fixture holds ({i})")
        self.position[self.phase] += 1
        entry = seq[i]
        if tag not in entry:
            raise RuntimeError(f"{self.phase} draw {i}: asked for {tag}, the record holds {sorted(entry)}")
        value = entry[tag]
        if shape is not None and tuple(value.shape) != tuple(shape):
            raise RuntimeError(f"{self.phase} draw {i} ({tag}): asked for {tuple(shape)}, recorded "
                               f"{tuple(value.shape)}")
        return value

    def mask(self, key: str, shape, p: float, generator) -> np.ndarray:
        import torch
        queue = self.masks[(self.phase, key)]
        if not self.replaying:
            queue.append((torch.rand(tuple(shape), generator=generator) >= p).numpy())
            return queue[-1]
        i = self.position[(self.phase, key)]
        if i >= len(queue):
            raise RuntimeError(f"{self.phase}: one more dropout at {key} than the fixture holds")
        self.position[(self.phase, key)] += 1
        if tuple(queue[i].shape) != tuple(shape):
            raise RuntimeError(f"{self.phase} dropout {key} call {i}: shape {tuple(shape)}, recorded "
                               f"{tuple(queue[i].shape)}")
        return queue[i]

    def done(self) -> None:
        """Every recorded draw of every phase was consumed (a replay that drew less is a different run)."""
        for phase, seq in self.sequence.items():
            if self.position[phase] != len(seq):
                raise RuntimeError(f"{phase}: {self.position[phase]} draws consumed of {len(seq)} recorded")
        for (phase, key), queue in self.masks.items():
            if self.position[(phase, key)] != len(queue):
                raise RuntimeError(f"{phase}: {self.position[(phase, key)]} dropouts at {key} of {len(queue)}")

    def arrays(self) -> dict:
        out = {}
        for phase, seq in self.sequence.items():
            for i, entry in enumerate(seq):
                out.update({f"input/draws/{phase}/{i:04d}/{tag}": v for tag, v in entry.items()})
        for (phase, key), queue in self.masks.items():
            out[f"input/dropout/{phase}/{key}"] = np.stack(queue).astype(np.uint8)
        return out


class KeyedDropout:
    """F.dropout with the mask from the tape under the calling module's key: x * mask / (1 - p)."""

    def __init__(self, tape: Tape):
        import torch
        self.tape, self.key = tape, None
        self.generator = torch.Generator().manual_seed(SEED + 1)

    def __call__(self, input, p=0.5, training=True, inplace=False):
        if not training or p == 0:
            return input
        if self.key is None:
            raise RuntimeError("a dropout outside the modules this harness keys")
        import torch
        mask = torch.from_numpy(np.asarray(self.tape.mask(self.key, input.shape, p, self.generator), bool))
        return input * mask.to(input.dtype) / (1 - p)

    @contextlib.contextmanager
    def keyed(self, key):
        saved, self.key = self.key, key
        try:
            yield
        finally:
            self.key = saved

    @contextlib.contextmanager
    def active(self, modules: dict, prior_class, method: str):
        """F.dropout replaced; each nn.Dropout in `modules` ({key: module}) keys its calls, and so does the prior's
        embedding dropout `prior_class.method(tokens, emb, band, ...)`: "<prior kind>.<band>.<cond|uncond>", the
        last from the class_condition its forward was given (guidance runs both passes, in either order)."""
        import torch.nn.functional as F
        saved_dropout, original, forward = F.dropout, getattr(prior_class, method), prior_class.forward
        hooks = [m.register_forward_pre_hook(lambda mod, inp, key=key: setattr(self, "key", key))
                 for key, m in modules.items()]
        hooks += [m.register_forward_hook(lambda mod, inp, out: setattr(self, "key", None)) for m in modules.values()]
        harness, condition = self, [None]

        def embedding_dropout(obj, tokens, emb, band, *args, **kwargs):
            with harness.keyed(f"{obj.kind}.{band}.{condition[0]}"):
                return original(obj, tokens, emb, band, *args, **kwargs)

        def prior_forward(obj, *args, **kwargs):
            saved, condition[0] = condition[0], "uncond" if kwargs.get("class_condition") is None else "cond"
            try:
                return forward(obj, *args, **kwargs)
            finally:
                condition[0] = saved

        F.dropout = self
        setattr(prior_class, method, embedding_dropout)
        prior_class.forward = prior_forward
        try:
            yield
        finally:
            F.dropout = saved_dropout
            setattr(prior_class, method, original)
            prior_class.forward = forward
            for h in hooks:
                h.remove()


class _Proxy:
    """A module seen through a few replaced attributes (their `torch`/`np` globals, ours `torch`)."""

    def __init__(self, module, **replaced):
        self._module, self._replaced = module, replaced

    def __getattr__(self, name):
        return self._replaced[name] if name in self._replaced else getattr(self._module, name)


@contextlib.contextmanager
def _swapped(module, name, value):
    saved = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, saved)


def ours_name(name: str) -> str | None:
    """Their state-dict name -> ours (old weight_norm's g/v are parametrizations' original0/1); None: no twin."""
    if name.endswith(("num_tokens", "H_prime", "W_prime")):
        return None
    n = (name.replace(".block.", ".").replace("_codebook.", "").replace("weight_g", "parametrizations.weight.original0")
         .replace("weight_v", "parametrizations.weight.original1"))
    return "vqvae." + n if n.startswith(("encoder_", "decoder_", "vq_model_")) else n


# --------------------------------------------------------------------------- the authors' side

def _import_authors(repo_dir: Path):
    for path in (str(SITE), str(Path(repo_dir) / "src")):
        if path not in sys.path:
            sys.path.insert(0, path)
    names = ("timevqvae.vqvae", "timevqvae.maskgit", "timevqvae.models.bidirectional_transformer",
             "timevqvae.vector_quantization.vq", "timevqvae.models.vq_vae_encdec")
    mods = {n.split(".")[-1]: importlib.import_module(n) for n in names}
    # their training schedule from the commit that still has the Lightning experiments (a file of torch only)
    source = subprocess.run(["git", "-C", str(repo_dir), "show", f"{TRAINING_COMMIT}:src/timevqvae/utils/optim.py"],
                            check=True, capture_output=True, text=True).stdout
    optim = type(sys)("timevqvae_optim_" + TRAINING_COMMIT[:7])
    exec(compile(source, f"{TRAINING_COMMIT[:7]}:src/timevqvae/utils/optim.py", "exec"), optim.__dict__)
    mods["optim"] = optim
    return mods


def _state(module, prefix="") -> dict:
    return {prefix + k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()
            if ours_name(k) is not None}


def _load(module, arrays: dict, prefix: str, dtype) -> None:
    import torch
    state = module.state_dict()
    for k in state:
        if prefix + k in arrays:
            value = torch.as_tensor(arrays[prefix + k])
            state[k] = value.to(dtype) if value.is_floating_point() else value
    module.load_state_dict(state)


def _authors_pipeline(mods: dict, data: dict, tape: Tape, dtype_name: str, start: dict | None) -> tuple[dict, dict]:
    """Their stage 1, stage 2 and sampling; `start` (the float32 run's arrays) fixes each phase's weights."""
    import torch
    from torch.distributions.categorical import Categorical
    dtype = getattr(torch, dtype_name)
    torch.manual_seed(SEED)
    np.random.seed(SEED)
    out, notes = {}, {}
    x_all = torch.as_tensor(data["input/x"]).to(dtype)
    y_all = torch.as_tensor(data["input/y"])[:, None]
    m = MODEL
    vqvae = mods["vqvae"].VQVAE(N_FEATURES, SEQ_LEN, n_fft=m["n_fft"], init_dim=m["init_dim"], hid_dim=m["hid_dim"],
                                downsampled_width_l=m["downsampled_width_lf"],
                                downsampled_width_h=m["downsampled_width_hf"],
                                encoder_n_resnet_blocks=m["encoder_n_resnet_blocks"],
                                decoder_n_resnet_blocks=m["decoder_n_resnet_blocks"],
                                codebook_size_l=m["codebook_size_lf"], codebook_size_h=m["codebook_size_hf"],
                                kmeans_init=True, codebook_dim=m["codebook_dim"])
    if start is not None:
        _load(vqvae, start, "weights/stage1/", dtype)
    vqvae.to(dtype)
    out.update(_state(vqvae, "weights/stage1/"))

    dropout = KeyedDropout(tape)
    dropouts = {k: mod for k, mod in vqvae.named_modules() if isinstance(mod, torch.nn.Dropout) and mod.p > 0}
    bt = mods["bidirectional_transformer"]

    def rand(*size, **kwargs):                          # their torch.rand (scores, label dropout)
        shape = size[0] if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)) else size
        if tape.replaying:
            return torch.as_tensor(tape.next("rand", shape))
        value = torch.rand(*size, **kwargs)
        tape.record({"rand": value.numpy()})
        return value

    def randperm(n, **kwargs):                          # their k-means start (sample_vectors)
        if tape.replaying:
            return torch.as_tensor(tape.next("randperm", (n,)))
        value = torch.randperm(n, **kwargs)
        tape.record({"randperm": value.numpy()})
        return value

    def randint(low, high, size, **kwargs):
        if tape.replaying:
            return torch.as_tensor(tape.next("randint", size))
        value = torch.randint(low, high, size, **kwargs)
        tape.record({"randint": value.numpy()})
        return value

    class _Random:                                        # their np.random.uniform (mask ratios)
        def __getattr__(self, name):
            return getattr(np.random, name)

        def uniform(self, low, high, size):
            if tape.replaying:
                return tape.next("uniform_np", size)
            value = np.random.uniform(low, high, size)
            tape.record({"uniform_np": value})
            return value

    torch_proxy = _Proxy(torch, rand=rand, randperm=randperm, randint=randint)
    np_proxy = _Proxy(np, random=_Random())

    def schedule(optimizer):
        return mods["optim"].linear_warmup_cosine_annealingLR(optimizer, MAX_STEPS, OPTIM["linear_warmup_rate"],
                                                              min_lr=OPTIM["min_lr"])

    # ---- stage 1: ExpStage1.training_step under Lightning's automatic optimisation
    tape.phase = "stage1"
    optimizer = torch.optim.AdamW(vqvae.parameters(), lr=OPTIM["lr"])
    scheduler = schedule(optimizer)
    vqvae.train()
    lrs = []
    with contextlib.ExitStack() as stack:
        stack.enter_context(_swapped(mods["vq"], "torch", torch_proxy))
        stack.enter_context(dropout.active(dropouts, bt.BidirectionalTransformer, "_token_emb_dropout"))
        for k in range(K):
            index = torch.as_tensor(data["input/stage1/batch_index"][k])
            res = vqvae(x_all[index])
            loss = (res.recons_loss["LF.time"] + res.recons_loss["HF.time"] + res.vq_losses["LF"]["loss"]
                    + res.vq_losses["HF"]["loss"])
            scheduler.step()                              # inside their training_step: before the optimiser
            optimizer.zero_grad()
            loss.backward()
            terms = {"LF.time": res.recons_loss["LF.time"], "HF.time": res.recons_loss["HF.time"],
                     "commit.LF": res.vq_losses["LF"]["commit_loss"], "commit.HF": res.vq_losses["HF"]["commit_loss"],
                     "loss": loss, "perplexity.LF": res.perplexities["LF"], "perplexity.HF": res.perplexities["HF"]}
            for name, value in terms.items():
                out[f"loss/stage1/{k:02d}/{name}"] = value.detach().reshape(()).numpy().copy()
            if k == 0:
                out.update({f"grad/stage1/{n}": p.grad.numpy().copy() for n, p in vqvae.named_parameters()})
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            if (k + 1) % per_epoch() == 0:
                scheduler.step()                          # Lightning: a scheduler's default interval is "epoch"
    out["param_after/stage1/lr"] = np.array(lrs)
    out.update(_state(vqvae, "param_after/stage1/"))

    # ---- stage 2: ExpStage2.training_step; MaskGIT freezes the VQ-VAE (stage 1's result)
    if start is not None:
        _load(vqvae, start, "param_after/stage1/", dtype)
    torch.manual_seed(SEED + 2)
    np.random.seed(SEED + 2)
    prior = {kind: mods["maskgit"].PriorModelConfig(hidden_dim=m[f"{kind}_hidden_dim"], n_layers=m[f"{kind}_n_layers"],
                                                    heads=m[f"{kind}_heads"], ff_mult=m["ff_mult"], use_rmsnorm=True,
                                                    p_unconditional=m["p_unconditional"],
                                                    emb_dropout=m["emb_dropout"])
             for kind in ("lf", "hf")}
    maskgit = mods["maskgit"].MaskGIT(vqvae, SAMPLING["choice_temperature_lf"], SAMPLING["choice_temperature_hf"],
                                      SAMPLING["steps_lf"], SAMPLING["steps_hf"], m["codebook_size_lf"],
                                      m["codebook_size_hf"], m["hid_dim"], prior["lf"], prior["hf"],
                                      classifier_free_guidance_scale=1.0, n_classes=N_CLASSES)
    transformers = {f"transformer_{k}": getattr(maskgit, f"transformer_{k}") for k in "lh"}
    for name, module in transformers.items():
        if start is not None:
            _load(module, start, f"weights/stage2/{name}.", dtype)
        module.to(dtype)
        out.update(_state(module, f"weights/stage2/{name}."))
    with contextlib.ExitStack() as stack:
        stack.enter_context(_swapped(mods["maskgit"], "torch", torch_proxy))
        stack.enter_context(_swapped(mods["maskgit"], "np", np_proxy))
        stack.enter_context(_swapped(bt, "torch", torch_proxy))
        stack.enter_context(dropout.active({}, bt.BidirectionalTransformer, "_token_emb_dropout"))
        # guidance inside training (their masked_prediction when cfg_scale != 1): one batch, loss and gradients,
        # then the priors put back as they were (their Upscale's BatchNorm statistics moved)
        saved = {name: copy.deepcopy(module.state_dict()) for name, module in transformers.items()}
        tape.phase, maskgit.cfg_scale = "stage2_cfg", TRAIN_CFG_SCALE
        maskgit.train()
        res = maskgit(x_all[torch.as_tensor(data["input/stage2/batch_index"][0])],
                      y_all[torch.as_tensor(data["input/stage2/batch_index"][0])])
        res.total_mask_prediction_loss.backward()
        for name, value in (("LF", res.mask_pred_loss_l), ("HF", res.mask_pred_loss_h),
                            ("loss", res.total_mask_prediction_loss)):
            out[f"loss/stage2_cfg{TRAIN_CFG_SCALE:g}/{name}"] = value.detach().reshape(()).numpy().copy()
        out.update({f"grad/stage2_cfg{TRAIN_CFG_SCALE:g}/{name}.{n}": p.grad.numpy().copy()
                    for name, module in transformers.items() for n, p in module.named_parameters()})
        maskgit.zero_grad(set_to_none=True)
        for name, module in transformers.items():
            module.load_state_dict(saved[name])
        maskgit.cfg_scale = 1.0

        tape.phase = "stage2"
        optimizer = torch.optim.AdamW(maskgit.parameters(), lr=OPTIM["lr"])
        scheduler = schedule(optimizer)
        maskgit.train()                                   # Lightning's model.train(); their forward sets eval
        lrs = []
        for k in range(K):
            index = torch.as_tensor(data["input/stage2/batch_index"][k])
            res = maskgit(x_all[index], y_all[index])
            scheduler.step()
            optimizer.zero_grad()
            res.total_mask_prediction_loss.backward()
            for name, value in (("LF", res.mask_pred_loss_l), ("HF", res.mask_pred_loss_h),
                                ("loss", res.total_mask_prediction_loss)):
                out[f"loss/stage2/{k:02d}/{name}"] = value.detach().reshape(()).numpy().copy()
            if k == 0:
                out.update({f"grad/stage2/{name}.{n}": p.grad.numpy().copy()
                            for name, module in transformers.items() for n, p in module.named_parameters()})
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            if (k + 1) % per_epoch() == 0:
                scheduler.step()
    out["param_after/stage2/lr"] = np.array(lrs)
    for name, module in transformers.items():
        out.update(_state(module, f"param_after/stage2/{name}."))
    vq_after = _state(vqvae, "param_after/stage1/")
    notes["vqvae_unchanged_by_stage2"] = all(np.array_equal(v, out[k]) for k, v in vq_after.items())

    # ---- sampling: their iterative decoding (cosine schedule, choice temperatures, cfg) from the trained model
    if start is not None:
        for name, module in transformers.items():
            _load(module, start, f"param_after/stage2/{name}.", dtype)
    maskgit.eval()
    maskgit.cfg_scale = SAMPLING["cfg_scale"]
    tape.phase = "sample"
    seen = defaultdict(int)
    original_predict = maskgit.sampling_logic.masked_prediction_fn
    min_prob = [1.0]

    def predict(transformer, class_condition, *tokens):
        logits = original_predict(transformer, class_condition, *tokens)
        step = seen[transformer.kind]
        seen[transformer.kind] += 1
        out[f"sample/tokens/{transformer.kind}/step{step}_in"] = tokens[-1].numpy().copy()
        out[f"sample/logits/{transformer.kind}/step{step}"] = logits.numpy().copy()
        return logits

    original_sample, original_uniform = Categorical.sample, torch.Tensor.uniform_

    def categorical_sample(self, sample_shape=torch.Size()):
        if tape.replaying:
            return torch.as_tensor(tape.next("categorical", self.probs.shape[:-1]))
        index = original_sample(self, sample_shape)
        # the uniform our inverse-CDF sampler needs to draw the same token: the middle of its CDF interval
        cdf = self.probs.double().cumsum(-1)
        hi = cdf.gather(-1, index[..., None])
        lo = hi - self.probs.double().gather(-1, index[..., None])
        min_prob[0] = min(min_prob[0], float((hi - lo).min()))
        tape.record({"categorical": index.numpy(), "categorical_u": ((lo + hi) / 2 / cdf[..., -1:]).squeeze(-1)
                     .numpy()})
        return index

    def uniform_(self, a=0.0, b=1.0, *, generator=None):  # their Gumbel noise: zeros_like(t).uniform_(0, 1)
        if tape.replaying:
            return self.copy_(torch.as_tensor(tape.next("gumbel_uniform", self.shape)))
        original_uniform(self, a, b, generator=generator)
        tape.record({"gumbel_uniform": self.numpy().copy()})
        return self

    labels = torch.as_tensor(data["input/sample_labels"])[:, None]
    with contextlib.ExitStack() as stack:
        stack.enter_context(_swapped(maskgit.sampling_logic, "masked_prediction_fn", predict))
        stack.enter_context(_swapped(Categorical, "sample", categorical_sample))
        stack.enter_context(_swapped(torch.Tensor, "uniform_", uniform_))
        tokens_l, tokens_h = maskgit.iterative_decoding(num_samples=SAMPLING["n"], mode="cosine",
                                                        class_condition=labels)
    with torch.no_grad():
        x_l = maskgit.decode_token_ind_to_timeseries(tokens_l, "lf")
        x_h = maskgit.decode_token_ind_to_timeseries(tokens_h, "hf")
    out["sample/tokens/lf_final"], out["sample/tokens/hf_final"] = tokens_l.numpy(), tokens_h.numpy()
    out["sample/x"] = (x_l + x_h).numpy()
    notes["smallest_probability_of_a_drawn_token"] = min_prob[0]
    if tape.replaying:
        tape.done()
    return out, notes


def _relative(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = float(np.max(np.abs(a))) if a.size else 0.0
    diff = float(np.max(np.abs(a - b))) if a.size else 0.0
    return diff / scale if scale > 0 else diff


TOLERANCE_PREFIXES = ("loss/stage1/", "loss/stage2/", "loss/stage2_cfg2/", "grad/stage1/", "grad/stage2/",
                      "grad/stage2_cfg2/", "param_after/stage1/", "param_after/stage2/", "sample/logits/", "sample/x")


def run_authors(repo_dir) -> tuple[dict, dict]:
    import torch
    torch.set_num_threads(1)
    repo_dir = Path(repo_dir)
    mods = _import_authors(repo_dir)
    commit = subprocess.run(["git", "-C", str(repo_dir), "rev-parse", "HEAD"], check=True, capture_output=True,
                            text=True).stdout.strip()
    if commit != AUTHORS_COMMIT:
        raise SystemExit(f"{repo_dir} is at {commit}; our module follows {AUTHORS_TAG} ({AUTHORS_COMMIT}): "
                         f"`git -C {repo_dir} checkout {AUTHORS_TAG} -- src`")
    data = inputs()
    tape = Tape()
    run32, notes = _authors_pipeline(mods, data, tape, "float32", None)
    draws = tape.arrays()
    saved_float, saved_default = torch.Tensor.float, torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    torch.Tensor.float = lambda self, *a, **kw: self.to(torch.float64)   # their .float() casts, this run only
    try:
        run64, _ = _authors_pipeline(mods, {**data, **draws}, Tape({**data, **draws}), "float64", run32)
    finally:
        torch.Tensor.float = saved_float
        torch.set_default_dtype(saved_default)
    outputs = [k for k in run32 if not k.startswith("weights/")]
    noise = {k: _relative(run32[k], run64[k]) for k in outputs}
    # per output: a few parameters' values are float noise (analytically zero gradients: conv biases and
    # weight-norm gains ahead of a train-mode BatchNorm, the weight-norm v of 1-D LayerNorm weights; after K
    # AdamW steps those parameters and the running means they feed), so one tolerance per category would be
    # either useless for the rest or fail on them; each output is held to its own measured noise
    tolerances = {k: max(TOLERANCE_FACTOR * noise[k], TOLERANCE_FLOOR) for k in outputs
                  if not k.startswith("sample/tokens/")}
    tolerances["sample/tokens/"] = 0.0
    summary = {}
    for prefix in TOLERANCE_PREFIXES:
        values = sorted(tolerances[k] for k in tolerances if k.startswith(prefix))
        summary[prefix] = {"outputs": len(values), "median_tolerance": values[len(values) // 2],
                           "max_tolerance": values[-1],
                           "float_noise_only": sorted(k for k in tolerances
                                                      if k.startswith(prefix) and noise[k] > 1e-3)}
    arrays = {**data, **draws, **{k: v for k, v in run32.items() if k.startswith("weights/")}}
    arrays.update({f"authors/{k}": v for k, v in run32.items() if not k.startswith("weights/")})
    counts = {c: sum(1 for k in run32 if k.startswith(c)) for c in ("loss/", "grad/", "param_after/", "sample/")}
    info = {
        "commit": commit, "tag": AUTHORS_TAG, "training_loop_commit": TRAINING_COMMIT,
        "environment": {"python": sys.version.split()[0], "torch": torch.__version__,
                        "numpy": np.__version__, "einops": importlib.import_module("einops").__version__,
                        "einops_from": str(SITE.relative_to(SITE.parents[1])) + " (pip --target, not ours)",
                        "threads": 1},
        "changes": [
            "none to their files; at run time only:",
            "their loop is transcribed, Lightning is not run: ExpStage1/ExpStage2.training_step (at "
            f"{TRAINING_COMMIT[:7]}: loss, then sch.step(), then zero_grad, backward, AdamW.step) and Lightning's "
            "epoch-end scheduler step; AdamW(lr) and their linear_warmup_cosine_annealingLR loaded from that "
            "commit's src/timevqvae/utils/optim.py; wandb logging and plots are not run",
            "stage 2 trains v1.0.1's MaskGIT.forward (the b3d87ed parent's ExpStage2 called the older "
            "maskgit.train(x, y)) on the VQ-VAE stage 1 left, frozen by their MaskGIT",
            "their RNG calls are observed and recorded as they return (np.random.uniform mask ratios and "
            "torch.rand scores in maskgit.py, torch.rand label dropout in bidirectional_transformer.py, "
            "torch.randperm k-means start in vq.py, Categorical.sample and the Gumbel uniform_ in sampling) through "
            "proxies of those modules' torch/np globals and patched Categorical.sample / Tensor.uniform_",
            "F.dropout replaced in both by x * mask / (1 - p) with harness-drawn Bernoulli(1 - p) masks keyed by "
            "module (ResBlock dropout .3, prior embedding dropout .3); p = 0 dropouts pass through as before",
            "maskgit.cfg_scale set to 2 for one extra stage-2 batch (loss, gradients; the priors put back "
            "after) and for sampling; the 24 stage-2 steps train at 1 (config.yaml's)",
            "tolerance run only: float64 default dtype and Tensor.float -> float64, their draws replayed",
        ],
        "config": {"n_features": N_FEATURES, "seq_len": SEQ_LEN, "n_classes": N_CLASSES, "n_stays": N_STAYS,
                   "batch_size": BATCH, "max_steps": MAX_STEPS, "model": MODEL, "optim": OPTIM,
                   "sampling": SAMPLING, "dim_head": 64, "kmeans_iters": 10, "codebook_decay": 0.8},
        "K": K,
        "counts": counts,
        "tolerances": tolerances,
        "tolerance_summary": summary,
        "tolerance_basis": (f"their pipeline run again in float64 (same weights, batches and recorded draws; each "
                            f"phase from the float32 run's weights); each output's tolerance is "
                            f"{TOLERANCE_FACTOR:g} x its own relative float32-vs-float64 difference, at least "
                            f"{TOLERANCE_FLOOR:g}; tokens 0 (integers from identical draws). Per output, not per "
                            f"category: the outputs listed under float_noise_only (f64 difference > 1e-3) are "
                            f"values set by rounding (zero analytic gradient: conv biases and weight-norm gains "
                            f"ahead of a train-mode BatchNorm, weight-norm v of 1-D LayerNorm weights; after K "
                            f"AdamW steps those parameters and the running means they feed)"),
        "notes": notes,
    }
    return arrays, info


# --------------------------------------------------------------------------- ours

def our_config():
    from tardiff.generators.timevqvae import TimeVQVAEConfig
    m = MODEL
    return TimeVQVAEConfig(
        n_fft=m["n_fft"], init_dim=m["init_dim"], hid_dim=m["hid_dim"],
        encoder_n_resnet_blocks=m["encoder_n_resnet_blocks"], decoder_n_resnet_blocks=m["decoder_n_resnet_blocks"],
        downsampled_width_lf=m["downsampled_width_lf"], downsampled_width_hf=m["downsampled_width_hf"],
        encdec_dropout=m["encdec_dropout"], codebook_size_lf=m["codebook_size_lf"],
        codebook_size_hf=m["codebook_size_hf"], codebook_dim=m["codebook_dim"], lf_hidden_dim=m["lf_hidden_dim"],
        lf_n_layers=m["lf_n_layers"], lf_heads=m["lf_heads"], hf_hidden_dim=m["hf_hidden_dim"],
        hf_n_layers=m["hf_n_layers"], hf_heads=m["hf_heads"], dim_head=64, ff_mult=m["ff_mult"],
        emb_dropout=m["emb_dropout"], p_unconditional=m["p_unconditional"], cfg_scale=1.0, batch_size=BATCH,
        lr=OPTIM["lr"], linear_warmup_rate=OPTIM["linear_warmup_rate"], min_lr=OPTIM["min_lr"],
        max_steps_stage1=MAX_STEPS, max_steps_stage2=MAX_STEPS,
        choice_temperature_lf=SAMPLING["choice_temperature_lf"],
        choice_temperature_hf=SAMPLING["choice_temperature_hf"], sampling_steps_lf=SAMPLING["steps_lf"],
        sampling_steps_hf=SAMPLING["steps_hf"])


def _load_ours(model, arrays: dict, prefix: str) -> None:
    """Their arrays (prefix + their name) into our model, translated (names, `initted`'s shape and dtype)."""
    import torch
    state = model.state_dict()
    for key, value in arrays.items():
        if not key.startswith(prefix) or key.endswith("/lr"):
            continue
        name = ours_name(key[len(prefix):])
        if name not in state:
            raise KeyError(f"{key}: ours has no {name}")
        target = state[name]
        state[name] = torch.as_tensor(np.asarray(value)).reshape(target.shape).to(target.dtype)
    model.load_state_dict(state)


def _our_state(model, fixture: dict, prefix: str) -> dict:
    """Our tensors under their names (prefix + name), in their shapes and dtypes (e.g. `initted` (1,) float)."""
    state = model.state_dict()
    out = {}
    for key in fixture:
        if key.startswith("authors/" + prefix) and not key.endswith("/lr"):
            name, their = key[len("authors/"):], np.asarray(fixture[key])
            value = state[ours_name(name[len(prefix):])].detach().cpu().numpy()
            out[name] = value.reshape(their.shape).astype(their.dtype)
    return out


def run_ours(fixture: dict) -> dict:
    import dataclasses

    import torch
    from tardiff.generators import timevqvae as ours_module
    from tardiff.generators.timevqvae import PriorTransformer, TimeVQVAEModel, stage_optimizer, train_step
    torch.set_num_threads(1)
    tape = Tape(fixture)
    c = our_config()
    model = TimeVQVAEModel(N_FEATURES, SEQ_LEN, N_CLASSES, c)
    out = {}
    x_all = torch.as_tensor(fixture["input/x"])
    y_all = torch.as_tensor(fixture["input/y"])[:, None]

    def rand(*size, generator=None, dtype=None, device=None, **_):
        shape = tuple(size[0] if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)) else size)
        if len(shape) == 3 and shape[-1] == 1:     # our inverse-CDF sampler: their Categorical draw as a uniform
            value = tape.next("categorical_u", shape[:-1])[..., None]
        else:
            seq, i = tape.sequence[tape.phase], tape.position[tape.phase]
            tag = next((t for t in ("uniform_np", "rand", "gumbel_uniform") if i < len(seq) and t in seq[i]), "rand")
            value = tape.next(tag, shape)
        return torch.as_tensor(np.asarray(value)).to(dtype or torch.float32)

    def randperm(n, generator=None, **_):
        return torch.as_tensor(tape.next("randperm", (n,)))

    def randint(low, high, size, generator=None, **_):
        return torch.as_tensor(tape.next("randint", size))

    decoded = []

    def iterative_decoding(*args, **kwargs):
        decoded.append(original_decoding(*args, **kwargs))
        return decoded[-1]

    original_decoding = ours_module.iterative_decoding
    proxy = _Proxy(torch, rand=rand, randperm=randperm, randint=randint)
    dropout = KeyedDropout(tape)
    dropouts = {k[len("vqvae."):]: mod for k, mod in model.named_modules()
                if isinstance(mod, torch.nn.Dropout) and k.startswith("vqvae.")}
    params = dict(model.named_parameters())

    def grads(prefix):
        return {k[len("authors/"):]: params[ours_name(k[len("authors/" + prefix):])].grad.numpy().copy()
                for k in fixture if k.startswith("authors/" + prefix)}

    def train(stage, parameters):
        optimizer, scheduler = stage_optimizer(parameters, MAX_STEPS, c)
        model.train()
        tape.phase, lrs = f"stage{stage}", []
        with dropout.active(dropouts if stage == 1 else {}, PriorTransformer, "_embedding_dropout"):
            for k in range(K):
                index = torch.as_tensor(fixture[f"input/stage{stage}/batch_index"][k])
                lrs.append(optimizer.param_groups[0]["lr"])
                losses = train_step(model, stage, x_all[index], y_all[index], optimizer, scheduler, None,
                                    end_of_epoch=(k + 1) % per_epoch() == 0)
                out.update({f"loss/stage{stage}/{k:02d}/{n}": losses[n].detach().numpy().copy()
                            for n in (LOSS_TERMS_1 if stage == 1 else LOSS_TERMS_2)})
                if k == 0:
                    out.update(grads(f"grad/stage{stage}/"))
        out[f"param_after/stage{stage}/lr"] = np.array(lrs)
        out.update(_our_state(model, fixture, f"param_after/stage{stage}/"))

    with _swapped(ours_module, "torch", proxy), _swapped(ours_module, "iterative_decoding", iterative_decoding):
        _load_ours(model, fixture, "weights/stage1/")
        train(1, model.vqvae.parameters())
        # stage 2 from their stage-1 result and their initial priors, as their MaskGIT is built on it
        _load_ours(model, fixture, "authors/param_after/stage1/")
        _load_ours(model, fixture, "weights/stage2/")
        # guidance inside training, one batch (their masked_prediction at cfg_scale != 1), then put back
        saved = copy.deepcopy(model.state_dict())
        model.config, tape.phase = dataclasses.replace(c, cfg_scale=TRAIN_CFG_SCALE), "stage2_cfg"
        model.train()
        index = torch.as_tensor(fixture["input/stage2/batch_index"][0])
        with dropout.active({}, PriorTransformer, "_embedding_dropout"):
            losses = model.prior_loss(x_all[index], y_all[index])
            losses["loss"].backward()
        prefix = f"stage2_cfg{TRAIN_CFG_SCALE:g}"
        out.update({f"loss/{prefix}/{n}": losses[n].detach().numpy().copy() for n in LOSS_TERMS_2})
        out.update(grads(f"grad/{prefix}/"))
        model.zero_grad(set_to_none=True)
        model.load_state_dict(saved)
        model.config = c
        train(2, list(model.transformer_l.parameters()) + list(model.transformer_h.parameters()))
        # sampling from their trained priors, guidance scale 2
        _load_ours(model, fixture, "authors/param_after/stage2/")
        model.eval()
        model.config = dataclasses.replace(c, cfg_scale=SAMPLING["cfg_scale"])
        tape.phase = "sample"
        seen = defaultdict(int)
        original = model.prior_logits

        def prior_logits(kind, class_condition, *tokens, **kwargs):
            logits = original(kind, class_condition, *tokens, **kwargs)
            out[f"sample/tokens/{kind}/step{seen[kind]}_in"] = tokens[-1].numpy().copy()
            out[f"sample/logits/{kind}/step{seen[kind]}"] = logits.numpy().copy()
            seen[kind] += 1
            return logits

        model.prior_logits = prior_logits
        x = model.sample(torch.as_tensor(fixture["input/sample_labels"])[:, None])
        del model.prior_logits
    tape.done()
    out["sample/x"] = x.numpy()
    out["sample/tokens/lf_final"], out["sample/tokens/hf_final"] = (t.numpy() for t in decoded)
    return out
