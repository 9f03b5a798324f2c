"""TimeVAE against abudesai/timeVAE (`src/vae/timevae.py`, `vae_base.py`) on the same weights, batches and noise.

The authors' side (.venv-tf, TF 2.15 / Keras 2) builds their model as their `instantiate_vae_model("timeVAE",
...)` does (`set_seeds(123)`, then their `TimeVAE`) from their `hyperparameters.yaml`, only smaller (CONFIG):
their default (level + residual decoder: the defaults have no trend and no seasonalities) and, as a second
variant, the interpretable TimeVAE (trend and custom seasonalities added), which ours offers too. Each trains
with their `train_step` and their Adam through Keras's `fit`, one call per epoch on the epoch's rows in a given
order (Keras's own shuffle replaced by that order). Their reparameterisation draw (`random_normal` in
`vae_base.Sampling`) and their prior draw (`np.random.randn` in `get_prior_samples`) return the fixture's
noise; their loss trackers and `apply_gradients` are wrapped to record each step's loss terms and gradients.
Their EarlyStopping and ReduceLROnPlateau, the objects `fit_on_data` builds, are driven on a given loss
sequence: with 64 stays they cannot act within K steps (patience 30 and 50 epochs), and as released they never
act (RELEASED). Their scaler (`data_utils.scale_data`, `inverse_transform_data`) is compared with ours.

Our side loads the same weights into `TimeVAEModel` (Keras kernels (k, in, out) / (k, out, in) for the
transposed convolutions -> torch (out, in, k) / (in, out, k); dense kernels transposed) and runs OUR code:
`TimeVAEModel.loss_terms`, `TimeVAE.optimizer` (`KerasAdam`), `TimeVAE.train_epoch`, `TimeVAE._callbacks`,
`TimeVAE.decode_prior` and `Scaler`.

Tolerances are the authors' own float noise: the same run repeated with their model in float64 (Keras floatx
float64, their hard-coded float32 rewritten to float64, the same initial weights and draws), the largest
relative difference from the float32 run per prefix, times TOLERANCE_FACTOR. The fixture keeps that float64
run ("float64/..."): `python -m experiments.authors_equivalence.timevae` holds ours, in float64, to it.
"""
from __future__ import annotations

import hashlib
import linecache
import math
import platform
import sys
import types
from pathlib import Path

import numpy as np

AUTHORS_REPO = "abudesai/timeVAE"
AUTHORS_COMMIT = "9914576bd44a6facbc94a594a82dd14724969a50"
# git blob ids of the files run, at AUTHORS_COMMIT: a checkout that differs is refused
AUTHORS_BLOBS = {"src/vae/timevae.py": "d93af45a6be6e1da27c18564d1236c4cdc13a06e",
                 "src/vae/vae_base.py": "7dbc3b49e06a4b8ccb6f00ac0eddb82794b95ef6",
                 "src/vae/vae_utils.py": "787f41ec15b2b726f29e6228cdf6dc5791e8dcef",
                 "src/data_utils.py": "7f813e4163fb5232e61f0e5be77d7f07d6fe331e",
                 "src/config/hyperparameters.yaml": "bf6e03a85463b456ef162c22077fe6e5d64d710b"}
# small, with every part their default runs: three stride-2 convolutions (a length that is not a power of two,
# so "same" pads unevenly), the level and residual decoder terms, three transposed convolutions, several
# epochs of several mini-batches of their batch size
CONFIG = {"n_raw": 72, "valid_perc": 0.1, "seq_len": 10, "feat_dim": 3, "latent_dim": 4,
          "hidden_layer_sizes": [8, 12, 16], "epochs": 6, "n_prior": 32}
