"""Equal compute for the paper's table (issue 28): what `cfg` costs to train per task, the counts that spend
that budget for each baseline generator, and how each one's downstream utility grows with the budget.

    python experiments/budget_curves.py measure [--out results/budget_curves]      # ~10 CPU-min
    python experiments/budget_curves.py curves [--multipliers 0.25,0.5,1,2,4] [--task mortality]
    python experiments/budget_curves.py seeds --seeds 0,1,2 --multipliers 1          # ~20 min a seed

`measure`: on one thread (CPU seconds: time.process_time, so other processes on the machine barely move it),
each method is fitted at two short lengths on the task's real training split; the slope between them is its
cost per unit (a step, an iteration of TimeGAN's three phases, an epoch of TimeVAE, a stage-1 step of TimeVQVAE
with its two stage-2 steps) and the intercept its fixed cost. The budget is `cfg`'s fit at the default
profile's steps; each generator's count is the one whose predicted cost equals it. These counts are written by
hand into `tardiff.config.EQUAL_BUDGET` (counts, not seconds, so a run is the same on any machine;
tests/test_budget.py holds the two equal). Sampling is not budgeted; its seconds per 1,000 stays are reported.

`curves`: every method (cfg and the five) fitted at multiples of its equal-budget counts, each multiple its
own run (TimeGAN's phases, TimeVQVAE's cosine schedule and Diffusion-TS's plateau schedule depend on the total
length), sampled at the training split's label counts, and scored TSTR on the set-a **validation** split only:
the downstream GRUs (the profile's, n_seeds of them) train on the synthetic set, choose their epoch on a
stratified tenth of it held out (no real data in any choice), and are scored on real validation stays;
the seed ensemble's bootstrap CI. A `real` row (the same protocol on the real training split) is the ceiling.
Resumable: each (method, multiple) row is kept in the work folder's rows.csv, each fit in its checkpoints.

`seeds`: the same rows with other seeds (the fit's, the sampler's, the synthetic hold-out's and the downstream
GRUs'), so a reader sees how far one fit's score moves: the curves and the paper's table are one fit per
generator, and their CIs are conditional on it. Seed 0 is taken from `curves`' published rows. The `real` row
moves by its downstream seeds alone; a generator's spread beyond it is the fit's. -> fit_seeds.{csv,md}.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tardiff import artifacts, evaluate, pipeline, real_data  # noqa: E402
from tardiff import config as config_lib  # noqa: E402
from tardiff.config import Profile, get_profile, with_overrides  # noqa: E402
from tardiff.generators import GENERATORS, generator_class  # noqa: E402
from tardiff.sampler import Sampler  # noqa: E402
from tardiff.utils import git_state, write_manifest  # noqa: E402

log = logging.getLogger("budget_curves")
METHODS = ("cfg", *GENERATORS)
UNITS = {"cfg": "step", "timegan": "iteration (x3 phases)", "timevae": "epoch",
         "timevqvae": "stage-1 step (+2 stage-2)", "diffusion_ts": "step (task total)", "biodiffusion": "step"}
# two short lengths per method, in units; the cost per unit is the slope between them
PROBE = {"cfg": (30, 120), "timegan": (15, 60), "timevae": (1, 3), "timevqvae": (15, 60),
         "diffusion_ts": (30, 120), "biodiffusion": (20, 80)}


def counts_for(name: str, units: float) -> dict:
    """The profile settings (dotted, for with_overrides) that train `name` for `units` units: its first budget
    field is the unit, any other keeps its ratio to it in the authors' settings (TimeVQVAE's 20,000 : 40,000)."""
    units = max(1, int(round(units)))
    if name == "cfg":
        return {"diffusion_train.steps": units}
    cls = generator_class(name)
    unit, *others = cls.budget_fields
    authors = cls.config_class()
    return {f"generators.{name}.{unit}": units,
            **{f"generators.{name}.{f}": round(units * getattr(authors, f) / getattr(authors, unit)) for f in others}}


def units_of(profile: Profile, name: str) -> int:
    """The profile's training length of `name`, in the units of `counts_for`."""
    if name == "cfg":
        return profile.diffusion_train.steps
    return int(getattr(getattr(profile.generators, name), generator_class(name).budget_fields[0]))


def at_multiple(profile: Profile, multiple: float, names=METHODS) -> Profile:
    """`profile` with every named method's training length scaled by `multiple` (at least one unit)."""
    overrides = {}
    for name in names:
        overrides |= counts_for(name, units_of(profile, name) * multiple)
    return with_overrides(profile, **overrides)


