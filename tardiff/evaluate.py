"""Downstream utility of synthetic stays: TSTR / TSRTR, the downstream protocol, paired differences, tables.

Everything takes arrays in model space: X (N, T, F) float32, y (N,) 0/1. A
"method" is just a name mapped to a synthetic set {method: (X_syn, y_syn)}.

Downstream protocol and its noise. The real validation split holds ~55 deaths,
so early stopping on its AUPRC picks a near-random epoch and the seed-to-seed sd
(.03 AUROC) exceeds the effects the tables compare (.01-.02). Here, by default:
(1) model selection monitors validation *loss* (every stay contributes, smooth in
the epoch), (2) every number is over `n_seeds` >= 3 re-trainings (mean ± sd), and
(3) the test predictions of the seeds are averaged and that ensemble gets a
percentile bootstrap CI, whose spread no longer includes the seed lottery.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, ClassVar

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from tardiff import augment, classifier, grouped
from tardiff.classifier import ClassifierConfig, TrainConfig, predict_proba
from tardiff.config import get_profile
from tardiff.guidance import pair_scores
from tardiff.metrics import auprc, auroc, bootstrap_ci
from tardiff.settings import check, count, number, optional
from tardiff.utils import get_device

UTILITY_COLUMNS = ("task", "method", "auroc_mean", "auroc_sd", "auprc_mean", "auprc_sd", "n_seeds")
TSTR_COLUMNS = UTILITY_COLUMNS
TSRTR_COLUMNS = UTILITY_COLUMNS + ("alpha",)

SyntheticSets = dict  # {method: (X_syn (N, T, F), y_syn (N,))}


# --------------------------------------------------------------------------- data handling

def _check_synthetic(method: str, X: np.ndarray, y: np.ndarray, shape_tf: tuple) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(y)
    if X.ndim != 3 or X.shape[1:] != shape_tf:
        raise ValueError(f"synthetic set {method!r} has shape {X.shape}; real stays are (N, {shape_tf[0]}, "
                         f"{shape_tf[1]})")
    if len(X) != len(y):
        raise ValueError(f"synthetic set {method!r}: {len(X)} stays but {len(y)} labels")
    if not set(np.unique(y).tolist()) <= {0, 1}:
        raise ValueError(f"synthetic set {method!r}: labels must be 0/1 (an unconditional set gets them from "
                         f"tardiff.sampler.pseudo_label), found {sorted(set(np.unique(y).tolist()))}")
    if not np.isfinite(X).all():
        raise ValueError(f"synthetic set {method!r} contains NaN/inf values")
    return X, y.astype(np.int64)


# --------------------------------------------------------------------------- downstream protocol

def _default_profile(setting: str):
    """A bare EvalConfig's `setting`: the `default` profile's, so the protocol has one source (tardiff.config)."""
    return field(default_factory=lambda: getattr(get_profile("default"), setting))


@dataclass
class EvalConfig:
    """How the downstream classifier is trained and scored for TSTR / TSRTR: a profile's settings
    (`from_profile`); built bare, the `default` profile's."""

    classifier: ClassifierConfig = _default_profile("eval_classifier")
    train: TrainConfig = _default_profile("eval_train")  # monitor="loss" in every profile: see the module docstring
    n_seeds: int = _default_profile("n_seeds")
    seed: int = 0
    n_boot: int = _default_profile("bootstrap")
    ci_level: float = _default_profile("ci_level")
    device: str | None = None
    progress: bool = False
    grouped: bool = True             # train the seeds (and sets of one size) as one batched group: same models
    max_group: int | None = None     # members per group; None: grouped.default_group_size(device)
    # stand-ins for tardiff.classifier's train_classifier / predict_proba (the tests' fake downstream model)
    train_fn: Callable | None = None
    predict_fn: Callable | None = None

    RANGES: ClassVar[dict] = {"n_seeds": count(), "seed": count(0), "n_boot": count(),
                              "ci_level": number(0, 1, True, True), "max_group": optional(count())}

    def __post_init__(self):
        check(self)

    @property
    def seeds(self) -> list[int]:
        """The downstream seeds: seed, seed + 1, ... (n_seeds of them)."""
        return [self.seed + i for i in range(self.n_seeds)]

    @classmethod
    def from_profile(cls, profile, **overrides) -> "EvalConfig":
        """From a `tardiff.config.Profile` (eval_classifier, eval_train, n_seeds, bootstrap, ci_level)."""
        return replace(cls(classifier=profile.eval_classifier, train=profile.eval_train, n_seeds=profile.n_seeds,
                           n_boot=profile.bootstrap, ci_level=profile.ci_level), **overrides)


