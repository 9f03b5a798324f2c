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
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from tardiff import (artifacts, augment, evaluate, fidelity, field_metrics, guidance, methods, metrics, paper,
                     references, stays)
from tardiff.generators import GENERATORS
from tardiff.classifier import (ClassifierConfig, load_classifier, predict_proba, save_classifier,
                                train_classifier)
from tardiff.config import Profile
from tardiff.diffusion import save_diffusion, train_diffusion
from tardiff.metrics import auroc, binary_metrics
from tardiff.real_data import RealData
from tardiff.sampler import Sampler
from tardiff.utils import get_device, json_digest, seed_everything, write_manifest

log = logging.getLogger(__name__)
# ---- files --------------------------------------------------------------------------------------

def paths(outputs: str | Path) -> dict[str, Path]:
    outputs = Path(outputs)
    return {"data": outputs / "data", "models": outputs / "models", "synthetic": outputs / "synthetic",
            "tables": outputs / "tables", "logs": outputs / "logs"}


def save_synthetic(path: Path, X: np.ndarray, y: np.ndarray, **meta) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez_compressed(tmp, X=np.asarray(X, np.float32), y=np.asarray(y, np.int64))
    tmp.replace(path)  # atomic: an interrupted run leaves the previous set intact
    write_manifest(path.with_suffix(".json"), config=meta.pop("config", {}), seed=meta.pop("seed", None),
                   wall_time_s=meta.pop("wall_time_s", None), **meta)
    return path


def load_synthetic(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.exists():
        raise FileNotFoundError(f"synthetic set not found: {path}; run notebook 04 first")
    data = stays.read_npz(path, expected="a synthetic set (X, y) written by notebook 04")
    return data["X"], data["y"]


# ---- steps --------------------------------------------------------------------------------------

def train_guide_classifier(real: RealData, profile: Profile, out_dir: Path, seed: int = 0, device=None,
                           progress: bool = True):
    """f_theta for one task: trained on real train stays, selected on real validation stays."""
    seed_everything(seed)
    start = time.perf_counter()
    model, history = train_classifier(real.X_train, real.y_train, real.X_val, real.y_val,
                                      config=profile.guide_classifier, train=profile.guide_train,
                                      seed=seed, device=device, progress=progress)
    val = binary_metrics(real.y_val, predict_proba(model, real.X_val, device=device))
    path = artifacts.classifier(out_dir, real.task)
    save_classifier(model, path, history=history, task=real.task)
    write_manifest(path.with_suffix(".json"), config=profile.guide_classifier, seed=seed,
                   wall_time_s=time.perf_counter() - start, task=real.task, validation=val,
                   train_config=profile.guide_train, history=history, data=real.summary())
    return model, history, val


def train_diffusion_model(X: np.ndarray, y: np.ndarray | None, profile: Profile, path: Path, seed: int = 0,
                          device=None, progress: bool = True):
    """Unconditional DDPM (y=None) or class-conditional for classifier-free guidance; resumes from checkpoints."""
    unet = profile.unet if y is None else replace(profile.unet, num_classes=2)
    start = time.perf_counter()
    checkpoint_dir = artifacts.checkpoints(path, profile.name)
    model, history = train_diffusion(X, y, unet=unet, diffusion=profile.diffusion, train=profile.diffusion_train,
                                     seed=seed, device=device, checkpoint_dir=checkpoint_dir, progress=progress)
    save_diffusion(model, path, unet=unet, history=history)
    write_manifest(path.with_suffix(".json"), config={"unet": unet, "diffusion": profile.diffusion,
                                                      "train": profile.diffusion_train},
                   seed=seed, wall_time_s=time.perf_counter() - start, n_train=len(X),
                   final_loss=float(np.mean(history["loss"][-50:])), loss=history["loss"],
                   torch_threads=torch.get_num_threads())
    return model, history


def fit_generator(name: str, X: np.ndarray, y: np.ndarray | None, profile: Profile, folder: Path, seed: int = 0,
                  device=None, progress: bool = True) -> dict:
    """A baseline generator with the profile's settings for it, saved to `folder` (resumes from its checkpoints)."""
    from tardiff.generators import get_generator

    gen = get_generator(name, getattr(profile.generators, name))
    # checkpoints of other settings (another profile, a --set) stay apart instead of being refused
    label_budget = profile.generator_label_budget
    settings = json_digest(gen.config if label_budget == "each" else [gen.config, label_budget])[:12]
    gen.fit(X, y, seed=seed, device=device, checkpoint_dir=Path(folder) / f"checkpoints_{settings}",
            progress=progress, label_budget=label_budget)
    gen.save(folder)
    return {"wall_time_s": gen.info["fit_wall_time_s"],
            "steps": sum(part.history.get("steps", 0) for part in gen.parts.values())}


def train_generative_models(jobs: dict[Path, tuple], profile: Profile, seed: int = 0, device=None,
                            progress: bool = True, parallel: bool = True) -> dict[Path, dict]:
    """Independent generative models, {path: (kind, X, y or None)} -> {path: training history}; kind is
    "diffusion" (a DDPM, class-conditional when y is given) or a baseline generator's name (a folder).

    On a CPU (and with `parallel`) each trains in its own one-thread process, at most cores + 1 at once, in
    the order given (put the longest first): a small model's step gains little from a second thread, so
    one-thread processes side by side finish sooner than one model after another (benchmarks/bench_training.py
    measures by how much), and the weights no longer depend on how many cores the machine has (a single model trains here, at one thread too). On a GPU, or with
    parallel=False, they train one after another in this process with its threads. Each resumes from its
    own checkpoints either way.
    """
    device = get_device(device)
    jobs = {Path(path): (kind, np.asarray(X), None if y is None else np.asarray(y))
            for path, (kind, X, y) in jobs.items()}
    if not parallel or device.type != "cpu":
        return {path: _train_one(kind, X, y, profile, path, seed, device, progress)
                for path, (kind, X, y) in jobs.items()}
    if len(jobs) == 1:
        threads = torch.get_num_threads()
        try:
            return {path: _train_one_thread(kind, X, y, profile, path, seed, progress)
                    for path, (kind, X, y) in jobs.items()}
        finally:
            torch.set_num_threads(threads)
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    histories = {}
    workers = min(len(jobs), (os.cpu_count() or 1) + 1)
    bar = tqdm(total=len(jobs), desc=f"generative models ({workers} one-thread processes)", disable=not progress)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_train_one_thread, *job, profile, path, seed): path for path, job in jobs.items()}
        for future in as_completed(futures):
            path = futures[future]
            try:
                histories[path] = future.result()
            except BrokenProcessPool as error:
                raise RuntimeError(f"the process training {path} died (out of memory?); rerun to resume from its "
                                   "checkpoints, or pass parallel=False") from error
            log.info("%s: %.0f s", path.name, histories[path]["wall_time_s"])
            bar.update(1)
    bar.close()
    return {path: histories[path] for path in jobs}


