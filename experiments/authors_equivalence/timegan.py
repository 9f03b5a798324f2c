"""TimeGAN against jsyoon0823/TimeGAN's `timegan.py` on the same weights, batches and noise (issue 29).

The authors' side runs their `timegan()` function unchanged except for the TF1 -> TF2 compat shim listed in
CHANGES, in .venv-tf/. It is observed, not rewritten: their module's `tf` is a compat.v1 namespace whose
`Session` records what their code runs (the initial weights after `global_variables_initializer`, every loss
their training loop fetches, the weights before their generation run) and reads the networks' tensors from
their function's own local variables; their `batch_generator` and `random_generator` run as written on a
seeded NumPy state and are only recorded (batch rows, noise). Our side replays those batches and noise
through our own training loop (`TimeGAN.train` with `_Batches` replaced by the replay), loss functions and
generation path, from the authors' initial weights.

Tolerances are the authors' own float noise: the same run repeated with their graph in float64 (their
`tf.float32` rewritten to `tf.float64`, the same initial weights and draws), the largest relative difference
from the float32 run per prefix, times TOLERANCE_FACTOR.
"""
from __future__ import annotations

import platform
import sys
import types
from pathlib import Path

import numpy as np

AUTHORS_REPO = "jsyoon0823/TimeGAN"
AUTHORS_COMMIT = "8f6181cb9b9d2fa0c930cd902411d9ac8a308e07"
# the git blob ids of the two files run, at AUTHORS_COMMIT: a checkout that is not a git repository (an export of
# the snapshot) is identified by its files' contents
AUTHORS_BLOBS = {"timegan.py": "05a2c6587b6f5ede442af419558765bd0718ebe9",
                 "utils.py": "f968e2bb63e4c7d4807a53fcf7d5df08705eb0db"}
ROOT = Path(__file__).resolve().parents[2]
# small, with every part: five networks (3 GRU layers, the supervisor 2), three phases, the joint phase's
# two generator/embedder steps per discriminator check, the moment loss, renormalisation
CONFIG = {"n": 40, "seq_len": 8, "dim": 3, "hidden_dim": 6, "num_layer": 3, "iterations": 8, "batch_size": 16,
          "module": "gru"}
SEED = 0
TOLERANCE_FACTOR = 10.0
NETWORKS = ("embedder", "recovery", "generator", "supervisor", "discriminator")
# each solver of timegan.py: (its loss, the networks in its var_list)
SOLVERS = {"E0_solver": ("E_loss0", ("embedder", "recovery")), "E_solver": ("E_loss", ("embedder", "recovery")),
           "D_solver": ("D_loss", ("discriminator",)), "G_solver": ("G_loss", ("generator", "supervisor")),
           "GS_solver": ("G_loss_S", ("generator", "supervisor"))}
LOSSES = ("E_loss_T0", "E_loss0", "E_loss", "G_loss_S", "G_loss_U", "G_loss_U_e", "G_loss_V1", "G_loss_V2",
          "G_loss_V", "G_loss", "D_loss_real", "D_loss_fake", "D_loss_fake_e", "D_loss")
CHANGES = [
    "timegan.py and utils.py run with their module-level `tf` bound to tensorflow.compat.v1 (TF 2.15, graph "
    "mode: disable_v2_behavior) instead of TF 1.15's `tensorflow`",
    "tf.contrib.layers.fully_connected(x, n, activation_fn=f) -> tf.layers.dense(x, n, activation=f): the same "
    "Glorot-uniform kernel and zero bias (variables named dense/kernel, dense/bias instead of "
    "fully_connected/weights, fully_connected/biases); tf.contrib does not exist in TF 2",
    "tf.Session is a subclass that records (initial weights, fetched losses, final weights) and, at those two "
    "points, evaluates every loss, the gradient of each solver's loss and the networks' outputs on a fixed probe "
    "batch; it adds graph ops only after training ops are built and changes no variable",
    "utils.batch_generator / random_generator are wrapped to record their output (the rows they drew, the noise); "
    "they run as written on NumPy's global state seeded with np.random.seed(SEED)",
    "tolerance run only: `tf.float32` -> `tf.float64` in timegan.py's source (placeholders and dynamic_rnn), "
    "tf.losses.mean_squared_error / sigmoid_cross_entropy as reduce_mean of squared_difference / "
    "sigmoid_cross_entropy_with_logits (TF's versions compute in float32 whatever the input), and the float32 "
    "run's initial weights loaded after global_variables_initializer",
]


