"""The steps the notebooks run, one function each; steps talk only through files under `outputs/`.

    extract  -> outputs/data/*.npz                      (01)
    classify -> outputs/models/classifier_<task>.pt      (02)
    diffuse  -> outputs/models/ddpm.pt, cfg_<task>.pt    (03)
    sample   -> outputs/synthetic/<task>/<method>.npz    (04)
    evaluate -> outputs/tables/*.csv, figures/*.png      (05)
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from tardiff import stays
from tardiff.config import Profile
from tardiff.utils import get_device, seed_everything, sha256_file, write_manifest

log = logging.getLogger(__name__)
LABEL_KEYS = {"mortality": "y_mortality", "long_stay": "y_long_stay"}
USER_TASK = "label"


@dataclass
class RealData:
    """Real stays of one task, split: train/val for fitting and selection, test never touched until 05."""

    name: str
    task: str
    X_train: np.ndarray  # (N, T, F) model space
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    channels: tuple
    preprocessor: stays.Preprocessor | None
    dropped: dict

    def summary(self) -> dict:
        return {"dataset": self.name, "task": self.task, "train": len(self.y_train),
                "val": len(self.y_val), "test": len(self.y_test),
                "train_positive_rate": float(self.y_train.mean()), "dropped": self.dropped}


def dataset_files(dataset: str | Path) -> list[Path]:
    """The input files of a dataset: a folder with set-a.npz and set-b.npz, or one `.npz`."""
    dataset = Path(dataset)
    if dataset.is_dir():
        files = [dataset / "set-a.npz", dataset / "set-b.npz"]
        missing = [str(f) for f in files if not f.exists()]
        if missing:
            raise FileNotFoundError(f"dataset folder {dataset} lacks {missing}: run notebook 01 "
                                    f"(`python -m tardiff extract --out {dataset}`) first")
        return files
    if not dataset.exists():
        raise FileNotFoundError(f"dataset not found: {dataset} (a folder from `tardiff extract`, "
                                f"a `.npz` from data_preprocess/, or your own `.npz` with X and y)")
    return [dataset]


def tasks_for(dataset: str | Path, requested: tuple) -> tuple:
    """A user's own (X, y) file has one task, `label`; stays files have mortality and long stay."""
    files = dataset_files(dataset)
    if len(files) == 1:
        with np.load(files[0], allow_pickle=False) as data:
            if "X_raw" not in data.files:
                return (USER_TASK,)
    return tuple(requested)


def load_real(dataset: str | Path, task: str, profile: Profile, seed: int = 0) -> RealData:
    files = dataset_files(dataset)
    if len(files) == 2:  # PhysioNet 2012: set-a train/val, set-b test
        a, b = stays.load_stays(files[0]), stays.load_stays(files[1])
        parts = {"train": _rows(a, a["split"] == "train"), "val": _rows(a, a["split"] == "val"),
                 "test": _rows(b, np.ones(len(b["X"]), bool))}
        preprocessor, channels, name = stays.Preprocessor.from_state(a), tuple(a["channels"]), "physionet2012"
    else:
        arrays, preprocessor, channels = _load_single(files[0])
        if "split" not in arrays:
            raise stays.StayFormatError(f"{files[0]}: needs a `split` key with train/val/test rows")
        parts = {s: _rows(arrays, arrays["split"] == s) for s in ("train", "val", "test")}
        name = files[0].stem
    dropped = {}
    out = {}
    for split, arrays in parts.items():
        X, y = arrays["X"], _labels(arrays, task, files[0])
        known = y >= 0
        if (~known).any():
            dropped[f"{split}_unknown_label"] = int((~known).sum())
            log.warning("%s/%s: %d stays without a %s label left out", name, split, (~known).sum(), task)
        X, y = X[known], y[known]
        limit = profile.max_train_stays if split == "train" else profile.max_test_stays if split == "test" else None
        if limit is not None and len(y) > limit:
            keep = np.sort(np.random.default_rng(seed).choice(len(y), size=limit, replace=False))
            X, y = X[keep], y[keep]
            dropped[f"{split}_subsampled_by_profile"] = int(known.sum() - limit)
        out[split] = (X.astype(np.float32), y.astype(np.int64))
        if len(np.unique(y)) < 2:
            raise ValueError(f"{name}: the {split} split has only label {np.unique(y).tolist()} for task "
                             f"{task!r}; both classes are needed")
    return RealData(name, task, *out["train"], *out["val"], *out["test"], channels, preprocessor, dropped)