# the default model (their hyperparameters.yaml: level + residual), and the interpretable TimeVAE their
# options build (trend polynomial and two custom seasonalities on top), which ours offers too; its outputs
# and weights are keyed "<category>/interpretable/..."
VARIANTS = {"default": {}, "interpretable": {"trend_poly": 2, "custom_seas": [[3, 2], [2, 3]]}}
SEED = 0
TOLERANCE_FACTOR = 10.0
CHANGES = [
    "the model is built as their `instantiate_vae_model('timeVAE', ...)` builds it (their set_seeds(123), then "
    "their TimeVAE class) with their hyperparameters.yaml's timeVAE section, latent_dim and hidden_layer_sizes "
    "set smaller (CONFIG); the interpretable variant adds trend_poly 2 and custom_seas [[3, 2], [2, 3]]",
    "`model.run_eagerly = True`, so their train_step runs step by step in Python and the wrapped draws and "
    "recorders below act per step (the same ops as their tf.function; the as-released check runs in graph mode)",
    "`vae.vae_base.random_normal` (Sampling's reparameterisation draw) returns the fixture's eps during the K "
    "training steps; `np.random.randn` returns the fixture's z inside `get_prior_samples`",
    "their three loss trackers' `update_state` and the optimizer's `apply_gradients` are wrapped to record each "
    "step's loss terms and gradients (values passed through unchanged)",
    "Keras's shuffle is replaced by a given order: each epoch is `model.fit(rows in that order, epochs=1, "
    "batch_size=16, shuffle=False)` (one optimizer throughout, as in one fit call)",
    "the callbacks are the two objects `fit_on_data` builds (captured by wrapping `model.fit`), driven with "
    "on_train_begin / on_epoch_end on a given loss sequence logged under their monitor key 'total_loss'",
    "tolerance run only: Keras floatx float64 and, in timevae.py's source, `tf.float32` -> `tf.float64` "
    "(level_model's ones tensor, TrendLayer's cast) and TrendLayer's `tf.range(0, float(seq_len), 1)` given "
    "dtype=tf.float64, from the float32 run's initial weights and the same draws",
    "`tf.keras.backend.clear_session()` before each model is built, so the interpretable model's layers are "
    "named trend_layer / seasonal_layer in every run (Keras would number the second one trend_layer_1)",
]
RELEASED = ("as released, `fit_on_data` monitors 'total_loss', which its `train_step` does not log (it logs "
            "'loss', 'reconstruction_loss', 'kl_loss'), so Keras warns and neither callback ever acts: it trains "
            "max_epochs at lr 1e-3. Ours runs the callbacks on the epoch's mean loss (config callbacks=True, the "
            "authors' evident intent); callbacks=False is the released behaviour.")


def raw_series(n: int, seq_len: int, dim: int, seed: int) -> np.ndarray:
    """Raw (unscaled) noisy sines with per-feature offsets and amplitudes, so min-max scaling does something."""
    rng = np.random.RandomState(seed)
    freq, phase = rng.uniform(0.1, 0.6, (n, 1, dim)), rng.uniform(0, 2 * np.pi, (n, 1, dim))
    t = np.arange(seq_len)[None, :, None]
    x = np.array([1.0, 3.0, 0.5]) * np.sin(freq * t + phase) + np.array([0.0, 2.0, -5.0])
    return (x + 0.1 * rng.normal(size=x.shape)).astype(np.float32)


def callback_losses() -> np.ndarray:
    """An epoch-loss curve that makes both Keras callbacks act: a plateau of 35 epochs (the lr halves after
    30), steps down by more than 1e-2 (both reset), a stretch improving by 1e-3 an epoch (ReduceLROnPlateau's
    min_delta 1e-4 counts it, EarlyStopping's 1e-2 does not: the lr halves again later), ending in early
    stopping; with steps of exactly 1e-2 and 1e-4 and one that only Keras's form of the test rejects."""
    # 7.999999999999999 + 0.01 < 8.01 is false, 7.999999999999999 < 8.01 - 0.01 true: Keras's test is the first
    seq = [12.0, 8.01, 7.999999999999999] + list(7.75 - 0.125 * np.arange(20))   # clear improvements to 5.375
    seq += [5.0] + [5.0] * 34                                 # plateau: lr halves 30 epochs after 5.0
    seq += [4.99, 4.98]                                        # steps of exactly 1e-2 (in float)
    seq += [4.0] + [4.0 - 1e-4 * (i + 1) for i in range(3)]   # a drop, then steps of exactly 1e-4
    seq += [4.0 - 1e-3 * (i + 4) for i in range(45)]          # small improvements: only the plateau counts them
    seq += [3.9] * 60                                          # flat: early stopping within 50 epochs
    return np.asarray(seq, np.float64)