# --------------------------------------------------------------------------- shared

def sines(n: int, seq_len: int, dim: int, seed: int) -> np.ndarray:
    """Raw (unscaled) sines with per-feature offsets and amplitudes, so the min-max scaling does something."""
    rng = np.random.RandomState(seed)
    freq, phase = rng.uniform(0, 0.5, (n, 1, dim)), rng.uniform(0, 2 * np.pi, (n, 1, dim))
    t = np.arange(seq_len)[None, :, None]
    return (np.array([1.0, 3.0, 0.5]) * np.sin(freq * t + phase) + np.array([0.0, 2.0, -5.0])).astype(np.float32)


def tf_variable_name(network: str, layer: int | None, part: str) -> str:
    """The authors' variable name of a cell's `part` (gates/kernel, ...) or, with layer None, the dense head's."""
    if layer is None:
        return f"{network}/dense/{part}"
    return f"{network}/rnn/multi_rnn_cell/cell_{layer}/gru_cell/{part}"


# --------------------------------------------------------------------------- the authors' side (TF)

def _load(repo_dir: Path, name: str, source_edit=None):
    source = (repo_dir / f"{name}.py").read_text()
    if source_edit is not None:
        source = source_edit(source)
    module = types.ModuleType(f"authors_timegan_{name}")
    module.__file__ = str(repo_dir / f"{name}.py")
    exec(compile(source, module.__file__, "exec"), module.__dict__)
    return module


def _compat(tf1, session_class, float64: bool):
    """tensorflow.compat.v1 with tf.contrib.layers.fully_connected (as tf.layers.dense) and our Session; with
    float64, tf.losses' two losses as their unweighted means in the input's dtype (TF's cast it to float32)."""
    shim = types.ModuleType("tensorflow_compat_v1_shim")
    shim.__dict__.update({k: getattr(tf1, k) for k in dir(tf1) if not k.startswith("__")})

    def fully_connected(inputs, num_outputs, activation_fn):
        return tf1.layers.dense(inputs, num_outputs, activation=activation_fn)

    shim.contrib = types.SimpleNamespace(layers=types.SimpleNamespace(fully_connected=fully_connected))
    shim.Session = session_class
    if float64:
        shim.losses = types.SimpleNamespace(
            mean_squared_error=lambda labels, predictions: tf1.reduce_mean(tf1.squared_difference(predictions, labels)),
            sigmoid_cross_entropy=lambda labels, logits: tf1.reduce_mean(
                tf1.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)))
    return shim