def _rows(arrays: dict, keep: np.ndarray) -> dict:
    return {k: v[keep] for k, v in arrays.items() if getattr(v, "shape", ())[:1] == keep.shape}


def _labels(arrays: dict, task: str, source: Path) -> np.ndarray:
    key = "y" if task == USER_TASK else LABEL_KEYS.get(task)
    if key is None or key not in arrays:
        raise ValueError(f"{source}: no labels for task {task!r} (have {sorted(arrays)})")
    return np.asarray(arrays[key]).astype(np.int64)


def _load_single(path: Path):
    """A stays `.npz` (data_preprocess/) or a user's own `.npz` with X (N, T, F) and y (N,)."""
    with np.load(path, allow_pickle=False) as data:
        keys = set(data.files)
    if "X_raw" in keys:
        arrays = stays.load_stays(path)
        return arrays, stays.Preprocessor.from_state(arrays) if "prep_mean" in arrays else None, \
            tuple(arrays["channels"])
    with np.load(path, allow_pickle=False) as data:
        if not {"X", "y"} <= keys:
            raise stays.StayFormatError(f"{path}: a user dataset needs arrays `X` (N, T, F) and `y` (N,) "
                                        f"of 0/1 labels; found {sorted(keys)}")
        X, y = np.asarray(data["X"], dtype=np.float32), np.asarray(data["y"])
    if X.ndim != 3:
        raise stays.StayFormatError(f"{path}: X must be (N, T, F), got shape {X.shape}")
    if y.shape != (len(X),):
        raise stays.StayFormatError(f"{path}: y must have shape ({len(X)},), got {y.shape}")
    if not np.isfinite(X).all():
        raise stays.StayFormatError(f"{path}: X has NaN/inf in {int((~np.isfinite(X)).any(axis=(1, 2)).sum())} "
                                    f"samples; impute first (the model needs complete input)")
    if not set(np.unique(y).tolist()) <= {0, 1}:
        raise stays.StayFormatError(f"{path}: y must hold 0/1 labels, found {np.unique(y)[:10].tolist()}")
    # Standardise with the training rows, so models see the same scale as PhysioNet's.
    split = np.full(len(y), "train", dtype="<U5")
    is_test = stays.stratified_split(y, 0.2, seed=0)
    split[is_test] = "test"
    rest = np.flatnonzero(~is_test)
    split[rest[stays.stratified_split(y[rest], 0.125, seed=1)]] = "val"
    mean = X[split == "train"].mean(axis=(0, 1))
    sd = X[split == "train"].std(axis=(0, 1)) + 1e-6
    channels = tuple(f"f{j}" for j in range(X.shape[2]))
    return {"X": (X - mean) / sd, "y": y, "split": split}, None, channels