def training_summary(histories: dict[Path, dict]) -> pd.DataFrame:
    """One row per trained model: its file or folder, wall time and optimisation steps."""
    return pd.DataFrame([{"model": path.name, "wall_time_s": round(h.get("wall_time_s", np.nan), 1),
                          "steps": h.get("steps", len(h.get("loss", ())))} for path, h in histories.items()])


def _train_one(kind, X, y, profile: Profile, path: Path, seed: int, device, progress: bool) -> dict:
    if kind == "diffusion":
        return train_diffusion_model(X, y, profile, path, seed=seed, device=device, progress=progress)[1]
    return fit_generator(kind, X, y, profile, path, seed=seed, device=device, progress=progress)


def _train_one_thread(kind, X, y, profile: Profile, path: Path, seed: int, progress: bool = False) -> dict:
    torch.set_num_threads(1)
    return _train_one(kind, X, y, profile, path, seed, "cpu", progress)


def build_references(real: RealData, profile: Profile, models_dir: Path, seed: int = 0, device=None,
                     progress: bool = True) -> dict:
    """Cross-fit influence references of one task -> outputs/models/influence_<task>.pt (tardiff.references)."""
    return references.build_references(real, profile, artifacts.influence(models_dir, real.task), seed=seed,
                                       device=device, progress=progress)


def batch_methods(profile: Profile) -> list[str]:
    """The registered methods the batch runs: every one but the baseline generators left out of
    `profile.batch_generators` (the profile refuses names that are not generators)."""
    return [name for name in methods.methods()
            if methods.REGISTRY[name].backbone not in GENERATORS or name in profile.batch_generators]


def sample_methods(real: RealData, profile: Profile, models_dir: Path, out_dir: Path, seed: int = 0,
                   device=None, progress: bool = True, names=None) -> dict[str, Path]:
    """Every method's synthetic set of one task (`batch_methods`; the real training set's count per label)."""
    sampler = Sampler(real.X_train, real.y_train, real.task, profile, models_dir, seed=seed, device=device,
                      progress=progress)
    written = {}
    for name, X, y, info, seconds in _draws(sampler, names or batch_methods(profile)):
        written[name] = save_synthetic(out_dir / f"{name}.npz", X, y, config=info, seed=seed, wall_time_s=seconds,
                                       method=name, task=real.task, ddim_steps=profile.sampling.ddim_steps)
        log.info("%s/%s: %d stays in %.0f s", real.task, name, len(y), seconds)
    (out_dir / "index.json").write_text(json.dumps({k: str(v) for k, v in written.items()}, indent=2))
    return written