def fit_models(jobs: dict, profile: Profile, seed: int, parallel: bool = True) -> dict:
    """pipeline.train_generative_models: one-thread processes side by side (parallel), or one after another in
    this process (its threads); each resumes its checkpoints."""
    return pipeline.train_generative_models(jobs, profile, seed=seed, device="cpu", progress=parallel,
                                            parallel=parallel)


def job(name: str, models: Path, real) -> tuple[Path, tuple]:
    if name == "cfg":
        return artifacts.diffusion(models, "cond", real.task), ("diffusion", real.X_train, real.y_train)
    return artifacts.generator(models, name, real.task), (name, real.X_train, real.y_train)


# --------------------------------------------------------------------------- measure

def measure(profile: Profile, real, work: Path, seed: int = 0) -> pd.DataFrame:
    """Per method: CPU seconds per unit and fixed, the units that spend cfg's budget, sampling s / 1,000 stays."""
    torch.set_num_threads(1)
    rows = []
    for name in METHODS:
        cost = {}
        for units in PROBE[name]:
            probe = with_overrides(profile, **counts_for(name, units))
            models = work / f"{name}_{units}" / "models"
            path, (kind, X, y) = job(name, models, real)
            start = time.process_time()
            fit_models({path: (kind, X, y)}, probe, seed, parallel=False)
            cost[units] = time.process_time() - start
            log.info("%s at %d units: %.1f CPU-s", name, units, cost[units])
        (a, b), (ta, tb) = PROBE[name], (cost[PROBE[name][0]], cost[PROBE[name][1]])
        slope = (tb - ta) / (b - a)
        sampler = Sampler(real.X_train, real.y_train, real.task, probe, models, seed=seed, device="cpu",
                          progress=False, n=_thousand(real.y_train))
        start = time.process_time()
        sampler.sample(name)
        rows.append({"method": name, "unit": UNITS[name], "cpu_s_per_unit": slope, "fixed_cpu_s": ta - slope * a,
                     "sample_cpu_s_per_1000": time.process_time() - start})
    table = pd.DataFrame(rows)
    cfg = table.set_index("method").loc["cfg"]
    budget = cfg.fixed_cpu_s + cfg.cpu_s_per_unit * profile.diffusion_train.steps
    table["budget_cpu_s"] = budget
    table["units_at_budget"] = ((budget - table.fixed_cpu_s) / table.cpu_s_per_unit).round().astype(int)
    table.loc[table.method == "cfg", "units_at_budget"] = profile.diffusion_train.steps
    return table


def _thousand(y_train) -> dict:
    share = float(np.mean(y_train))
    return {0: 1000 - int(round(1000 * share)), 1: int(round(1000 * share))}


# --------------------------------------------------------------------------- curves