def _run_once(repo_dir: Path, dtype: str, preset: dict | None, config: dict | None = None, data=None):
    import tensorflow as tf
    tf1 = tf.compat.v1
    tf1.disable_v2_behavior()
    c = config or CONFIG
    data = sines(c["n"], c["seq_len"], c["dim"], seed=1) if data is None else data
    probe = np.random.RandomState(2)
    probe_idx = probe.permutation(c["n"])[:c["batch_size"]]
    probe_Z = probe.uniform(0., 1, (c["batch_size"], c["seq_len"], c["dim"]))
    rec = {"batch_idx": [], "Z": [], "loss": {}, "arrays": {}}

    class RecordingSession(tf1.Session):
        def run(self, fetches, feed_dict=None, **kwargs):
            ns = sys._getframe(1).f_locals                      # timegan()'s locals: its tensors and solvers
            if isinstance(fetches, tf1.Operation) and fetches.type == "NoOp":      # global_variables_initializer
                out = super().run(fetches, feed_dict, **kwargs)
                if preset is not None:
                    for v in tf1.trainable_variables():
                        self.run_plain(v.assign(preset[v.name[:-2]].astype(v.dtype.base_dtype.as_numpy_dtype)))
                rec["scaled"] = np.asarray(ns["ori_data"], np.float64)
                rec["arrays"].update({"weights/" + v.name[:-2]: self.run_plain(v) for v in tf1.trainable_variables()})
                self.probe("init", ns)
                return out
            if not isinstance(fetches, list) and fetches is ns.get("X_hat"):          # their generation run
                rec["arrays"].update({"param_after/" + v.name[:-2]: self.run_plain(v)
                                      for v in tf1.trainable_variables()})
                self.probe("final", ns)
                return super().run(fetches, feed_dict, **kwargs)
            out = super().run(fetches, feed_dict, **kwargs)
            if not isinstance(fetches, list) and fetches is ns.get("D_loss"):         # the discriminator's check
                rec["loss"].setdefault("joint/check_D_loss", []).append(out)
                rec["loss"].setdefault("joint/d_stepped", []).append(float(out > 0.15))
                return out
            solver = next(name for name in SOLVERS if fetches[0] is ns.get(name))
            phase = {"E0_solver": "embedding", "GS_solver": "supervised"}.get(solver, "joint")
            for tensor, value in zip(fetches[1:], out[1:]):
                name = next(k for k in LOSSES if ns.get(k) is tensor)
                rec["loss"].setdefault(f"{phase}/{solver}/{name}", []).append(value)
            return out

        def run_plain(self, fetches, feed_dict=None):
            return tf1.Session.run(self, fetches, feed_dict)

        def probe(self, when: str, ns: dict):
            feed = {ns["X"]: rec["scaled"][probe_idx], ns["Z"]: probe_Z, ns["T"]: [c["seq_len"]] * len(probe_idx)}
            values = self.run_plain({k: ns[k] for k in LOSSES}, feed)
            rec["arrays"].update({f"loss/{when}/{k}": v for k, v in values.items()})
            for solver, (loss, networks) in SOLVERS.items():
                var_list = [v for v in tf1.trainable_variables() if v.name.split("/")[0] in networks]
                grads = tf1.gradients(ns[loss], var_list)
                pairs = [(v, g) for v, g in zip(var_list, grads) if g is not None]
                values = self.run_plain([g for _, g in pairs], feed)
                rec["arrays"].update({f"grad/{when}/{solver}/{v.name[:-2]}": g for (v, _), g in zip(pairs, values)})
            outputs = self.run_plain({k: ns[k] for k in ("H", "X_tilde", "E_hat", "H_hat", "X_hat", "Y_real",
                                                          "Y_fake", "Y_fake_e")}, feed)
            rec["arrays"].update({f"sample/{when}/{k}": v for k, v in outputs.items()})

    shim = _compat(tf1, RecordingSession, dtype == "float64")
    edit = None if dtype == "float32" else (lambda s: s.replace("tf.float32", "tf.float64"))
    sys.path.insert(0, str(repo_dir))
    try:
        utils = _load(repo_dir, "utils")
        utils.tf = shim
        sys.modules["utils"] = utils                            # timegan.py's `from utils import ...`
        authors = _load(repo_dir, "timegan", edit)
    finally:
        sys.path.remove(str(repo_dir))
        sys.modules.pop("utils", None)
    authors.tf = shim
    batch_generator, random_generator = authors.batch_generator, authors.random_generator

    rows = {}

    def recorded_batches(data_, time, batch_size):
        X_mb, T_mb = batch_generator(data_, time, batch_size)
        if not rows:                                        # their scaled data, one row per stay
            rows.update({row.tobytes(): i for i, row in enumerate(np.asarray(data_))})
        rec["batch_idx"].append([rows[np.asarray(x).tobytes()] for x in X_mb])
        return X_mb, T_mb

    def recorded_noise(batch_size, z_dim, T_mb, max_seq_len):
        Z_mb = random_generator(batch_size, z_dim, T_mb, max_seq_len)
        rec["Z"].append(np.asarray(Z_mb))
        return Z_mb

    authors.batch_generator, authors.random_generator = recorded_batches, recorded_noise
    np.random.seed(SEED)
    parameters = {k: c[k] for k in ("hidden_dim", "num_layer", "iterations", "batch_size", "module")}
    generated = np.asarray(authors.timegan(data, parameters))
    rec["arrays"]["sample/generated"] = generated
    return data, probe_idx, probe_Z, rec, tf.__version__