def _downstream(makers: list, real, config: EvalConfig) -> list[dict]:
    """Per `make_train_set(seed)` in `makers`: train on it for each seed (all makers' models as one grouped
    fit), select on real validation, score on real test."""
    seeds = config.seeds
    train_sets = [make(seed) for make in makers for seed in seeds]
    models = fit_many(train_sets, real, config, seeds * len(makers))
    rows = []
    for k in range(len(makers)):
        chunk = slice(k * len(seeds), (k + 1) * len(seeds))
        probas = predict_seeds(models[chunk], real.X_test, config)
        rows.append({**utility(real.y_test, probas, config), "n_train": int(np.mean([len(y) for _, y in train_sets[chunk]])),
                     "n_test": len(real.y_test), "n_excluded": real.n_excluded})
    return rows


def fit_many(train_sets: list, real, config: EvalConfig, seeds: list) -> list:
    """One downstream model per (X_train, y_train) or (X_train, y_train, sample_weight) in `train_sets`, seed
    `seeds[i]`, selected on real validation.

    With `config.grouped` (and the default trainer on a 1-layer GRU) they train as batched groups
    (`tardiff.grouped`), which equals training them one by one up to float rounding, in less time. Weights go
    to the trainer as `sample_weight=`, only for the sets that have them (a stand-in train_fn without the
    keyword still trains unweighted sets).
    """
    for i, train_set in enumerate(train_sets):
        if not isinstance(train_set, (tuple, list)) or len(train_set) not in (2, 3):
            raise ValueError(f"train_sets[{i}] must be (X, y) or (X, y, sample_weight)")
    device = get_device(config.device)
    if config.train_fn is None and config.grouped and grouped.supports(config.classifier):
        max_group = config.max_group or grouped.default_group_size(device)
        return [model for model, _ in grouped.train_group(train_sets, real.X_val, real.y_val, config.classifier,
                                                          config.train, seeds, device=device,
                                                          progress=config.progress, max_members=max_group)]
    train_fn = config.train_fn or classifier.train_classifier
    jobs = tqdm(list(zip(train_sets, seeds)), desc="downstream models", disable=not config.progress)
    return [train_fn(train_set[0], train_set[1], real.X_val, real.y_val, config=config.classifier,
                     train=config.train, seed=seed, device=device, progress=False, **_weight_keyword(train_set))[0]
            for train_set, seed in jobs]


def _weight_keyword(train_set) -> dict:
    """{"sample_weight": w} for an (X, y, w) training set, {} for (X, y) or (X, y, None)."""
    return {} if len(train_set) < 3 or train_set[2] is None else {"sample_weight": train_set[2]}


def fit_sets(sets: dict, real, config: EvalConfig) -> dict[str, list]:
    """{name: [model per seed]}: the n_seeds downstream models on each (X_train, y_train) of `sets`, all in one
    `fit_many` (set by set, seed by seed), selected on real validation."""
    seeds = config.seeds
    models = fit_many([xy for xy in sets.values() for _ in seeds], real, config, seeds * len(sets))
    return {name: models[k * len(seeds):(k + 1) * len(seeds)] for k, name in enumerate(sets)}


def fit_downstream(X_train, y_train, real, config: EvalConfig) -> list:
    """The n_seeds downstream models trained on one set (selected on real validation), kept for scoring
    any split later: validation first (selection), test only once the selection is written."""
    return fit_sets({"set": (X_train, y_train)}, real, config)["set"]