def describe(sources: dict[str, Path]) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Cohort overview and per-channel table of each source; also returns the stays files loaded.

    A user's own (X, y) file has no physical units or mask: it gets counts and model-space means only.
    """
    overview, per_channel, loaded = [], [], {}
    for name, path in sources.items():
        with np.load(path, allow_pickle=False) as data:
            is_stays = "X_raw" in data.files
        if is_stays:
            loaded[name] = arrays = stays.load_stays(path)
            overview.append(stays.cohort_overview(arrays, name))
            per_channel.append(stays.cohort_summary(arrays, name))
        else:
            arrays, _, channels = _load_single(Path(path))
            X, y = arrays["X"], arrays["y"]
            overview.append({"dataset": name, "stays": len(y), "positive_rate": float(y.mean()),
                             "hours": X.shape[1], "features": X.shape[2]})
            per_channel.append(pd.DataFrame({"dataset": name, "channel": channels,
                                             "mean_negative": X[y == 0].mean(axis=(0, 1)),
                                             "mean_positive": X[y == 1].mean(axis=(0, 1))}))
    return pd.DataFrame(overview), pd.concat(per_channel, ignore_index=True), loaded


# ---- files --------------------------------------------------------------------------------------

def paths(outputs: str | Path) -> dict[str, Path]:
    outputs = Path(outputs)
    return {"data": outputs / "data", "models": outputs / "models", "synthetic": outputs / "synthetic",
            "tables": outputs / "tables", "logs": outputs / "logs"}


def save_synthetic(path: Path, X: np.ndarray, y: np.ndarray, **meta) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, X=np.asarray(X, np.float32), y=np.asarray(y, np.int64))
    write_manifest(path.with_suffix(".json"), config=meta.pop("config", {}), seed=meta.pop("seed", None),
                   wall_time_s=meta.pop("wall_time_s", None), **meta)
    return path


def load_synthetic(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.exists():
        raise FileNotFoundError(f"synthetic set not found: {path}; run notebook 04 first")
    with np.load(path, allow_pickle=False) as data:
        return data["X"], data["y"]


def checksums(files) -> dict[str, str]:
    return {str(f): sha256_file(f) for f in files}


# ---- steps --------------------------------------------------------------------------------------

def train_guide_classifier(real: RealData, profile: Profile, out_dir: Path, seed: int = 0, device=None,
                           progress: bool = True):
    """f_theta for one task: trained on real train stays, selected on real validation stays."""
    from tardiff.classifier import predict_proba, save_classifier, train_classifier
    from tardiff.evaluate import binary_metrics

    seed_everything(seed)
    start = time.perf_counter()
    model, history = train_classifier(real.X_train, real.y_train, real.X_val, real.y_val,
                                      config=profile.guide_classifier, train=profile.guide_train,
                                      seed=seed, device=device, progress=progress)
    val = binary_metrics(real.y_val, predict_proba(model, real.X_val, device=device))
    path = out_dir / f"classifier_{real.task}.pt"
    save_classifier(model, path, history=history, task=real.task)
    write_manifest(path.with_suffix(".json"), config=profile.guide_classifier, seed=seed,
                   wall_time_s=time.perf_counter() - start, task=real.task, validation=val,
                   train_config=profile.guide_train, history=history, data=real.summary())
    return model, history, val


def train_diffusion_model(X: np.ndarray, y: np.ndarray | None, profile: Profile, path: Path, seed: int = 0,
                          device=None, progress: bool = True):
    """Unconditional DDPM (y=None) or class-conditional for classifier-free guidance; resumes from checkpoints."""
    from dataclasses import replace

    from tardiff.diffusion import save_diffusion, train_diffusion

    unet = profile.unet if y is None else replace(profile.unet, num_classes=2)
    start = time.perf_counter()
    checkpoint_dir = path.parent / f"{path.stem}_{profile.name}_ckpt"
    model, history = train_diffusion(X, y, unet=unet, diffusion=profile.diffusion, train=profile.diffusion_train,
                                     seed=seed, device=device, checkpoint_dir=checkpoint_dir, progress=progress)
    save_diffusion(model, path, unet=unet, history=history)
    write_manifest(path.with_suffix(".json"), config={"unet": unet, "diffusion": profile.diffusion,
                                                      "train": profile.diffusion_train},
                   seed=seed, wall_time_s=time.perf_counter() - start, n_train=len(X),
                   final_loss=float(np.mean(history["loss"][-50:])), loss=history["loss"])
    return model, history


def sample_methods(real: RealData, profile: Profile, models_dir: Path, out_dir: Path, seed: int = 0,
                   device=None, progress: bool = True, methods=("ddpm", "cfg", "classifier_guidance", "tardiff"),
                   sweep: bool = True) -> dict[str, Path]:
    """Every synthetic set of one task, with the real training set's count per label."""
    from tardiff.classifier import load_classifier, predict_proba
    from tardiff.diffusion import GaussianDiffusion, ddim_sample, load_diffusion
    from tardiff.evaluate import pseudo_label
    from tardiff.guidance import classifier_guidance, influence_guidance, target_labels, train_grad

    device = get_device(device)
    classifier = load_classifier(models_dir / f"classifier_{real.task}.pt", device=device)
    ddpm = load_diffusion(models_dir / "ddpm.pt", device=device)
    diffusion = GaussianDiffusion(profile.diffusion)
    y_target = torch.as_tensor(target_labels(real.y_train, seed=seed))
    common = dict(steps=profile.ddim_steps, eta=profile.ddim_eta, batch_size=profile.sample_batch_size,
                  seed=seed, device=device, progress=progress)
    written = {}

    def run(method, model, **kwargs):
        start = time.perf_counter()
        X = ddim_sample(model, diffusion, y_target, **common, **kwargs).numpy()
        y = y_target.numpy()
        if method == "ddpm":  # an unconditional model has no label: f_theta labels it, rank-matched
            y = pseudo_label(predict_proba(classifier, X, device=device), np.bincount(real.y_train, minlength=2))
        path = save_synthetic(out_dir / f"{method}.npz", X, y, seed=seed, wall_time_s=time.perf_counter() - start,
                              config={k: v for k, v in kwargs.items() if not callable(v)}, method=method,
                              task=real.task, ddim_steps=profile.ddim_steps)
        written[method] = path
        return path

    if "ddpm" in methods:
        run("ddpm", ddpm)
    if "cfg" in methods:
        cfg_model = load_diffusion(models_dir / f"cfg_{real.task}.pt", device=device)
        run("cfg", cfg_model, cfg_scale=profile.cfg_scale)
    if "classifier_guidance" in methods:
        run("classifier_guidance", ddpm, guidance=classifier_guidance(classifier),
            guidance_scale=profile.classifier_guidance_scale)
    G = train_grad(classifier, real.X_train, real.y_train, device=device)
    hook = influence_guidance(classifier, G)
    if "tardiff" in methods:
        run("tardiff", ddpm, guidance=hook, guidance_scale=profile.guidance_scale)
    if sweep:
        for scale in profile.sweep_scales:
            name = f"tardiff_scale{scale:g}"
            if "tardiff" in written and scale == profile.guidance_scale:  # the same run: copy, don't resample
                for suffix in (".npz", ".json"):
                    shutil.copyfile(written["tardiff"].with_suffix(suffix), (out_dir / name).with_suffix(suffix))
                written[name] = out_dir / f"{name}.npz"
            else:
                run(name, ddpm, guidance=hook, guidance_scale=scale)
    (out_dir / "index.json").write_text(json.dumps({k: str(v) for k, v in written.items()}, indent=2))
    return written