def keras_layer_names(n_hidden: int, trend_poly: int = 0, n_seasons: int = 0) -> dict:
    """Their variable names' layer part (timevae.py) -> (our module path, kind)."""
    names = {f"enc_conv_{i}": (f"encoder_convs.{i}", "conv") for i in range(n_hidden)}
    names.update({"z_mean": ("z_mean", "dense"), "z_log_var": ("z_log_var", "dense"),
                  "level_params": ("level.0", "dense"), "level_params2": ("level.2", "dense"),
                  "dec_dense": ("residual_in", "dense"), "decoder_dense_final": ("residual_out", "dense")})
    names.update({f"dec_deconv_{i}": (f"decoder_convs.{i}", "conv") for i in range(n_hidden - 1)})
    names[f"dec_deconv__{n_hidden - 1}"] = (f"decoder_convs.{n_hidden - 1}", "conv")  # their last, named so
    if trend_poly:
        names.update({"trend_layer/trend_params": ("trend.0", "dense"),
                      "trend_layer/trend_params2": ("trend.2", "dense")})
    names.update({f"seasonal_layer/season_params_{i}": (f"seasons.{i}", "dense") for i in range(n_seasons)})
    return names


def to_torch_layout(kernel: np.ndarray) -> np.ndarray:
    """Keras Dense (in, out) -> Linear (out, in); Conv1D (k, in, out) -> Conv1d (out, in, k); Conv1DTranspose
    (k, out, in) -> ConvTranspose1d (in, out, k). Each is its own inverse (axes reversed)."""
    return np.ascontiguousarray(np.transpose(kernel))


def variant_key(outputs: dict, variant: str) -> dict:
    """"grad/z_mean/kernel" -> "grad/interpretable/z_mean/kernel" for a variant other than the default."""
    if variant == "default":
        return dict(outputs)
    return {f"{k.split('/', 1)[0]}/{variant}/{k.split('/', 1)[1]}": v for k, v in outputs.items()}