def predict_seeds(models: list, X, config: EvalConfig) -> np.ndarray:
    """(n_seeds, N) P(y=1) of each seed's model."""
    predict_fn = config.predict_fn or classifier.predict_proba
    device = get_device(config.device)
    return np.stack([np.asarray(predict_fn(m, X, device=device), dtype=np.float64) for m in models])


def utility(y, probas: np.ndarray, config: EvalConfig) -> dict:
    """Mean ± sd over seeds of AUROC/AUPRC, and the seed ensemble's AUROC/AUPRC with a bootstrap CI."""
    y = np.asarray(y)
    per_seed = np.array([(auroc(y, p), auprc(y, p)) for p in probas])  # (n_seeds, 2)
    ddof = 1 if len(per_seed) > 1 else 0
    ensemble = probas.mean(axis=0)
    ci = bootstrap_ci(y, ensemble, n_boot=config.n_boot, level=config.ci_level, seed=config.seed)
    return {"auroc_mean": per_seed[:, 0].mean(), "auroc_sd": per_seed[:, 0].std(ddof=ddof),
            "auprc_mean": per_seed[:, 1].mean(), "auprc_sd": per_seed[:, 1].std(ddof=ddof),
            "n_seeds": len(probas), "auroc_ensemble": auroc(y, ensemble), "auroc_ci_low": ci["auroc"][0],
            "auroc_ci_high": ci["auroc"][1], "auprc_ensemble": auprc(y, ensemble),
            "auprc_ci_low": ci["auprc"][0], "auprc_ci_high": ci["auprc"][1]}


def tstr_scores(models: dict, real, task: str, config: EvalConfig) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """TSTR of downstream models already fitted per set ({name: [model per seed]}, selected on real validation):
    one row per name in order (task, method, `utility` on real test) and each name's (n_seeds, N_test) test
    probabilities, for paired differences. Names holding the same list of models share one prediction."""
    predicted, probas = {}, {}
    for name, seed_models in models.items():
        if id(seed_models) not in predicted:  # an alias (the selected candidate) is the same models
            predicted[id(seed_models)] = predict_seeds(seed_models, real.X_test, config)
        probas[name] = predicted[id(seed_models)]
    rows = [{"task": task, "method": str(name), **utility(real.y_test, p, config)} for name, p in probas.items()]
    return pd.DataFrame(rows), probas


def tstr(synthetic: SyntheticSets, real, task: str, config: EvalConfig | None = None,
         include_real: bool = True) -> pd.DataFrame:
    """Train on synthetic only, select on real validation, test on real test; plus a `real` (TRTR) row."""
    config = config or EvalConfig()
    if "real" in synthetic:
        raise ValueError("a synthetic set may not be called 'real': that name is the real training set's row")
    sets = {"real": (real.X_train, real.y_train)} if include_real else {}
    for method, (X_syn, y_syn) in synthetic.items():
        sets[str(method)] = _check_synthetic(method, X_syn, y_syn, real.X_train.shape[1:])
    rows, _ = tstr_scores(fit_sets(sets, real, config), real, task, config)
    n_train = [len(sets[name][1]) for name in rows["method"]]
    rows = rows.assign(n_synthetic=[0 if name == "real" else n for name, n in zip(rows["method"], n_train)],
                       n_train=n_train, n_test=len(real.y_test), n_excluded=real.n_excluded)
    return _ordered(rows, TSTR_COLUMNS)


def tsrtr(synthetic: SyntheticSets, real, task: str, alphas=(0.5, 1.0), config: EvalConfig | None = None,
          include_real: bool = True) -> pd.DataFrame:
    """Real train + alpha x synthetic, seed s trained on seed s's draw (`augment.training_set` of the plain
    setting: the synthetic labels at the real prevalence, weight 1, the batch's augmentation path).

    Each seed draws its own subsample, so the sd includes which synthetic stays were picked.
    The `real` row (alpha = 0) trains on real only.
    """
    config = config or EvalConfig()
    n_real = len(real.y_train)
    labels, makers = [], []
    if include_real:
        labels.append({"task": task, "method": "real", "alpha": 0.0, "n_synthetic": 0})
        makers.append(lambda s: (real.X_train, real.y_train))
    for method, (X_syn, y_syn) in synthetic.items():
        pools = {method: _check_synthetic(method, X_syn, y_syn, real.X_train.shape[1:])}
        for alpha in alphas:
            mix = augment.Mix(sources=(method,), alpha=float(alpha))

            def make(seed, pools=pools, mix=mix):
                return augment.training_set(real.X_train, real.y_train, pools, mix, seed)[:2]

            make(0)  # too few synthetic stays fails here, before any training
            labels.append({"task": task, "method": str(method), "alpha": float(alpha),
                           "n_synthetic": int(round(alpha * n_real))})
            makers.append(make)
    rows = _downstream(makers, real, config)
    return _ordered(pd.DataFrame([{**label, **row} for label, row in zip(labels, rows)]), TSRTR_COLUMNS)