def load_method_sets(synthetic_dir: Path, methods=("ddpm", "cfg", "classifier_guidance", "tardiff")) -> dict:
    return {method: load_synthetic(synthetic_dir / f"{method}.npz") for method in methods}


def load_sweep_sets(synthetic_dir: Path, scales) -> dict:
    return {scale: load_synthetic(synthetic_dir / f"tardiff_scale{scale:g}.npz") for scale in scales}


def evaluate_task(real: RealData, profile: Profile, synthetic_dir: Path, models_dir: Path, seed: int = 0,
                  device=None) -> dict:
    """TSTR, TSRTR, fidelity, privacy, the guidance-scale sweep and guidance diagnostics of one task."""
    from tardiff import evaluate

    config = evaluate.EvalConfig.from_profile(profile, seed=seed, device=device)
    sets = load_method_sets(synthetic_dir)
    tstr = evaluate.tstr(sets, real, real.task, config)
    # TSRTR's alpha = 0 row is TSTR's `real` row: the same seeds and training set, not trained twice.
    real_row = tstr[tstr["method"] == "real"].assign(alpha=0.0)
    tsrtr = pd.concat([real_row, evaluate.tsrtr(sets, real, real.task, profile.alphas, config,
                                                include_real=False)], ignore_index=True)
    fidelity = evaluate.fidelity_table(sets, real.X_train, real.X_test, channels=real.channels).assign(task=real.task)
    privacy = evaluate.privacy_table(sets, real.X_train, real.X_val, seed=seed, device=device).assign(task=real.task)
    sweep_sets = load_sweep_sets(synthetic_dir, profile.sweep_scales)
    sweep = evaluate.guidance_sweep(sweep_sets, real, real.task, config)
    named_sweep = {f"tardiff_scale{scale:g}": xy for scale, xy in sweep_sets.items()}
    diagnostics = guidance_diagnostics(real, {**sets, **named_sweep}, models_dir, device=device)
    return {"tstr": tstr, "tsrtr": tsrtr[tstr.columns.tolist()[:7] + ["alpha"] + tstr.columns.tolist()[7:]],
            "fidelity": fidelity, "privacy": privacy, "sweep": sweep, "diagnostics": diagnostics}