def _authors_arrays(repo_dir: Path, config: dict, data=None, dtype: str = "float32", preset: dict | None = None):
    """(fixture arrays, the authors' outputs, the raw record, TF's version) of one run of their code."""
    data, probe_idx, probe_Z, rec, tf_version = _run_once(repo_dir, dtype, preset, config, data)
    it = config["iterations"]
    # their draws in call order: phase 1 batches, phase 2 (batch, noise), phase 3 3 x (batch, noise), generation
    batch_idx = np.asarray(rec["batch_idx"])
    Z = rec["Z"]
    if len(batch_idx) != 5 * it or len(Z) != 4 * it + 1:
        raise RuntimeError(f"expected {5 * it} batches and {4 * it + 1} noise draws, got {len(batch_idx)}, {len(Z)}")
    arrays = {"input/data": data, "input/batch_idx": batch_idx, "input/Z_joint": np.asarray(Z[it:4 * it]),
              "input/Z_generation": Z[-1], "input/probe_idx": probe_idx, "input/probe_Z": probe_Z}
    outputs = dict(rec["arrays"])
    outputs.update({f"loss/{k}": np.asarray(v, np.float64) for k, v in rec["loss"].items()})
    arrays.update({k: v for k, v in outputs.items() if k.startswith("weights/")})
    authors = {k: np.asarray(v) for k, v in outputs.items() if not k.startswith("weights/")}
    arrays.update({"authors/" + k: v for k, v in authors.items()})
    return arrays, authors, rec, tf_version


def run_authors(repo_dir) -> tuple[dict, dict]:
    import subprocess

    repo_dir = Path(repo_dir).resolve()
    commit = _authors_commit(repo_dir)                      # before the run: a wrong checkout fails at once
    arrays, authors, rec, tf_version = _authors_arrays(repo_dir, CONFIG)

    # the tolerance run: the same code in float64 from the same weights and draws
    weights = {k[len("weights/"):]: v for k, v in arrays.items() if k.startswith("weights/")}
    import pickle
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:         # their code prints to stdout: results go through a file
        weights_path, result_path = Path(tmp) / "weights.pkl", Path(tmp) / "result.pkl"
        weights_path.write_bytes(pickle.dumps(weights))
        script = (f"import sys, pickle; from pathlib import Path; sys.path.insert(0, {str(ROOT)!r}); "
                  "from experiments.authors_equivalence.timegan import _run_once; "
                  f"r = _run_once(Path({str(repo_dir)!r}), 'float64', pickle.loads(Path({str(weights_path)!r})"
                  f".read_bytes())); Path({str(result_path)!r}).write_bytes(pickle.dumps(r[3]))")
        result = subprocess.run([sys.executable, "-c", script], capture_output=True)
        if result.returncode:
            raise RuntimeError("the float64 run failed:\n" + result.stderr.decode()[-3000:])
        rec64 = pickle.loads(result_path.read_bytes())
    if rec64["batch_idx"] != rec["batch_idx"]:
        raise RuntimeError("the float64 run drew other batches")
    out64 = dict(rec64["arrays"])
    out64.update({f"loss/{k}": np.asarray(v, np.float64) for k, v in rec64["loss"].items()})
    noise = {}
    for key, a in authors.items():
        group = _group(key)
        b = np.asarray(out64[key], np.float64)
        a = np.asarray(a, np.float64)
        rel = float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30)) if a.size else 0.0
        noise[group] = max(noise.get(group, 0.0), rel)
    tolerances = {g: float(f"{TOLERANCE_FACTOR * max(v, 1e-7):.3g}") for g, v in noise.items()}
    counted = {"E0_solver": "embedding/E0_solver/E_loss_T0", "GS_solver": "supervised/GS_solver/G_loss_S",
               "G_solver": "joint/G_solver/G_loss_U", "E_solver": "joint/E_solver/E_loss_T0",
               "D_solver": "joint/D_solver/D_loss"}
    K = {solver: len(rec["loss"].get(key, [])) for solver, key in counted.items()}
    K["total"] = sum(K.values())
    info = {
        "commit": commit,
        "environment": {"tensorflow": tf_version, "numpy": np.__version__, "python": platform.python_version(),
                        "graph": "tensorflow.compat.v1, disable_v2_behavior"},
        "changes": CHANGES,
        "config": CONFIG,
        "K": K,
        "tolerances": tolerances,
        "tolerance_basis": (f"per prefix: {TOLERANCE_FACTOR:g} x the largest relative difference between the "
                            "authors' float32 run and the same run with their graph in float64 (same initial "
                            "weights, batches and noise), floored at 1e-7 before the factor; measured: "
                            + ", ".join(f"{g} {v:.3g}" for g, v in sorted(noise.items()))),
        "float64_noise": {g: float(f"{v:.3g}") for g, v in noise.items()},
    }
    return arrays, info