def _blob_id(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


# --------------------------------------------------------------------------- the authors' side (TF)

def _load_authors(src: Path):
    """Their modules, imported as their pipeline does (src/ on sys.path), and timevae.py again in float64."""
    sys.path.insert(0, str(src))
    import data_utils
    import vae.timevae as timevae
    import vae.vae_base as vae_base
    import vae.vae_utils as vae_utils
    source = (src / "vae" / "timevae.py").read_text()
    float32_range = "tf.range(0, float(self.seq_len), 1)"
    if source.count("tf.float32") != 2 or source.count(float32_range) != 1:
        raise RuntimeError("expected timevae.py to hard-code float32 three times (level_model, TrendLayer)")
    source = source.replace("tf.float32", "tf.float64").replace(float32_range, float32_range[:-1] + ", dtype=tf.float64)")
    timevae64 = types.ModuleType("authors_timevae_float64")
    # a name of its own, its source in linecache: autograph re-reads a layer's `call` from its file
    timevae64.__file__ = str(src / "vae" / "timevae_float64.py")
    linecache.cache[timevae64.__file__] = (len(source), None, source.splitlines(True), timevae64.__file__)
    exec(compile(source, timevae64.__file__, "exec"), timevae64.__dict__)
    return data_utils, vae_base, vae_utils, timevae, timevae64


def _run(tf, vae_base, vae_utils, timevae_module, hp: dict, dtype: str, x_train: np.ndarray, orders: np.ndarray,
         eps: np.ndarray, z_prior: np.ndarray, weights: dict | None) -> dict:
    """Their model trained K steps on the given batches and noise; every recorded output, by fixture key."""
    c = CONFIG
    tf.keras.backend.set_floatx(dtype)
    try:
        tf.keras.backend.clear_session()                      # layer names without a _1 suffix in every run
        vae_utils.set_seeds(seed=123)                         # as their instantiate_vae_model does
        model = timevae_module.TimeVAE(seq_len=c["seq_len"], feat_dim=c["feat_dim"], **hp)
        model.run_eagerly = True
        if weights is not None:
            for w in model.trainable_weights:
                w.assign(weights[w.name[:-2]].astype(dtype))
        out = {"weights/" + w.name[:-2]: w.numpy() for w in model.trainable_weights}

        pending = []                                          # eps still to hand to Sampling, one per step
        original_normal = vae_base.random_normal

        def fed_normal(shape, *args, **kwargs):
            if not pending:
                return original_normal(shape, *args, **kwargs)
            e = pending.pop(0)
            if tuple(int(s) for s in shape) != e.shape:
                raise RuntimeError(f"Sampling asked for {tuple(shape)}, the fixture's eps is {e.shape}")
            return tf.constant(e, dtype=dtype)

        steps = {"total": [], "reconstruction": [], "kl": []}
        for name, tracker in (("total", model.total_loss_tracker),
                              ("reconstruction", model.reconstruction_loss_tracker), ("kl", model.kl_loss_tracker)):
            def recorded(value, *args, _update=tracker.update_state, _name=name, **kwargs):
                steps[_name].append(float(np.asarray(value)))
                return _update(value, *args, **kwargs)
            tracker.update_state = recorded
        grads = []
        apply = model.optimizer.apply_gradients

        def recorded_apply(grads_and_vars, *args, **kwargs):
            grads_and_vars = list(grads_and_vars)
            grads.append({v.name[:-2]: np.asarray(g) for g, v in grads_and_vars})
            return apply(grads_and_vars, *args, **kwargs)
        model.optimizer.apply_gradients = recorded_apply

        vae_base.random_normal = fed_normal
        randn = np.random.randn
        try:
            np.random.randn = lambda *shape: np.array(z_prior, np.float64)
            out["sample/prior_initial"] = model.get_prior_samples(len(z_prior))
            np.random.randn = randn
            batch, per_epoch = hp["batch_size"], len(x_train) // hp["batch_size"]
            epoch_loss = []
            for epoch, order in enumerate(orders):
                pending.extend(eps[epoch * per_epoch:(epoch + 1) * per_epoch].astype(dtype))
                history = model.fit(x_train[order].astype(dtype), epochs=1, batch_size=batch, shuffle=False,
                                    verbose=0)
                if pending:
                    raise RuntimeError(f"epoch {epoch}: {len(pending)} eps left unused")
                epoch_loss.append(history.history["loss"][0])
            np.random.randn = lambda *shape: np.array(z_prior, np.float64)
            out["sample/prior"] = model.get_prior_samples(len(z_prior))
            np.random.randn = randn
            out["sample/posterior"] = model.predict(x_train.astype(dtype), verbose=0)   # decoder(z_mean)
        finally:
            vae_base.random_normal, np.random.randn = original_normal, randn
        if len(grads) != len(orders) * per_epoch:
            raise RuntimeError(f"expected {len(orders) * per_epoch} optimiser steps, saw {len(grads)}")
        out.update({f"loss/initial/{k}": np.float64(v[0]) for k, v in steps.items()})
        out.update({f"loss/steps/{k}": np.asarray(v, np.float64) for k, v in steps.items()})
        out["loss/epoch_mean"] = np.asarray(epoch_loss, np.float64)
        out.update({f"grad/{k}": v for k, v in grads[0].items()})
        out.update({f"param_after/{w.name[:-2]}": w.numpy() for w in model.trainable_weights})
        return out
    finally:
        tf.keras.backend.set_floatx("float32")


def _callbacks_as_built(tf, vae_base, timevae_module, hp: dict, x_train: np.ndarray, losses: np.ndarray) -> dict:
    """The EarlyStopping and ReduceLROnPlateau that `fit_on_data` builds, driven on `losses`; and as released."""
    c = CONFIG
    model = timevae_module.TimeVAE(seq_len=c["seq_len"], feat_dim=c["feat_dim"], **hp)
    captured = {}
    model.fit = lambda *args, **kwargs: captured.update(kwargs)
    model.fit_on_data(x_train, max_epochs=1000, verbose=0)
    early_stopping, reduce_lr = captured["callbacks"]
    lr, stop, state, stopped = [], [], [], False
    model.stop_training = False
    for callback in (early_stopping, reduce_lr):
        callback.set_model(model)
        callback.on_train_begin()
    for epoch, loss in enumerate(losses):
        if not stopped:
            for callback in (early_stopping, reduce_lr):        # their order in `callbacks=[...]`
                callback.on_epoch_end(epoch, {early_stopping.monitor: float(loss)})
            stopped = bool(model.stop_training)
        lr.append(float(np.asarray(model.optimizer.learning_rate)))
        stop.append(float(stopped))
        state.append([early_stopping.wait, early_stopping.best, reduce_lr.wait, reduce_lr.best])
    settings = {type(cb).__name__: {k: getattr(cb, k) for k in ("monitor", "patience", "min_delta", "mode",
                                                                  "factor", "cooldown", "min_lr") if hasattr(cb, k)}
                for cb in (early_stopping, reduce_lr)}
    for cb in settings.values():
        cb["min_delta"] = abs(float(cb["min_delta"]))
    # as released: their fit_on_data, unchanged and in graph mode, for 2 epochs; what it logs and what Keras says
    import logging
    released = timevae_module.TimeVAE(seq_len=c["seq_len"], feat_dim=c["feat_dim"], **hp)
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    tf.get_logger().addHandler(handler)
    try:
        released.fit_on_data(x_train, max_epochs=2, verbose=0)
    finally:
        tf.get_logger().removeHandler(handler)
    as_released = {"epoch_log_keys": sorted(released.history.history),
                   "keras_warnings": sorted({m.split(". Available")[0] for m in messages if "total_loss" in m}),
                   "fit_kwargs": {k: v for k, v in captured.items() if k in ("epochs", "batch_size")}}
    state = np.asarray(state, np.float64)
    return ({"callbacks/lr": np.asarray(lr), "callbacks/stopped": np.asarray(stop),
             "callbacks/early_stopping_wait": state[:, 0], "callbacks/early_stopping_best": state[:, 1],
             "callbacks/reduce_lr_wait": state[:, 2], "callbacks/reduce_lr_best": state[:, 3]},
            settings, as_released)


def run_authors(repo_dir) -> tuple[dict, dict]:
    import yaml
    import tensorflow as tf

    repo_dir = Path(repo_dir).resolve()
    for rel, blob in AUTHORS_BLOBS.items():
        if _blob_id(repo_dir / rel) != blob:
            raise RuntimeError(f"{repo_dir / rel} is not {AUTHORS_REPO}@{AUTHORS_COMMIT[:7]}'s (blob {blob[:7]}); "
                               "extract that commit: git --git-dir=<mirror> archive <commit> src | tar -x -C <dir>")
    src = repo_dir / "src"
    data_utils, vae_base, vae_utils, timevae, timevae64 = _load_authors(src)
    c = CONFIG
    defaults = yaml.safe_load((src / "config" / "hyperparameters.yaml").read_text())["timeVAE"]
    if defaults.get("trend_poly") or defaults.get("custom_seas") or not defaults.get("use_residual_conn"):
        raise RuntimeError(f"their default is no longer level + residual only: {defaults}")
    hp = {**defaults, "latent_dim": c["latent_dim"], "hidden_layer_sizes": list(c["hidden_layer_sizes"])}

    raw = raw_series(c["n_raw"], c["seq_len"], c["feat_dim"], seed=1)
    train_raw, valid_raw = data_utils.split_data(raw, valid_perc=c["valid_perc"], shuffle=True)  # their seed 123
    x_train, _, scaler = data_utils.scale_data(train_raw, valid_raw)
    n, batch = len(x_train), hp["batch_size"]
    if n % batch:
        raise RuntimeError(f"{n} training stays are not whole batches of {batch}")
    rng = np.random.RandomState(SEED)
    orders = np.stack([rng.permutation(n) for _ in range(c["epochs"])])
    K = c["epochs"] * n // batch
    eps = rng.standard_normal((K, batch, c["latent_dim"])).astype(np.float32)
    z_prior = rng.standard_normal((c["n_prior"], c["latent_dim"]))
    losses = callback_losses()

    run32, run64 = {}, {}
    for variant, options in VARIANTS.items():
        variant_hp = {**hp, **options}
        out32 = _run(tf, vae_base, vae_utils, timevae, variant_hp, "float32", x_train, orders, eps, z_prior, None)
        weights = {k[len("weights/"):]: v for k, v in out32.items() if k.startswith("weights/")}
        out64 = _run(tf, vae_base, vae_utils, timevae64, variant_hp, "float64", x_train, orders, eps, z_prior,
                     weights)
        run32.update(variant_key(out32, variant))
        run64.update(variant_key(out64, variant))
    callbacks, callback_settings, as_released = _callbacks_as_built(tf, vae_base, timevae, hp, x_train, losses)

    # their scaler: forward on the training split, inverse on their prior samples; float64 input for its noise
    scaler_out = {"scaler/forward": x_train,
                  "scaler/inverse": data_utils.inverse_transform_data(run32["sample/prior"], scaler)}
    x64, _, scaler64 = data_utils.scale_data(train_raw.astype(np.float64), valid_raw.astype(np.float64))
    scaler_out64 = {"scaler/forward": x64,
                    "scaler/inverse": data_utils.inverse_transform_data(
                        run32["sample/prior"].astype(np.float64), scaler64)}

    authors = {k: v for k, v in run32.items() if not k.startswith("weights/")}
    authors.update(scaler_out)
    authors.update(callbacks)
    reference = {**run64, **scaler_out64, **callbacks}
    noise = {}
    for key, a in authors.items():
        group = _group(key)
        a, b = np.asarray(a, np.float64), np.asarray(reference[key], np.float64)
        rel = float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30)) if a.size else 0.0
        noise[group] = max(noise.get(group, 0.0), rel)
    tolerances = {g: float(f"{TOLERANCE_FACTOR * max(v, 1e-7):.3g}") for g, v in noise.items()}

    arrays = {"input/raw_train": train_raw, "input/x_train": x_train.astype(np.float32), "input/orders": orders,
              "input/eps": eps, "input/z_prior": z_prior, "input/callback_losses": losses,
              "input/inverse_in": run32["sample/prior"]}
    arrays.update({k: v for k, v in run32.items() if k.startswith("weights/")})
    arrays.update({"authors/" + k: np.asarray(v) for k, v in authors.items()})
    arrays.update({"float64/" + k: np.asarray(reference[k]) for k in authors})   # their float64 run, for diagnosis
    import keras
    info = {
        "commit": AUTHORS_COMMIT,
        "files_checked": AUTHORS_BLOBS,
        "environment": {"tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__,
                        "python": platform.python_version(), "venv": ".venv-tf (experiments/authors_equivalence/"
                        "tf_env.sh)", "authors_requirements": "tensorflow==2.16.1 (Keras 3); run here on 2.15.1 "
                        "(Keras 2), the TF2 / Keras 2 API their code is written against"},
        "changes": CHANGES,
        "config": {**c, "hyperparameters": hp, "variants": VARIANTS, "seed": SEED},
        "K": K,
        "callbacks": {"settings": callback_settings, "as_released": as_released, "note": RELEASED},
        "tolerances": tolerances,
        "tolerance_basis": (f"per prefix: {TOLERANCE_FACTOR:g} x the largest relative difference between the "
                            "authors' float32 run and the same run in float64 (Keras floatx float64, same initial "
                            "weights, batches and noise; the scaler on float64 raw data; the callbacks are exact "
                            "rules, their only float is Keras's float32 learning rate), floored at 1e-7 before "
                            "the factor; measured: " + ", ".join(f"{g} {v:.3g}" for g, v in sorted(noise.items()))),
        "float64_noise": {g: float(f"{v:.3g}") for g, v in noise.items()},
    }
    return arrays, info