def _draws(sampler: Sampler, names):
    """(name, X, y, info, seconds) of each named method, drawn one after another."""
    for name in names:
        start = time.perf_counter()
        X, y, info = sampler.sample(name)
        yield name, X, y, info, time.perf_counter() - start


def pool_path(synthetic_dir: Path, name: str) -> Path:
    """Where notebook 04 writes a method's extra stays for augmentation."""
    return Path(synthetic_dir) / "pool" / f"{name}.npz"


def pooled_in_sampling(profile: Profile) -> list[str]:
    """The augmentation sources notebook 04 draws extra stays for: every one the batch samples but the
    validation pick, which notebook 05 draws once it is known (`fit_augmented`)."""
    run = set(batch_methods(profile))
    return [name for name in profile.augment_sources if name in run] if profile.augment_pool else []


def pool_sampler(real: RealData, profile: Profile, models_dir: Path, seed: int = 0, device=None,
                 progress: bool = True) -> Sampler:
    """The sampler of augmentation's extra stays: `augment_pool` times the real training count per label, drawn
    with seed + 1 (a method's TSTR set is draw `seed`), so the pool adds new stays."""
    counts = np.bincount(real.y_train, minlength=2) * profile.augment_pool
    return Sampler(real.X_train, real.y_train, real.task, profile, models_dir, seed=seed + 1, device=device,
                   progress=progress, n={0: int(counts[0]), 1: int(counts[1])})


def sample_pools(real: RealData, profile: Profile, models_dir: Path, synthetic_dir: Path, names, seed: int = 0,
                 device=None, progress: bool = True) -> dict[str, Path]:
    """Notebook 04: each named method's extra stays for augmentation (`pool_sampler`), written to `pool_path`."""
    sampler = pool_sampler(real, profile, models_dir, seed=seed, device=device, progress=progress)
    return {name: save_synthetic(pool_path(synthetic_dir, name), X, y, config=info, seed=seed + 1,
                                 wall_time_s=seconds, method=name, task=real.task, purpose="augmentation pool")
            for name, X, y, info, seconds in _draws(sampler, names)}


def backbone_preview(real: RealData, profile: Profile, models_dir: Path, n_per_label: int = 8, seed: int = 0,
                     device=None) -> tuple[np.ndarray, np.ndarray]:
    """A few unguided draws of the class-conditional model per label (notebook 03's look at generated stays)."""
    y = np.repeat([0, 1], n_per_label)
    sampler = Sampler(real.X_train, real.y_train, real.task, profile, models_dir, seed=seed, device=device,
                      progress=False)
    return sampler.draw("cond", y, seed), y


def guidance_sanity(real: RealData, profile: Profile, models_dir: Path, method: str = "tardiff_dot", n: int = 256,
                    seed: int = 0, device=None) -> pd.DataFrame:
    """What guidance does to one batch: the same noise and labels drawn by the backbone (`cfg`) and by
    `method`; per draw f_theta's AUROC against the labels, the mean influence on the guidance folds, and the
    RMS shift from the backbone's stays (model-space sd)."""
    sampler = Sampler(real.X_train, real.y_train, real.task, profile, models_dir, seed=seed, device=device,
                      progress=False, n=n)
    pairs = references.reference_pairs(sampler.references, "guide", sampler.device)
    X0, y0, _ = sampler.sample("cfg")
    rows = []
    for name in ("cfg", method):
        X, y = (X0, y0) if name == "cfg" else sampler.sample(name)[:2]
        rows.append({"draw": name, "f_theta_auroc_vs_labels": auroc(y, predict_proba(sampler.classifier, X)),
                     "influence_mean": float(guidance.pair_scores(pairs, X, y, "dot").mean()),
                     "rms_shift_from_cfg": float(np.sqrt(((X - X0) ** 2).mean()))})
    return pd.DataFrame(rows)


def load_method_sets(synthetic_dir: Path, names=None) -> dict:
    return {name: load_synthetic(synthetic_dir / f"{name}.npz") for name in names or methods.methods()}


# ---- evaluation: select on validation, then read the test set once ---------------------------------

@dataclass
class Fitted:
    """One task's synthetic sets and the downstream models trained on each (GRU), kept for scoring."""
    real: RealData
    sets: dict
    config: object            # evaluate.EvalConfig
    models: dict              # {"real" | method: [model per seed]}