def _authors_commit(repo_dir: Path) -> str:
    """AUTHORS_COMMIT when the checkout's timegan.py and utils.py are that commit's blobs; else an error."""
    import hashlib

    for name, blob in AUTHORS_BLOBS.items():
        content = (repo_dir / name).read_bytes()
        found = hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()
        if found != blob:
            raise ValueError(f"{repo_dir / name} is not {AUTHORS_REPO}@{AUTHORS_COMMIT[:7]}'s (blob {found}, expected "
                             f"{blob}); check out that commit")
    return AUTHORS_COMMIT


def _group(key: str) -> str:
    """The tolerance prefix of an output key: its category and first part (e.g. "grad/final/")."""
    parts = key.split("/")
    return "/".join(parts[:2]) + "/" if len(parts) > 2 else parts[0] + "/"


# --------------------------------------------------------------------------- our side (torch)

def _translate(model) -> dict:
    """Our parameter of each authors' variable name, with the layout change (dense kernels are transposed)."""
    pairs = {}
    for network in NETWORKS:
        net = getattr(model, network)
        for i, cell in enumerate(net.cells):
            pairs.update({tf_variable_name(network, i, "gates/kernel"): (cell.gate_kernel, False),
                          tf_variable_name(network, i, "gates/bias"): (cell.gate_bias, False),
                          tf_variable_name(network, i, "candidate/kernel"): (cell.candidate_kernel, False),
                          tf_variable_name(network, i, "candidate/bias"): (cell.candidate_bias, False)})
        pairs.update({tf_variable_name(network, None, "kernel"): (net.head.weight, True),
                      tf_variable_name(network, None, "bias"): (net.head.bias, False)})
    return pairs