def validation_only(real, seed: int) -> callable:
    """(X, y) -> a RealData whose downstream models select their epoch on a stratified tenth of (X, y) and are
    scored ("test") on the real validation split: no real stay in any choice, no test stay read."""
    def split(X, y):
        rng = np.random.default_rng(seed)
        hold = np.zeros(len(y), bool)
        for label in (0, 1):
            idx = np.flatnonzero(y == label)
            hold[rng.choice(idx, size=max(1, len(idx) // 10), replace=False)] = True
        return real_data.RealData(X_train=X[~hold], y_train=y[~hold], X_val=X[hold], y_val=y[hold],
                                  X_test=real.X_val, y_test=real.y_val, task=real.task, name=f"{real.name} (val)")
    return split


def curve_rows(profile: Profile, real, multiple: float, work: Path, seed: int, names=METHODS) -> pd.DataFrame:
    """Fit, sample and score every named method at `multiple` x its equal budget (plus `real` at 1)."""
    scaled = at_multiple(profile, multiple, names)
    models = work / f"x{multiple:g}" / "models"
    named = {name: job(name, models, real) for name in names}
    jobs = dict(named.values())
    start = time.perf_counter()
    histories = fit_models(jobs, scaled, seed)
    fit_wall = time.perf_counter() - start
    sampler = Sampler(real.X_train, real.y_train, real.task, scaled, models, seed=seed, device="cpu", progress=False)
    split = validation_only(real, seed)
    config = evaluate.EvalConfig.from_profile(profile, seed=seed)
    rows = []
    for name in names:
        start = time.perf_counter()
        X, y, _ = sampler.sample(name)
        sample_wall = time.perf_counter() - start
        held = split(X, y)
        models_ = evaluate.fit_downstream(held.X_train, held.y_train, held, config)
        scored, _ = evaluate.tstr_scores({name: models_}, held, real.task, config)
        history = histories[named[name][0]]
        rows.append({**scored.iloc[0].to_dict(), "multiple": multiple, "units": units_of(scaled, name),
                     "fit_wall_s": history.get("wall_time_s", np.nan), "sample_wall_s": sample_wall,
                     "batch_fit_wall_s": fit_wall})
    return pd.DataFrame(rows)


def real_row(profile: Profile, real, seed: int) -> pd.DataFrame:
    held = validation_only(real, seed)(real.X_train, real.y_train)
    config = evaluate.EvalConfig.from_profile(profile, seed=seed)
    scored, _ = evaluate.tstr_scores({"real": evaluate.fit_downstream(held.X_train, held.y_train, held, config)},
                                     held, real.task, config)
    return scored.assign(multiple=np.nan, units=np.nan)


def curves(profile: Profile, real, multiples, work: Path, seed: int, names=METHODS, commit: str = "",
           refit=(), published: Path | None = None) -> pd.DataFrame:
    """Every (method, multiple) row, resuming from work/rows.csv (a finished multiple is not refitted); each new
    row carries the `commit` it was fitted at. `refit` names methods whose generator changed: their rows are
    dropped and fitted again, and the others' rows are kept, from work/rows.csv or, where the work folder is
    gone, from the `published` curves.csv (so one changed generator does not cost every curve again)."""
    work.mkdir(parents=True, exist_ok=True)
    done_path = work / "rows.csv"
    done = pd.read_csv(done_path) if done_path.exists() else pd.DataFrame()
    if refit:
        if done.empty and published is not None and published.exists():
            done = pd.read_csv(published)
            log.info("kept the rows of %s but %s", published, ", ".join(refit))
        done = done[~done.method.isin(refit)] if len(done) else done
        done.to_csv(done_path, index=False)
        for name in refit:  # its old fits and checkpoints would otherwise be resumed, not refitted
            stem = job(name, Path("."), real)[0].name.split(".")[0]
            for stale in work.glob(f"x*/models/{stem}*"):
                shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    if done.empty or "real" not in set(done.method):
        done = pd.concat([done, real_row(profile, real, seed).assign(commit=commit)], ignore_index=True)
        done.to_csv(done_path, index=False)
    for multiple in multiples:
        have = set(done.loc[np.isclose(done.multiple.astype(float), multiple), "method"]) if len(done) else set()
        todo = [name for name in names if name not in have]
        if not todo:
            continue
        log.info("x%g: %s", multiple, ", ".join(todo))
        fitted = curve_rows(profile, real, multiple, work, seed, todo).assign(commit=commit)
        done = pd.concat([done, fitted], ignore_index=True)
        done.to_csv(done_path, index=False)
    return ordered(done)


def seed_rows(profile: Profile, real, multiples, work: Path, seeds, names=METHODS, commit: str = "",
              published: Path | None = None) -> pd.DataFrame:
    """`curves`' rows once per seed (column `seed`), each seed in its own work folder (resumable); seed 0 from
    the `published` curves.csv where it holds every row asked for, so the published fits are not paid twice."""
    asked = lambda rows: rows[(rows.task == real.task) & rows.method.isin(("real", *names))
                              & (rows.multiple.isna() | np.isin(rows.multiple.astype(float), multiples))]
    frames = []
    for seed in seeds:
        if seed == 0 and published is not None and published.exists():
            kept = asked(pd.read_csv(published))  # another task's curves (same --out) are not this task's seed 0
            have = {(r.method, float(r.multiple)) for r in kept.dropna(subset=["multiple"]).itertuples()}
            if {(n, float(m)) for n in names for m in multiples} <= have and "real" in set(kept.method):
                frames.append(kept.assign(seed=seed))
                continue
        log.info("seed %d", seed)
        rows = curves(profile, real, multiples, work / f"seed{seed}", seed, names, commit=commit)
        frames.append(asked(rows).assign(seed=seed))
    return pd.concat(frames, ignore_index=True)


def seeds_markdown(rows: pd.DataFrame) -> str:
    """Per multiple: each method's seed-ensemble score at every seed, its mean and range (max - min), and the
    order of the methods at each seed: how much one fit decides the ranking."""
    seeds = sorted(rows.seed.unique())
    lines = []
    for multiple in sorted(rows.multiple.dropna().unique()):
        at = rows[rows.multiple.isna() | np.isclose(rows.multiple.astype(float), multiple)]
        for metric in ("auroc", "auprc"):
            column = f"{metric}_ensemble"
            lines += [f"**TSTR {metric.upper()}** on real validation stays at {multiple:g} × budget, one fit "
                      f"per seed (each the seed ensemble of its downstream GRUs)", "",
                      "| method | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | range |",
                      "|---|" + "---|" * (len(seeds) + 2)]
            for name in [m for m in ("real", *METHODS) if m in set(at.method)]:
                values = at[at.method == name].set_index("seed")[column].reindex(seeds)
                cells = " | ".join("" if np.isnan(v) else f"{v:.3f}" for v in values)
                lines.append(f"| {name}{' (no fit: downstream seeds only)' if name == 'real' else ''} | {cells} | "
                             f"{values.mean():.3f} | {values.max() - values.min():.3f} |")
            lines.append("")
            for seed in seeds:
                ranked = at[(at.seed == seed) & (at.method != "real")].sort_values(column, ascending=False)
                lines.append(f"- seed {seed}: " + " > ".join(ranked.method))
            lines.append("")
    return "\n".join(lines)


def ordered(rows: pd.DataFrame) -> pd.DataFrame:
    """`real`, then the methods in METHODS' order, each by multiple: a refitted method's rows rejoin their place."""
    rank = {name: k for k, name in enumerate(("real",) + tuple(METHODS))}
    key = rows.method.map(rank).fillna(len(rank))
    return rows.assign(_rank=key).sort_values(["_rank", "multiple"], kind="stable").drop(columns="_rank") \
        .reset_index(drop=True)


def markdown(rows: pd.DataFrame, level: float = 0.95) -> str:
    """Methods down, budget multiples across: the seed ensemble's AUROC / AUPRC with its bootstrap CI; the
    real-data ceiling (no budget) under each table."""
    lines = []
    multiples = sorted(rows.multiple.dropna().unique())
    cell = lambda r, metric: (f"{r[metric + '_ensemble']:.3f} [{r[metric + '_ci_low']:.3f}, "
                              f"{r[metric + '_ci_high']:.3f}]")
    for metric in ("auroc", "auprc"):
        lines += [f"**TSTR {metric.upper()}** on real validation stays (seed ensemble [{level:.0%} bootstrap CI])",
                  "", "| method | " + " | ".join(f"{m:g} × budget" for m in multiples) + " |",
                  "|---|" + "---|" * len(multiples)]
        for name in [m for m in METHODS if m in set(rows.method)]:
            cells = []
            for m in multiples:
                hit = rows[(rows.method == name) & np.isclose(rows.multiple.astype(float), m)]
                cells.append(cell(hit.iloc[0], metric) if len(hit) else "")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        real = rows[rows.method == "real"]
        if len(real):
            lines += ["", f"Real training stays, the same protocol: {cell(real.iloc[0], metric)}."]
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("measure", "curves", "seeds", "render"),
                        help="render: curves.md and the figure again from --out's curves.csv, nothing fitted")
    parser.add_argument("--data-dir", default=os.environ.get("TARDIFF_DATA_DIR"),
                        help="PhysioNet 2012 archives (else TARDIFF_DATA_DIR); extracted into --work")
    parser.add_argument("--dataset", default="", help="an extracted folder or .npz (default: outputs/data, "
                        "else extracted from --data-dir)")
    parser.add_argument("--task", default="mortality")
    parser.add_argument("--profile", default="default")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--multipliers", default="0.25,0.5,1,2,4")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--refit", default="", metavar="METHODS",
                        help="fit these methods again (their generator changed) and keep every other row, from "
                             "--work's rows.csv or, without one, --out's curves.csv")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", default="0,1,2", help="seeds: the seeds whose rows are fitted (0 from curves.csv)")
    parser.add_argument("--work", default="outputs/budget_curves")
    parser.add_argument("--out", default="results/budget_curves")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[budget] %(message)s")
    from tardiff.config import parse_overrides
    try:  # a setting that cannot run is refused in one line before any data is read (tardiff.settings)
        overrides = parse_overrides(args.set)
        profile = with_overrides(get_profile(args.profile), **overrides)
    except ValueError as error:
        parser.error(str(error))
    try:  # numbers, named in one line, before any data is read
        multiples = [float(m) for m in args.multipliers.split(",") if m]
        seeds = [int(s) for s in args.seeds.split(",") if s]
    except ValueError as error:
        parser.error(f"--multipliers takes numbers and --seeds integers, comma-separated: {error}")
    if not multiples or min(multiples) <= 0 or not seeds:
        parser.error(f"--multipliers must be positive and --seeds non-empty, got {args.multipliers!r}, {args.seeds!r}")
    names = tuple(n for n in args.methods.split(",") if n)
    refit = tuple(n for n in args.refit.split(",") if n)
    if unknown := sorted(set(names + refit) - set(METHODS)):
        parser.error(f"--methods / --refit {unknown} are not among {list(METHODS)}")
    if missing := sorted(set(refit) - set(names)):
        parser.error(f"--refit {missing} must be among --methods")
    work, out = Path(args.work), Path(args.out)
    if args.command == "render":
        if not (out / "curves.csv").exists():
            parser.error(f"{out / 'curves.csv'} does not exist: run `curves` first (or name its --out)")
        return render(pd.read_csv(out / "curves.csv"), out)
    dataset = _dataset(args, work)
    real = real_data.load_real(dataset, args.task, profile, seed=args.seed)
    start = time.perf_counter()
    commit, dirty = git_state(("tardiff", "experiments"))  # a row fitted with uncommitted code is not HEAD's
    if args.command == "measure":
        table = measure(profile, real, work / "measure", args.seed)
        out.mkdir(parents=True, exist_ok=True)
        table.to_csv(out / "budget.csv", index=False)
        (out / "budget.md").write_text(budget_markdown(table) + "\n")
        print(budget_markdown(table))
        name, extra = "budget", {"load_average": os.getloadavg()}
    elif args.command == "seeds":
        rows = seed_rows(profile, real, multiples, work, seeds, names, commit=commit, published=out / "curves.csv")
        out.mkdir(parents=True, exist_ok=True)
        rows.to_csv(out / "fit_seeds.csv", index=False)
        (out / "fit_seeds.md").write_text(seeds_markdown(rows) + "\n")
        print(seeds_markdown(rows))
        name, extra = "fit_seeds", {"multiples": multiples, "methods": names, "seeds": seeds}
    else:
        rows = curves(profile, real, multiples, work, args.seed, names, commit=commit, refit=refit,
                      published=out / "curves.csv")
        out.mkdir(parents=True, exist_ok=True)
        rows.to_csv(out / "curves.csv", index=False)
        render(rows, out)
        commits = rows.get("commit", pd.Series("", index=rows.index)).fillna("").astype(str)
        name, extra = "curves", {"multiples": multiples, "methods": names, "refit": refit,
                                 "row_commits": commits.groupby(rows.method).agg(
                                     lambda c: sorted(set(c) - {""}) or ["before row commits were kept"]).to_dict()}
    write_manifest(out / f"{name}_manifest.json", config=profile, seed=args.seed, commit=commit,
                   code_changed_since_commit=dirty,
                   inputs={"dataset": str(dataset)}, wall_time_s=time.perf_counter() - start,
                   command="python experiments/budget_curves.py " + " ".join(argv or sys.argv[1:]),
                   task=args.task, profile=args.profile, overrides=overrides, torch_threads=torch.get_num_threads(),
                   equal_budget=getattr(config_lib, "EQUAL_BUDGET", None), **extra)
    return 0


def render(rows: pd.DataFrame, out: Path) -> int:
    """curves.md and figures/budget_curves.png from the curve rows."""
    from tardiff import plots
    rows = ordered(rows)
    (out / "curves.md").write_text(markdown(rows))
    plots.budget_curves(rows, ROOT / "figures" / "budget_curves.png")
    print(markdown(rows))
    return 0


def budget_markdown(table: pd.DataFrame) -> str:
    budget = float(table.budget_cpu_s.iloc[0])
    lines = [f"Budget: `cfg`'s fit, {budget:.0f} CPU-s ({budget / 60:.1f} CPU-min) on one thread.", "",
             "| method | unit | CPU-s per unit | fixed CPU-s | units at the budget | sampling CPU-s per 1,000 stays |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r.method} | {r.unit} | {r.cpu_s_per_unit:.3f} | {r.fixed_cpu_s:.1f} | {r.units_at_budget} | "
              f"{r.sample_cpu_s_per_1000:.2f} |" for r in table.itertuples()]
    return "\n".join(lines)


def _dataset(args, work: Path) -> Path:
    if args.dataset:
        return Path(args.dataset)
    if (ROOT / "outputs" / "data").exists():
        return ROOT / "outputs" / "data"
    if not args.data_dir:
        raise SystemExit("no extracted data: pass --dataset, or --data-dir / TARDIFF_DATA_DIR with the archives")
    from tardiff.data import extract
    extract(args.data_dir, work / "data")
    return work / "data"


if __name__ == "__main__":
    sys.exit(main())