def _group(key: str) -> str:
    """The tolerance prefix of an output key: each loss term, sample and scaler output on its own (their float
    noise differs: the KL cancels 1 + log σ² against exp(log σ²)); gradients, parameters, callbacks by category
    and variant."""
    parts = key.split("/")
    if parts[0] in ("loss", "sample", "scaler"):
        return key
    return parts[0] + "/" + (parts[1] + "/" if len(parts) > 2 and parts[1] in VARIANTS else "")


# --------------------------------------------------------------------------- our side (torch)

def _ours_variant(fixture: dict, variant: str, options: dict, dtype) -> dict:
    """One model's outputs (the default or the interpretable TimeVAE), keyed as the authors' default ones."""
    import torch

    from tardiff.generators.timevae import TimeVAE, TimeVAEConfig

    c = CONFIG
    x = torch.as_tensor(fixture["input/x_train"]).to(dtype)
    orders, eps = fixture["input/orders"], torch.as_tensor(fixture["input/eps"]).to(dtype)
    batch = eps.shape[1]
    seasons = tuple(tuple(s) for s in options.get("custom_seas", ()))
    generator = TimeVAE(TimeVAEConfig(latent_dim=c["latent_dim"], hidden_layer_sizes=tuple(c["hidden_layer_sizes"]),
                                      batch_size=batch, trend_poly=options.get("trend_poly", 0),
                                      custom_seas=seasons))
    model = generator.build(c["feat_dim"], c["seq_len"], None).to(dtype)
    names = keras_layer_names(len(c["hidden_layer_sizes"]), options.get("trend_poly", 0), len(seasons))
    prefix = "weights/" if variant == "default" else f"weights/{variant}/"
    params = dict(model.named_parameters())
    translate = {}                                            # our parameter name -> the authors' variable name
    with torch.no_grad():
        for layer, (path, _) in names.items():
            for ours, theirs in (("weight", "kernel"), ("bias", "bias")):
                value = fixture[f"{prefix}{layer}/{theirs}"]
                value = to_torch_layout(value) if theirs == "kernel" else value
                target = params[f"{path}.{ours}"]
                if tuple(target.shape) != value.shape:
                    raise ValueError(f"{layer}/{theirs}: ours {tuple(target.shape)}, theirs {value.shape}")
                target.copy_(torch.as_tensor(value).to(dtype))
                translate[f"{path}.{ours}"] = f"{layer}/{theirs}"
    if set(translate) != set(params):
        raise ValueError(f"parameters without an authors' weight: {sorted(set(params) - set(translate))}")

    def keras_layout(name: str, value: torch.Tensor) -> np.ndarray:
        value = value.detach().numpy()
        return to_torch_layout(value) if name.endswith(".weight") else value

    out = {}
    z_prior = torch.as_tensor(fixture["input/z_prior"]).to(dtype)    # Keras's predict casts their float64 draw
    out["sample/prior_initial"] = generator.decode_prior(model, z_prior, "cpu")
    # the loss and its gradient at the initial weights, on the first batch: the loss train_step minimises
    first = x[torch.as_tensor(orders[0][:batch])]
    terms = model.loss_terms(first, eps[0])
    terms["total"].backward()
    out.update({f"loss/initial/{k}": v.item() for k, v in terms.items()})
    out.update({f"grad/{translate[n]}": keras_layout(n, p.grad) for n, p in model.named_parameters()})
    model.zero_grad(set_to_none=True)

    optimizer = generator.optimizer(model)
    per_epoch = len(x) // batch
    steps, epoch_mean = [], []
    for epoch, order in enumerate(orders):
        order = torch.as_tensor(order)
        batches = [(x[order[i * batch:(i + 1) * batch]], eps[epoch * per_epoch + i]) for i in range(per_epoch)]
        mean, epoch_steps = generator.train_epoch(model, optimizer, batches)
        steps += epoch_steps
        epoch_mean.append(mean)
    out.update({f"loss/steps/{k}": np.array([s[k] for s in steps]) for k in ("total", "reconstruction", "kl")})
    out["loss/epoch_mean"] = np.array(epoch_mean)
    out.update({f"param_after/{translate[n]}": keras_layout(n, p) for n, p in model.named_parameters()})
    out["sample/prior"] = generator.decode_prior(model, z_prior, "cpu")
    with torch.no_grad():
        out["sample/posterior"] = model.decode(model.encode(x)[0]).numpy()   # their `call`: decoder(z_mean)
    return out