def run_ours(fixture: dict, config: dict | None = None) -> dict:
    """Our TimeGAN (tardiff.generators.timegan) from the authors' weights through their batches and noise."""
    import torch

    from tardiff.generators import timegan as ours
    from tardiff.generators.base import Checkpoint, Scaler

    c = config or CONFIG
    torch.set_num_threads(1)
    config = ours.TimeGANConfig(hidden_dim=c["hidden_dim"], num_layer=c["num_layer"], iterations=c["iterations"],
                                batch_size=c["batch_size"], log_every=c["iterations"])
    gen = ours.TimeGAN(config)
    model = gen.build(c["dim"], c["seq_len"], None)
    pairs = _translate(model)
    weights = {k[len("weights/"):]: v for k, v in fixture.items() if k.startswith("weights/")}
    if set(weights) != set(pairs):
        raise KeyError(f"the fixture's weights {sorted(set(weights) ^ set(pairs))} have no counterpart in ours")
    with torch.no_grad():
        for name, (param, transpose) in pairs.items():
            param.copy_(torch.as_tensor(weights[name].T if transpose else weights[name]))

    scaler = Scaler.fit("minmax01", fixture["input/data"])                   # the authors' MinMaxScaler
    X = torch.as_tensor(scaler.forward(fixture["input/data"]))
    probe_X = X[torch.as_tensor(fixture["input/probe_idx"])]
    probe_Z = torch.as_tensor(fixture["input/probe_Z"], dtype=torch.float32)
    out = {}

    def probe(when: str):
        losses = {"E0_solver": lambda: ours.embedding_losses(model, probe_X),
                  "GS_solver": lambda: ours.supervised_losses(model, probe_X),
                  "G_solver": lambda: ours.generator_losses(model, probe_X, probe_Z, config.gamma),
                  "E_solver": lambda: ours.embedder_losses(model, probe_X),
                  "D_solver": lambda: ours.discriminator_losses(model, probe_X, probe_Z, config.gamma)}
        for solver, (loss, networks) in SOLVERS.items():
            with ours._trained(model, *networks):
                values = losses[solver]()
                model.zero_grad(set_to_none=True)
                values[loss].backward()
            out.update({f"loss/{when}/{k}": v.item() for k, v in values.items()})
            out.update({f"grad/{when}/{solver}/{name}": (p.grad.T if t else p.grad).numpy().copy()
                        for name, (p, t) in pairs.items() if name.split("/")[0] in networks and p.grad is not None})
            model.zero_grad(set_to_none=True)
        with torch.no_grad():
            H, E_hat = model.embedder(probe_X), model.generator(probe_Z)
            H_hat = model.supervisor(E_hat)
            outputs = {"H": H, "X_tilde": model.recovery(H), "E_hat": E_hat, "H_hat": H_hat,
                       "X_hat": model(probe_Z), "Y_real": model.discriminator(H),
                       "Y_fake": model.discriminator(H_hat), "Y_fake_e": model.discriminator(E_hat)}
        out.update({f"sample/{when}/{k}": v.numpy() for k, v in outputs.items()})
        # E_loss0 is fetched by the authors from E0_solver's graph and D_loss from D_solver's: one value each
        return out

    probe("init")

    # their draws, in the order our training loop asks for them
    it = c["iterations"]
    batch_idx = iter(torch.as_tensor(fixture["input/batch_idx"]))
    Z_joint = iter(torch.as_tensor(fixture["input/Z_joint"], dtype=torch.float32))
    phases = ["embedding"] * it + ["supervised"] * it + ["joint"] * (3 * it)

    class Replay:
        def __init__(self, X_, batch_size, generator):
            self.X = X_

        def __call__(self, noise: bool = True):
            return self.X[next(batch_idx)], (next(Z_joint) if noise else None)

    recorded: dict = {}

    def record(key, fn, pick):
        def wrapped(*args, **kwargs):
            value = fn(*args, **kwargs)
            for name, v in pick(value).items():
                recorded.setdefault(f"loss/{key}/{name}", []).append(v)
            return value
        return wrapped

    patches = {"_Batches": Replay,
               "embedding_step": record("embedding/E0_solver", ours.embedding_step, lambda v: {"E_loss_T0": v}),
               "supervised_step": record("supervised/GS_solver", ours.supervised_step, lambda v: {"G_loss_S": v}),
               "generator_step": record("joint/G_solver", ours.generator_step, lambda v: {
                   "G_loss_U": v["g_loss_u"], "G_loss_S": v["g_loss_s"], "G_loss_V": v["g_loss_v"]}),
               "embedder_step": record("joint/E_solver", ours.embedder_step, lambda v: {"E_loss_T0": v}),
               "discriminator_step": record("joint", ours.discriminator_step, lambda v: {
                   "check_D_loss": v[0], "d_stepped": float(v[1]), **({"D_solver/D_loss": v[0]} if v[1] else {})})}
    saved = {name: getattr(ours, name) for name in patches}
    try:
        for name, value in patches.items():
            setattr(ours, name, value)
        gen.train(model, X.numpy(), None, SEED, torch.device("cpu"), Checkpoint(None, {}), progress=False)
    finally:
        for name, value in saved.items():
            setattr(ours, name, value)
    if next(batch_idx, None) is not None or len(phases) != len(fixture["input/batch_idx"]):
        raise RuntimeError("our training loop drew fewer batches than the authors'")
    out.update({k: np.asarray(v, np.float64) for k, v in recorded.items()})
    out.update({"param_after/" + name: (p.T if t else p).detach().numpy().copy() for name, (p, t) in pairs.items()})
    probe("final")
    Z = torch.as_tensor(fixture["input/Z_generation"], dtype=torch.float32)
    out["sample/generated"] = scaler.inverse(gen.decode(model.eval(), Z, torch.device("cpu")))
    return out


# --------------------------------------------------------------------------- the same check at the benchmark's sizes

FULL_SIZE = {"n": 10_000, "seq_len": 24, "dim": 5, "hidden_dim": 24, "num_layer": 3, "batch_size": 128,
             "module": "gru"}