def fit_all(real: RealData, profile: Profile, synthetic_dir: Path, seed: int = 0, device=None,
            progress: bool = True) -> Fitted:
    """Downstream models (n_seeds each) on the real training set and on every synthetic set."""
    config = evaluate.EvalConfig.from_profile(profile, seed=seed, device=device)
    sets = load_method_sets(synthetic_dir, batch_methods(profile))
    models = evaluate.fit_sets({"real": (real.X_train, real.y_train), **sets}, real, replace(config, progress=progress))
    return Fitted(real, sets, config, models)


def selection_table(fitted: Fitted) -> pd.DataFrame:
    """Validation (set-a) TSTR of every TarDiff candidate; `selected` marks the one reported as `tardiff`.

    Criterion: validation AUROC + AUPRC, mean over seeds. The test set plays no part.
    """
    rows = []
    for name in ["real", *fitted.sets]:
        method = methods.REGISTRY.get(name)
        probas = evaluate.predict_seeds(fitted.models[name], fitted.real.X_val, fitted.config)
        per_seed = np.array([(metrics.auroc(fitted.real.y_val, p), metrics.auprc(fitted.real.y_val, p))
                             for p in probas])
        rows.append({"task": fitted.real.task, "method": name, "role": method.role if method else "real",
                     "val_auroc_mean": per_seed[:, 0].mean(), "val_auroc_sd": per_seed[:, 0].std(ddof=1),
                     "val_auprc_mean": per_seed[:, 1].mean(), "val_auprc_sd": per_seed[:, 1].std(ddof=1)})
    frame = pd.DataFrame(rows)
    criterion = frame["val_auroc_mean"] + frame["val_auprc_mean"]
    candidates = frame["role"] == "candidate"
    frame["criterion"] = criterion
    frame["selected"] = False
    frame.loc[criterion[candidates].idxmax(), "selected"] = True
    return frame


def selected_method(selection: pd.DataFrame, task: str) -> str:
    chosen = selection[(selection["task"] == task) & selection["selected"]]["method"]
    if len(chosen) != 1:
        raise ValueError(f"selection has {len(chosen)} selected candidates for task {task!r}; run the selection first")
    return str(chosen.iloc[0])


def with_selected(by_name, chosen: str):
    """`by_name` ({method: set, models or probabilities}, or a frame with a `method` column) with the
    validation-selected candidate `chosen` also under the name it is reported by, `methods.SELECTED`, first:
    the same object, never a copy or a refit. Every table and figure gets that alias from here."""
    if isinstance(by_name, pd.DataFrame):
        return pd.concat([by_name[by_name["method"] == chosen].assign(method=methods.SELECTED), by_name],
                         ignore_index=True)
    return {methods.SELECTED: by_name[chosen], **by_name}


def reported(fitted: Fitted, selection: pd.DataFrame) -> Fitted:
    """`fitted`'s sets and models as the tables report them: the selected candidate also as `methods.SELECTED`."""
    chosen = selected_method(selection, fitted.real.task)
    return replace(fitted, sets=with_selected(fitted.sets, chosen), models=with_selected(fitted.models, chosen))