def run_ours(fixture: dict, dtype: str = "float32") -> dict:
    """Our outputs on the fixture's weights and inputs; dtype "float64" runs our model in double precision, to be
    held to the authors' float64 run (the fixture's "float64/..." arrays: see `main`)."""
    import torch

    from tardiff.generators.base import Scaler
    from tardiff.generators.timevae import TimeVAE, TimeVAEConfig

    out = {}
    for variant, options in VARIANTS.items():
        out.update(variant_key(_ours_variant(fixture, variant, options, getattr(torch, dtype)), variant))

    # the callbacks, with the authors' settings (our defaults), on the same loss sequence
    callbacks = TimeVAE(TimeVAEConfig())
    holder = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([holder], lr=callbacks.config.lr)
    state = {"epoch": 0, **callbacks.callback_state()}
    trace = {k: [] for k in ("lr", "stopped", "early_stopping_wait", "early_stopping_best", "reduce_lr_wait",
                             "reduce_lr_best")}
    for loss in fixture["input/callback_losses"]:
        if not state["stopped_early"]:
            state["epoch"] += 1
            callbacks._callbacks(state, float(loss), optimizer)
        for key, value in zip(trace, ("lr", "stopped_early", "wait_stop", "best_stop", "wait_lr", "best_lr")):
            trace[key].append(float(state[value]))
    out.update({f"callbacks/{k}": np.array(v) for k, v in trace.items()})

    scaler = Scaler.fit(TimeVAE.scaling, fixture["input/raw_train"])
    out["scaler/forward"] = scaler.forward(fixture["input/raw_train"])
    out["scaler/inverse"] = scaler.inverse(fixture["input/inverse_in"])
    return out


def main() -> int:
    """`python -m experiments.authors_equivalence.timevae`: ours in float64 against the authors' float64 run."""
    from experiments.authors_equivalence import Row, load_fixture

    fixture, _ = load_fixture("timevae")
    ours = run_ours(fixture, "float64")
    rows = []
    for key in sorted(k for k in fixture if k.startswith("float64/")):
        name = key[len("float64/"):]
        a, o = np.asarray(fixture[key], np.float64), np.asarray(ours[name], np.float64)
        max_abs, scale = float(np.max(np.abs(a - o))), float(np.max(np.abs(a)))
        rows.append(Row(name, max_abs, scale, max_abs / scale if scale else max_abs, math.nan))
    print("| output | max abs diff | scale | relative |\n|---|---|---|---|")
    print("\n".join(f"| {r.key} | {r.max_abs:.3g} | {r.scale:.3g} | {r.relative:.3g} |" for r in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