def main(argv=None) -> int:
    """The fixture's check at Sines' sizes (10,000 x 24 x 5, hidden 24, 3 layers, batch 128), `--iterations` per
    phase, no tolerance run: how closely ours follows the authors' code there, step by step.

        .venv/bin/python -c "import numpy as np; from tardiff import benchmark_data as b; np.save('sines.npy', b.sines())"
        .venv-tf/bin/python -m experiments.authors_equivalence.timegan authors --repo .authors/timegan \\
            --data sines.npy --iterations 100 --out timegan_full.npz
        .venv/bin/python -m experiments.authors_equivalence.timegan compare timegan_full.npz

    and their own float32 run against the same run in float64 (their float noise, grown over the same steps):

        .venv-tf/bin/python -m experiments.authors_equivalence.timegan authors ... --float64-from timegan_full.npz \\
            --out timegan_full_f64.npz
        .venv/bin/python -m experiments.authors_equivalence.timegan compare timegan_full.npz \\
            --against timegan_full_f64.npz
    """
    import argparse
    import json

    parser = argparse.ArgumentParser(description=main.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    authors = sub.add_parser("authors")
    authors.add_argument("--repo", required=True)
    authors.add_argument("--data", required=True, help="an (N, T, F) .npy, e.g. tardiff.benchmark_data.sines()")
    authors.add_argument("--iterations", type=int, default=100)
    authors.add_argument("--out", required=True)
    authors.add_argument("--float64-from", default=None,
                         help="a float32 run's .npz: rerun their code in float64 from its initial weights (same draws)")
    check = sub.add_parser("compare")
    check.add_argument("path")
    check.add_argument("--against", default=None, help="another authors' run (.npz) to compare with, instead of ours")
    args = parser.parse_args(argv)
    if args.command == "authors":
        data = np.load(args.data)
        config = {**FULL_SIZE, "n": len(data), "seq_len": data.shape[1], "dim": data.shape[2],
                  "iterations": args.iterations}
        preset = None
        if args.float64_from:
            with np.load(args.float64_from) as blob:
                preset = {k[len("weights/"):]: blob[k] for k in blob.files if k.startswith("weights/")}
        arrays, _, _, _ = _authors_arrays(Path(args.repo).resolve(), config, data,
                                          "float64" if preset else "float32", preset)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(args.out, config=json.dumps(config), **arrays)
        return 0
    with np.load(args.path) as blob:
        fixture = {k: blob[k] for k in blob.files}
    config = json.loads(str(fixture.pop("config")))
    if args.against:
        with np.load(args.against) as blob:
            ours = {k[len("authors/"):]: blob[k] for k in blob.files if k.startswith("authors/")}
    else:
        ours = run_ours(fixture, config)
    groups: dict = {}
    for key in sorted(k[len("authors/"):] for k in fixture if k.startswith("authors/")):
        a, o = np.asarray(fixture["authors/" + key], np.float64), np.asarray(ours[key], np.float64)
        rel = float(np.max(np.abs(a - o)) / max(np.max(np.abs(a)), 1e-30))
        group = _group(key)
        if rel >= groups.get(group, (-1.0, ""))[0]:
            groups[group] = (rel, key)
    print(f"config {config}")
    print("| prefix | largest relative difference | where |\n|---|---|---|")
    for group, (rel, key) in sorted(groups.items()):
        print(f"| {group} | {rel:.2g} | {key} |")
    print("per step, the largest relative difference of a fetched loss (each loss's own scale):")
    for key in sorted(k[len("authors/"):] for k in fixture if k.startswith("authors/loss/") and
                      fixture[k].ndim == 1 and "d_stepped" not in k):
        a, o = fixture["authors/" + key], np.asarray(ours[key])
        rel = np.abs(a - o) / np.max(np.abs(a))
        marks = sorted({0, len(a) // 10, len(a) // 2, len(a) - 1})
        print(f"  {key}: " + ", ".join(f"step {i + 1}: {rel[i]:.1e}" for i in marks))
    stepped = fixture.get("authors/loss/joint/d_stepped")
    if stepped is not None:
        print(f"discriminator steps: authors {int(stepped.sum())} of {len(stepped)}, other "
              f"{int(np.sum(ours['loss/joint/d_stepped']))}; decisions equal: "
              f"{bool(np.array_equal(stepped, ours['loss/joint/d_stepped']))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