def guidance_diagnostics(real, sets: SyntheticSets, classifier, pairs) -> pd.DataFrame:
    """Does guidance do what it optimises? Per set: f_theta's AUROC against the set's labels (does the guiding
    classifier agree with them?) and the mean influence g_iᵀG over the (classifier, G) `pairs` (the held-out
    guidance folds), overall and per label; the real training set first, for reference."""
    rows = []
    for name, (X, y) in {"real (train)": (real.X_train, real.y_train), **sets}.items():
        scores = pair_scores(pairs, X, y, "dot")
        rows.append({"task": real.task, "method": name, "f_theta_auroc_vs_labels": auroc(y, predict_proba(classifier, X)),
                     "influence_mean": float(scores.mean()), "influence_label1": float(scores[y == 1].mean()),
                     "influence_label0": float(scores[y == 0].mean())})
    return pd.DataFrame(rows)


def _ordered(df: pd.DataFrame, first: tuple) -> pd.DataFrame:
    return df[list(first) + [c for c in df.columns if c not in first]]


# --------------------------------------------------------------------------- tables

def _markdown(df: pd.DataFrame) -> str:
    header = "| " + " | ".join(str(c) for c in df.columns) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    lines = [header, rule]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(_cell(v) for v in row.values) + " |")
    return "\n".join(lines) + "\n"


def _cell(value) -> str:
    if isinstance(value, (float, np.floating)):
        return "" if np.isnan(value) else f"{value:.3f}"
    return str(value)


def paper_layout(df: pd.DataFrame) -> pd.DataFrame:
    """Rows = methods (and alpha), columns = task x metric, cells "mean ± sd" as in the paper's tables."""
    index = ["method", "alpha"] if "alpha" in df.columns else ["method"]
    cells = df.copy()
    for metric in ("auroc", "auprc"):
        cells[metric.upper()] = [f"{m:.3f} ± {s:.3f}" for m, s in zip(df[f"{metric}_mean"], df[f"{metric}_sd"])]
    wide = cells.pivot_table(index=index, columns="task", values=["AUROC", "AUPRC"], aggfunc="first", sort=False)
    wide = wide.swaplevel(0, 1, axis=1)
    tasks = list(dict.fromkeys(df["task"]))
    wide = wide.reindex(columns=[(t, m) for t in tasks for m in ("AUROC", "AUPRC")])
    wide.columns = [f"{t} {m}" for t, m in wide.columns]
    return wide.reset_index()


def write_tables(df: pd.DataFrame, out_dir, name: str) -> tuple[Path, Path]:
    """Write `out_dir/name.csv` and `out_dir/name.md` (utility tables in the paper's layout)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out_dir / f"{name}.csv", out_dir / f"{name}.md"
    is_utility = set(UTILITY_COLUMNS) <= set(df.columns)
    if is_utility:
        df = _ordered(df, TSRTR_COLUMNS if "alpha" in df.columns else TSTR_COLUMNS)
    for path, write in ((csv_path, lambda p: df.to_csv(p, index=False)),
                        (md_path, lambda p: p.write_text(_markdown(paper_layout(df) if is_utility else df)))):
        tmp = path.with_name(path.name + ".tmp")
        write(tmp)
        tmp.replace(path)  # atomic: a failure never leaves a half-written table
    return csv_path, md_path