def guidance_diagnostics(real: RealData, sets: dict, models_dir: Path, device=None) -> pd.DataFrame:
    """Does guidance do what it optimises? Per synthetic set: f_theta's AUROC against the target labels
    (does the guiding classifier agree with them?) and the mean influence score cos(g_i, G)."""
    from tardiff.classifier import load_classifier
    from tardiff.guidance import train_grad

    device = get_device(device)
    classifier = load_classifier(models_dir / f"classifier_{real.task}.pt", device=device)
    G = train_grad(classifier, real.X_train, real.y_train, device=device)
    sets = {"real (train)": (real.X_train, real.y_train), **sets}
    return pd.DataFrame([{"task": real.task, "method": method, **_diagnose(classifier, G, X, y)}
                         for method, (X, y) in sets.items()])


def _diagnose(classifier, G, X: np.ndarray, y: np.ndarray, batch_size: int = 512) -> dict:
    from tardiff.classifier import predict_proba
    from tardiff.evaluate import auroc
    from tardiff.guidance import influence_scores

    device = next(classifier.parameters()).device
    scores = torch.cat([influence_scores(classifier, G, torch.as_tensor(X[i:i + batch_size], device=device),
                                         torch.as_tensor(y[i:i + batch_size], device=device)).cpu()
                        for i in range(0, len(y), batch_size)]).numpy()
    return {"f_theta_auroc_vs_labels": auroc(y, predict_proba(classifier, X, device=device)),
            "influence_score_mean": float(scores.mean()),
            "influence_score_label1": float(scores[y == 1].mean()),
            "influence_score_label0": float(scores[y == 0].mean())}


def write_results(results: dict[str, dict], tables_dir: Path) -> dict[str, pd.DataFrame]:
    """Stack the per-task frames and write outputs/tables/{tstr,tsrtr,fidelity,privacy,sweep,diagnostics}.{csv,md}."""
    from tardiff import evaluate

    stacked = {name: pd.concat([r[name] for r in results.values()], ignore_index=True)
               for name in ("tstr", "tsrtr", "fidelity", "privacy", "sweep", "diagnostics")}
    for name, frame in stacked.items():
        evaluate.write_tables(frame[["task"] + [c for c in frame.columns if c != "task"]], tables_dir, name)
    return stacked


def plot_task(real: RealData, synthetic_dir: Path, result: dict, figures_dir: Path, seed: int = 0) -> None:
    """Every per-task figure of the paper companion."""
    from tardiff import plots

    sets = load_method_sets(synthetic_dir)
    figures_dir = Path(figures_dir)
    plots.pca(real.X_train, sets, figures_dir / f"pca_{real.task}.png", seed=seed, title=real.task)
    plots.marginals(real.X_train, sets, real.channels, figures_dir / f"marginals_{real.task}.png",
                    preprocessor=real.preprocessor, title=real.task)
    plots.tsrtr_curves(result["tsrtr"], figures_dir / f"tsrtr_{real.task}.png", title=real.task)
    plots.guidance_sweep(result["sweep"], figures_dir / f"guidance_sweep_{real.task}.png", title=real.task)