def tstr_tables(fitted: Fitted, selection: pd.DataFrame, profile: Profile, seed: int = 0,
                progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """TSTR on the test set (`evaluate.tstr_scores`) with the GRU models the selection was made with (reused)
    and with a 1D CNN downstream fitted here, and each method's seed-paired differences against its
    comparisons (`methods.comparisons`) for both: (tstr, paired)."""
    real, task = fitted.real, fitted.real.task
    chosen = selected_method(selection, task)
    shown = reported(fitted, selection)
    cnn = replace(downstream_config(fitted.config, profile, "cnn"), progress=progress)
    cnn_models = evaluate.fit_sets({"real": (real.X_train, real.y_train), **fitted.sets}, real, cnn)
    first = ("ddpm", "cfg", "classifier_guidance", *GENERATORS)
    order = ["real", *[m for m in first if m in fitted.sets], methods.SELECTED,
             *[m for m in fitted.sets if m not in first]]
    tstr, paired = [], []
    for arch, config, models in (("gru", fitted.config, shown.models),
                                 ("cnn", cnn, with_selected(cnn_models, chosen))):
        rows, probas = evaluate.tstr_scores({name: models[name] for name in order}, real, task, config)
        tstr.append(rows.assign(downstream=arch, role=[_role(name) for name in order],
                                selected_from=[chosen if name == methods.SELECTED else "" for name in order],
                                n_synthetic=[0 if name == "real" else len(shown.sets[name][1]) for name in order],
                                n_test=len(real.y_test)))
        for name in order:
            for base in methods.comparisons(name) if name != "real" else ():
                diff = metrics.paired_difference(real.y_test, probas[name], probas[base], n_boot=profile.bootstrap,
                                                 level=profile.ci_level, seed=seed)
                paired += [{"task": task, "method": name, "baseline": base, "metric": metric, "diff": d,
                            "ci_low": lo, "ci_high": hi, "downstream": arch} for metric, (d, lo, hi) in diff.items()]
    return pd.concat(tstr, ignore_index=True), pd.DataFrame(paired)


def downstream_config(gru: evaluate.EvalConfig, profile: Profile, arch: str) -> evaluate.EvalConfig:
    """The downstream protocol of `arch`: "gru" (the profile's, `gru`) or "cnn" (a 1D CNN unlike f_theta, of
    the same width and dropout)."""
    if arch == "gru":
        return gru
    if arch != "cnn":
        raise ValueError(f"unknown downstream architecture {arch!r}; 'gru' or 'cnn'")
    return replace(gru, classifier=ClassifierConfig(rnn="cnn", hidden=profile.eval_classifier.hidden,
                                                    dropout=profile.eval_classifier.dropout))


def _role(name: str) -> str:
    return "real" if name == "real" else "selected" if name == methods.SELECTED else methods.REGISTRY[name].role


def test_tables(fitted: Fitted, selection: pd.DataFrame, augmented: Augmented, augment_choice: pd.DataFrame,
                profile: Profile, models_dir: Path, seed: int = 0, device=None,
                progress: bool = True) -> dict[str, pd.DataFrame]:
    """Everything read off the test set for one task, once, after both selections are written: TSTR (GRU and a
    1D CNN downstream), paired differences against each method's baseline, augmentation (TSRTR and its paired
    gains over real only), fidelity, privacy and guidance diagnostics."""
    real, task = fitted.real, fitted.real.task
    chosen = selected_method(selection, task)
    sets = reported(fitted, selection).sets
    tstr, paired = tstr_tables(fitted, selection, profile, seed=seed, progress=progress)
    tsrtr_paired, tsrtr = augment_tables(augmented, augment_choice, profile, seed=seed)
    fid_config = fidelity.FidelityConfig.from_profile(profile, seed=seed, device=device)
    fidelity_rows = fidelity.fidelity_table(fitted.sets, real.X_train, real.X_test, config=fid_config,
                                            channels=real.channels, n_seeds=profile.fidelity_seeds)
    fidelity_rows = with_selected(fidelity_rows, chosen).assign(task=task)
    privacy = with_selected(fidelity.privacy_table(fitted.sets, real.X_train, real.X_val, seed=seed, device=device),
                            chosen).assign(task=task)
    diagnostics = guidance_diagnostics(real, sets, models_dir, device=device)
    field = field_fidelity(real, {name: sets[name] for name in (*paper.PAPER_ROWS, *paper.EXTRA_ROWS)
                                  if name in sets}, profile, seed=seed, device=device).assign(task=task)
    return {"tstr": tstr, "tsrtr": tsrtr, "tsrtr_paired": tsrtr_paired, "paired": paired,
            "fidelity": fidelity_rows, "privacy": privacy,
            "diagnostics": diagnostics, "ablation": ablation_table(tstr, paired, diagnostics, fidelity_rows),
            "field_fidelity": field}


# ---- augmentation: real + synthetic, paired against real only, chosen on validation ---------------------

@dataclass
class Augmented:
    """One task's augmentation settings and the downstream models of each (per architecture, per seed), kept
    for scoring: validation first (the choice), the test set once the choice is written."""
    real: RealData
    settings: list            # augment.Mix, in registered order
    configs: dict             # {arch: evaluate.EvalConfig}
    models: dict              # {arch: {"real" | setting name: [model per seed]}}


def fit_augmented(fitted: Fitted, selection: pd.DataFrame, profile: Profile, models_dir: Path, synthetic_dir: Path,
                  seed: int = 0, device=None, progress: bool = True) -> Augmented:
    """Downstream models on real + synthetic for every registered setting (`augment.grid`), seed s trained on
    seed s's draw and paired with seed s trained on real only. Each source's pool is its TSTR set and the extra
    stays notebook 04 wrote (a missing file is an error, not a smaller pool); the selected candidate's extra
    stays are drawn here, now that it is known, and kept in memory (04's folder stays 04's, and a pick of
    earlier models is never reused). The realism filter's discriminators see the real training split only."""
    real = fitted.real
    chosen = selected_method(selection, real.task)
    sets = reported(fitted, selection).sets
    sources = [name for name in profile.augment_sources if name in sets]
    if len(sources) < len(profile.augment_sources):
        log.warning("%s: augment_sources %s are not in this batch (batch_generators); augmenting with %s",
                    real.task, [n for n in profile.augment_sources if n not in sets], sources)
    pools = {}
    for source in sources:
        X, y = sets[source]
        if profile.augment_pool:
            X_more, y_more = (pool_sampler(real, profile, models_dir, seed=seed, device=device, progress=progress)
                              .sample(chosen)[:2] if source == methods.SELECTED
                              else load_synthetic(pool_path(synthetic_dir, source)))
            X, y = np.concatenate([X, X_more]), np.concatenate([y, y_more])
        pools[source] = (X, y)
    scores = None
    if profile.augment_realism:
        scores = augment.realism_scores(real.X_train, pools, fidelity.FidelityConfig.from_profile(
            profile, seed=seed, device=device), seed=seed)
    settings = augment.grid(sources, profile.augment_alphas, profile.augment_weights, profile.augment_mix_alpha,
                            profile.augment_realism)
    configs, models = {}, {}
    for arch in profile.augment_downstream:
        config = configs[arch] = downstream_config(fitted.config, profile, arch)
        by_name = {"real": fitted.models["real"]} if arch == "gru" else \
            evaluate.fit_sets({"real": (real.X_train, real.y_train)}, real, config)
        for mix in tqdm(settings, desc=f"{real.task}: augmentation ({arch})", disable=not progress):
            train_sets = [augment.training_set(real.X_train, real.y_train, pools, mix, seed=s, realism_scores=scores)
                          for s in config.seeds]
            by_name[mix.name] = evaluate.fit_many(train_sets, real, config, config.seeds)
        models[arch] = by_name
    return Augmented(real, settings, configs, models)


def augment_paired(augmented: Augmented, split: str, n_boot: int, seed: int = 0, archs=None) -> pd.DataFrame:
    """Per setting and downstream architecture (`archs`, default all fitted): the seed-paired AUROC/AUPRC
    difference against real only on `split` ("val" or "test") with its bootstrap CI over stays, beside the
    setting's own mean ± sd."""
    real = augmented.real
    X, y = (real.X_val, real.y_val) if split == "val" else (real.X_test, real.y_test)
    rows = []
    for arch in archs or augmented.models:
        by_name = augmented.models[arch]
        config = augmented.configs[arch]
        baseline = evaluate.predict_seeds(by_name["real"], X, config)
        for mix in augmented.settings:
            probas = evaluate.predict_seeds(by_name[mix.name], X, config)
            own = evaluate.utility(y, probas, config)
            for metric, (d, lo, hi) in metrics.paired_difference(y, probas, baseline, n_boot=n_boot, level=config.ci_level,
                                                                 seed=seed).items():
                rows.append({"task": real.task, "setting": mix.name, "source": mix.source, "alpha": mix.alpha,
                             "weight": mix.weight, "balance": mix.balance, "realism": mix.realism,
                             "downstream": arch, "split": split, "metric": metric, "diff": d, "ci_low": lo,
                             "ci_high": hi, "mean": own[f"{metric}_mean"], "sd": own[f"{metric}_sd"],
                             "n_synthetic": int(round(mix.alpha * len(real.y_train)))})
    return pd.DataFrame(rows)


def augment_selection(augmented: Augmented, profile: Profile, seed: int = 0) -> pd.DataFrame:
    """Validation (set-a) paired gains of every setting with the GRU downstream; `selected` marks the one
    reported as `augment` (criterion: the paired AUROC + AUPRC gain over real only). The test set plays no part."""
    if "gru" not in augmented.models:
        raise ValueError("the augmentation setting is chosen with the GRU downstream: augment_downstream must "
                         f"include 'gru', got {tuple(augmented.models)}")
    paired = augment_paired(augmented, "val", profile.bootstrap, seed, archs=("gru",))
    gru = paired.pivot_table(index="setting", columns="metric", values="diff", sort=False)
    frame = pd.DataFrame({"task": augmented.real.task, "setting": gru.index, "val_d_auroc": gru["auroc"].to_numpy(),
                          "val_d_auprc": gru["auprc"].to_numpy()})
    frame["criterion"] = frame["val_d_auroc"] + frame["val_d_auprc"]
    frame["selected"] = False
    frame.loc[frame["criterion"].idxmax(), "selected"] = True
    return frame


def augment_tables(augmented: Augmented, selection: pd.DataFrame, profile: Profile, seed: int = 0
                   ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The test set, read once after `augment_selection` is written: (tsrtr_paired, tsrtr). tsrtr_paired has
    every setting and the chosen one again as `augment`; tsrtr is each source's plain setting per alpha
    (GRU, mean ± sd over seeds) with real only at alpha 0, the paper's TSRTR."""
    task = augmented.real.task
    chosen = selection[(selection["task"] == task) & selection["selected"]]["setting"]
    if len(chosen) != 1:
        raise ValueError(f"augment_selection has {len(chosen)} selected settings for task {task!r}")
    paired = augment_paired(augmented, "test", profile.bootstrap, seed)
    pick = paired[paired["setting"] == chosen.iloc[0]].assign(setting=augment.SELECTED, selected_from=chosen.iloc[0])
    paired = pd.concat([pick, paired.assign(selected_from="")], ignore_index=True)
    plain = augment.plain_rows(paired[paired["downstream"] == "gru"])
    wide = plain.pivot_table(index=["source", "alpha"], columns="metric", values=["mean", "sd"], sort=False)
    tsrtr = pd.DataFrame({"task": task, "method": [s for s, _ in wide.index], "alpha": [a for _, a in wide.index],
                          "auroc_mean": wide[("mean", "auroc")].to_numpy(), "auroc_sd": wide[("sd", "auroc")].to_numpy(),
                          "auprc_mean": wide[("mean", "auprc")].to_numpy(), "auprc_sd": wide[("sd", "auprc")].to_numpy()})
    config = augmented.configs["gru"]
    own = evaluate.utility(augmented.real.y_test, evaluate.predict_seeds(augmented.models["gru"]["real"],
                                                                          augmented.real.X_test, config), config)
    real_row = pd.DataFrame([{"task": task, "method": "real", "alpha": 0.0,
                              **{k: own[k] for k in ("auroc_mean", "auroc_sd", "auprc_mean", "auprc_sd")}}])
    return paired, pd.concat([real_row, tsrtr], ignore_index=True)


def field_fidelity(real: RealData, sets: dict, profile: Profile, seed: int = 0, device=None) -> pd.DataFrame:
    """The field's four fidelity metrics (`tardiff.field_metrics`, as TimeGAN / Diffusion-TS compute them) of
    each set against the real test stays, every value mapped to [0, 1] by the real training split's range per
    channel (clipped), mean and 95 % t-interval over the profile's repeats (`field_metrics`). The real training split
    is scored the same way first: the floor a generator can reach with this protocol."""
    low, high = real.X_train.min(axis=(0, 1)), real.X_train.max(axis=(0, 1))

    def unit(X):
        span = np.where(high > low, high - low, 1.0)
        return np.clip((np.asarray(X, np.float32) - low) / span, 0, 1).astype(np.float32)

    reference = unit(real.X_test)
    scaled = {"real (train)": unit(real.X_train), **{name: unit(X) for name, (X, _) in sets.items()}}
    c = profile.field_metrics
    common = {"repeats": c.repeats, "seed": seed, "device": device}
    scores = {"discriminative": field_metrics.discriminative_scores(
                  reference, scaled, iterations=c.discriminative_iterations, **common),
              "predictive": field_metrics.predictive_scores(reference, scaled, iterations=c.predictive_iterations,
                                                            **common),
              "context_fid": field_metrics.context_fids(reference, scaled, fit_on=scaled["real (train)"],
                                                        n_iters=c.ts2vec_iterations, **common),
              "correlational": {name: field_metrics.correlational_scores(reference, X, c.repeats, seed)
                                for name, X in scaled.items()}}
    rows = []
    for name in scaled:
        row = {"method": name}
        for metric, by_set in scores.items():
            summary = field_metrics.Summary.of(by_set[name])
            row[metric], row[f"{metric}_ci"] = summary.mean, summary.half_width
        rows.append(row)
    return pd.DataFrame(rows)


def guidance_diagnostics(real: RealData, sets: dict, models_dir: Path, device=None) -> pd.DataFrame:
    """`evaluate.guidance_diagnostics` with f_theta and the held-out guidance folds of this task's models."""
    device = get_device(device)
    classifier = load_classifier(artifacts.classifier(models_dir, real.task), device=device)
    saved = references.load_references(models_dir, real.task)
    return evaluate.guidance_diagnostics(real, sets, classifier, references.reference_pairs(saved, "guide", device))


def ablation_table(tstr: pd.DataFrame, paired: pd.DataFrame, diagnostics: pd.DataFrame,
                   fidelity: pd.DataFrame) -> pd.DataFrame:
    """One row per method: TSTR (GRU and CNN downstream), the paired AUROC/AUPRC difference against its
    baseline (GRU), f_theta's agreement with the labels and the influence it reached, and the
    discriminative score: utility beside what guidance optimises, so fooling f_theta shows."""
    rows = []
    for name in tstr["method"].unique():
        row = {"task": tstr["task"].iloc[0], "method": name}
        for arch in ("gru", "cnn"):
            t = tstr[(tstr["method"] == name) & (tstr["downstream"] == arch)].iloc[0]
            row[f"{arch}_auroc"], row[f"{arch}_auprc"] = t["auroc_mean"], t["auprc_mean"]
        for metric in ("auroc", "auprc"):
            d = paired[(paired["method"] == name) & (paired["metric"] == metric) & (paired["downstream"] == "gru")] \
                if len(paired) else paired
            row[f"d_{metric}"] = f"{d['diff'].iloc[0]:+.3f} [{d['ci_low'].iloc[0]:+.3f}, {d['ci_high'].iloc[0]:+.3f}]" \
                if len(d) else ""
            row["vs"] = d["baseline"].iloc[0] if len(d) else ""
        diag = diagnostics[diagnostics["method"] == name]
        row["f_theta_agreement"] = float(diag["f_theta_auroc_vs_labels"].iloc[0]) if len(diag) else np.nan
        row["influence_mean"] = float(diag["influence_mean"].iloc[0]) if len(diag) else np.nan
        fid = fidelity[fidelity["method"] == name]
        row["discriminative"] = float(fid["discriminative_score"].iloc[0]) if len(fid) else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


TABLES = ("tstr", "tsrtr", "tsrtr_paired", "paired", "ablation", "fidelity", "privacy", "diagnostics",
          "field_fidelity")


def write_results(results: dict[str, dict], tables_dir: Path) -> dict[str, pd.DataFrame]:
    """Stack the per-task frames and write outputs/tables/<name>.{csv,md}, and the paper's main table with
    its headline margins (paper_table, margins) from the GRU TSTR."""
    stacked = {name: pd.concat([r[name] for r in results.values()], ignore_index=True) for name in TABLES}
    gru = stacked["tstr"][stacked["tstr"]["downstream"] == "gru"]
    table = paper.ours(gru)
    margin_rows = pd.concat([paper.margins(table, of).assign(dataset="PhysioNet 2012 (ours)") for of in
                             (methods.SELECTED, "cfg")] + [paper.paper_margins()], ignore_index=True)
    table.to_csv(tables_dir / "paper_table.csv", index=False)
    _write_text(tables_dir / "paper_table.md", paper.markdown(table))
    evaluate.write_tables(margin_rows, tables_dir, "margins")
    stacked["paper_table"], stacked["margins"] = table, margin_rows
    for name, frame in ((n, stacked[n]) for n in TABLES):
        if name == "tstr":  # the paper's layout, one table per downstream architecture
            for arch in frame["downstream"].unique():
                sub = frame[frame["downstream"] == arch].drop(columns="downstream")
                evaluate.write_tables(sub, tables_dir, "tstr" if arch == "gru" else f"tstr_{arch}")
            frame.to_csv(tables_dir / "tstr_all.csv", index=False)
            continue
        evaluate.write_tables(frame[["task"] + [c for c in frame.columns if c != "task"]], tables_dir, name)
    return stacked


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)  # atomic, as every table


def plot_task(real: RealData, sets: dict, result: dict, figures_dir: Path, seed: int = 0) -> None:
    """Every per-task figure of the paper companion; `sets` as the tables report them (`reported(...).sets`)."""
    from tardiff import plots  # here, not at the top: fitting and sampling (tardiff.api) need no plotting stack
    main = {name: sets[name] for name in ("ddpm", "cfg", "classifier_guidance", methods.SELECTED)}
    figures_dir = Path(figures_dir)
    plots.pca(real.X_train, main, figures_dir / f"pca_{real.task}.png", seed=seed, title=real.task)
    plots.marginals(real.X_train, main, real.channels, figures_dir / f"marginals_{real.task}.png",
                    preprocessor=real.preprocessor, title=real.task)
    plots.tsrtr_curves(result["tsrtr"], figures_dir / f"tsrtr_{real.task}.png", title=real.task)
    plots.augmentation_gain(result["tsrtr_paired"], figures_dir / f"augmentation_{real.task}.png", title=real.task)
    plots.ablation(result["ablation"], figures_dir / f"ablation_{real.task}.png", title=real.task)
    generators = {name: sets[name] for name in (*paper.BASELINES, "cfg", methods.SELECTED) if name in sets}
    plots.embedding_grid(real.X_test, generators, figures_dir / f"embedding_{real.task}.png", seed=seed,
                         title=f"{real.task}: real (set-b) against each generator, t-SNE")


def plot_all(tables: dict[str, pd.DataFrame], figures_dir: Path) -> None:
    """The figures over both tasks: TSTR per generator with its confidence interval."""
    from tardiff import plots
    gru = tables["tstr"][tables["tstr"]["downstream"] == "gru"]
    keep = gru[gru["method"].isin([*paper.PAPER_ROWS, *paper.EXTRA_ROWS])]
    plots.tstr_intervals(keep, Path(figures_dir) / "tstr_by_generator.png",
                         order=[*paper.PAPER_ROWS, *paper.EXTRA_ROWS], labels=paper.LABELS)
