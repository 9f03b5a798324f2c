"""The tables and quoted numbers of README.md and docs/ written from results/, never typed by hand.

A page marks what is generated with HTML comments (paths relative to the repository root):

    <!-- table: results/default/tstr.md -->                       a results file: .md copied, .csv rendered
    <!-- table: results/default/paired.csv task=mortality metric=auroc|auprc cols=method,diff:Δ -->
    <!-- table: tardiff.config:settings_table -->                 a function returning markdown or a DataFrame
    ...written by `python -m tardiff.report`...
    <!-- /table -->

    <!-- value: results/default/paired.csv task=mortality method=tardiff metric=auroc fmt=ci -->…<!-- /value -->

Words after the source: `name=a|b` keeps the rows whose column `name` is a or b, `name!=a|b` drops them
(for a function: a keyword argument); `cols=a,b:Header` picks and renames columns; `digits=N`; `ci=1` joins
diff / ci_low / ci_high into one cell; `pivot=name` spreads a column's values into columns (the last column
fills them). A value names one cell: `col=`, or `key=a.b` in
a JSON file; `fmt=num|signed|ci|int`, `agg=min|max|range` over several rows (range: max - min). Quote words with spaces ("a b").
`python -m tardiff.report --check` rewrites nothing and fails when a page and the results it quotes disagree.
"""
from __future__ import annotations

import argparse
import difflib
import importlib
import inspect
import json
import re
import shlex
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from tardiff import paper

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"(<!-- (table|value): (.*?) -->)(.*?)(<!-- /\2 -->)", re.S)
FENCE = re.compile(r"(^```.*?^```)", re.S | re.M)
OPTIONS = {"cols", "digits", "ci", "pivot", "col", "key", "fmt", "agg"}


def pages(root: Path = ROOT) -> list[Path]:
    """The pages the report keeps: README.md and every docs/*.md."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def _parse(spec: str) -> tuple[str, dict, dict]:
    """'source k=v ...' -> (source, filters or keyword arguments, options)."""
    source, *words = shlex.split(spec)
    if bad := [word for word in words if "=" not in word]:
        raise ValueError(f"{bad} in {spec!r}: every word after the source is name=value")
    pairs = dict(word.split("=", 1) for word in words)
    return (source, {k: v for k, v in pairs.items() if k not in OPTIONS},
            {k: v for k, v in pairs.items() if k in OPTIONS})


def _load(source: str, args: dict, root: Path):
    """A results file (DataFrame, dict for JSON, str for .md) or what a `module:function` returns."""
    if ":" in source:
        module, name = source.split(":")
        try:
            function = getattr(importlib.import_module(module), name, None)
        except ModuleNotFoundError as error:
            if error.name != module:
                raise
            function = None
        if function is None:
            return None  # not written yet: the page says so (render_table)
        if "root" in inspect.signature(function).parameters:
            args = {**args, "root": root}
        return function(**args)
    path = root / source
    if not path.is_file():
        raise FileNotFoundError(f"{source}: no such results file")
    if path.suffix == ".md":
        if args:
            raise ValueError(f"{source}: a .md file is copied whole; filter its .csv instead")
        return path.read_text()
    if path.suffix == ".json":
        return json.loads(path.read_text())
    table = pd.read_csv(path)
    for key, wanted in args.items():
        column = key.rstrip("!")  # name!=a|b drops those rows
        if column not in table.columns:
            raise KeyError(f"{source}: no column {column!r} to filter on")
        table = table[table[column].astype(str).isin(wanted.split("|")) != key.endswith("!")]
    return table


def _number(value: float, fmt: str = "num", digits: int = 3) -> str:
    """Prose style: .693, −.031, +.013, 6,438."""
    if fmt == "int":
        return f"{value:,.0f}"
    text = f"{value:+.{digits}f}" if fmt in ("signed", "ci") else f"{value:.{digits}f}"
    text = re.sub(r"^([+-]?)0\.", r"\1.", text)
    return text.replace("-", "−")


def _interval(diff: float, low: float, high: float, digits: int = 3) -> str:
    """A paired difference with its CI as the results tables write it: +0.013 [+0.005, +0.021]."""
    if np.isnan(diff):
        return ""
    return f"{diff:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]"


def _cell(value, digits: int) -> str:
    if isinstance(value, (float, np.floating)):
        return "" if np.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def markdown(table: pd.DataFrame, digits: int = 3) -> str:
    """A DataFrame as a markdown table; floats to `digits` decimals, NaN empty (as results/*.md are)."""
    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(_cell(v, digits) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def render_table(spec: str, root: Path = ROOT) -> str:
    """The markdown a `<!-- table: spec -->` marker holds."""
    source, args, options = _parse(spec)
    result = _load(source, args, root)
    if result is None:
        return f"*Not generated yet: `{source}` does not exist in this version of the package.*\n"
    if isinstance(result, str):
        return result if result.endswith("\n") else result + "\n"
    table, digits = result.copy(), int(options.get("digits", 3))
    if table.empty:
        raise ValueError(f"{spec}: no rows")
    if options.get("ci"):
        table["diff"] = [_interval(d, lo, hi, digits) for d, lo, hi in
                         zip(table["diff"], table["ci_low"], table["ci_high"])]
        table = table.drop(columns=["ci_low", "ci_high"])
    names = {}
    if "cols" in options:
        names = dict((c.split(":", 1) + [c])[:2] for c in options["cols"].split(","))
        table = table[list(names)]
    if "pivot" in options:  # the pivot column's values become columns, the last column fills them
        column, value = options["pivot"], table.columns[-1]
        index = [c for c in table.columns if c not in (column, value)]
        table = table.pivot_table(index=index, columns=column, values=value, aggfunc="first", sort=False)
        table = table[list(dict.fromkeys(result[column]))].reset_index()
        table.columns.name = None
    return markdown(table.rename(columns=names), digits)


def render_value(spec: str, root: Path = ROOT) -> str:
    """The text a `<!-- value: spec -->` marker holds: one number of a results file, in prose style."""
    source, args, options = _parse(spec)
    fmt, digits = options.get("fmt", "num"), int(options.get("digits", 3))
    if source.endswith(".json"):
        value = _load(source, {}, root)
        for part in options["key"].split("."):
            value = value[part]
        return _number(float(value), fmt, digits)
    rows = _load(source, args, root)
    if rows.empty or (len(rows) != 1 and "agg" not in options):
        raise ValueError(f"{spec}: {len(rows)} rows match, not one (add filters or agg=min|max|range)")
    if fmt == "ci":
        row = rows.iloc[0]
        return f"{_number(row['diff'], 'ci', digits)} [{_number(row['ci_low'], 'ci', digits)}, " \
               f"{_number(row['ci_high'], 'ci', digits)}]"
    if "col" not in options:
        raise ValueError(f"{spec}: name the column the value comes from (col=...)")
    column, agg = rows[options["col"]], options.get("agg", "max")
    if agg not in ("min", "max", "range"):
        raise ValueError(f"{spec}: agg must be min, max or range, got {agg!r}")
    value = column.max() - column.min() if agg == "range" else getattr(column, agg)()
    return _number(float(value), fmt, digits)


def rewrite(text: str, root: Path = ROOT) -> str:
    """`text` with every marker's contents generated afresh."""
    def fill(match: re.Match) -> str:
        opening, kind, spec, _, closing = match.groups()
        try:
            if kind == "value":
                return opening + render_value(spec, root) + closing
            return f"{opening}\n\n{render_table(spec, root)}\n{closing}"  # blank lines: the table stands alone
        except (OSError, ValueError, KeyError) as error:
            raise ValueError(f"{opening} {error}") from error
    parts = FENCE.split(text)  # markers shown inside ``` code blocks are examples, left alone
    return "".join(part if i % 2 else BLOCK.sub(fill, part) for i, part in enumerate(parts))


def stale(paths=None, root: Path = ROOT) -> list[Path]:
    """The pages whose generated parts differ from what results/ gives now."""
    return [p for p in (paths or pages(root)) if rewrite(p.read_text(), root) != p.read_text()]


def _paired(folder: Path, task: str) -> pd.DataFrame:
    """The GRU downstream's seed-paired differences of one task (method − baseline, with a 95 % CI)."""
    return pd.read_csv(folder / "paired.csv").query("task == @task and downstream == 'gru'")


def glance(task: str, results: str = "results/default", root: Path = ROOT) -> pd.DataFrame:
    """README's table of one task, in the paper's rows: real data, `cfg`, the reported `tardiff` and the five
    baseline generators, with our TSTR (GRU, mean ± sd over seeds), the paper's published MIMIC-III / eICU
    numbers for the same row (context: other cohorts) and the seed-paired difference against `cfg`.
    A generator the run left out keeps its row, saying so."""
    folder = root / results
    tstr = pd.read_csv(folder / "tstr.csv").query("task == @task").set_index("method")
    paired = _paired(folder, task).query("baseline == 'cfg'")
    rows = [("real data", "real"), ("`cfg`: TarDiff's backbone, unguided", "cfg"),
            (f"`tardiff` as reported (validation picked `{tstr.loc['tardiff', 'selected_from']}`)", "tardiff"),
            *((paper.LABELS[m], m) for m in paper.BASELINES)]
    out = []
    for label, method in rows:
        row = {"": label}
        for metric in ("auroc", "auprc"):
            row[f"ours: TSTR {metric.upper()}"] = (f"{tstr.loc[method, metric + '_mean']:.3f} ± "
                                                   f"{tstr.loc[method, metric + '_sd']:.3f}"
                                                   if method in tstr.index else "not run")
            published = [paper.PUBLISHED[d].get(method) for d in paper.PUBLISHED]
            column = paper.COLUMNS.index(f"{task}_{metric}")
            row[f"paper {metric.upper()}: {' / '.join(paper.PUBLISHED)}"] = \
                " / ".join(f"{v[column]:.3f}" for v in published) if all(published) else ""
        for metric in ("auroc", "auprc"):
            d = paired[(paired["method"] == method) & (paired["metric"] == metric)]
            row[f"Δ {metric.upper()} vs `cfg` [95 % CI]"] = \
                _interval(*d[["diff", "ci_low", "ci_high"]].iloc[0]) if len(d) else ""
        out.append(row)
    return pd.DataFrame(out)


def _times(ratio: float) -> str:
    """How far past its bar a score is: 7.1 ×, or 1.02 × where one decimal would read as no miss."""
    return f"{ratio:.2f} ×" if ratio < 1.1 else f"{ratio:.1f} ×"


def equal_budget(root: Path = ROOT) -> pd.DataFrame:
    """README's budget table: the count of its own steps each generator trains for at the equal budget (what
    `cfg` costs per task), its sampling cost, and how trained that count leaves it on its authors' Sines
    benchmark (the `equal budget` rows of results/generator_benchmarks, against the bars they are held to)."""
    budget = pd.read_csv(root / "results/budget_curves/budget.csv")
    sines = pd.read_csv(root / "results/generator_benchmarks/benchmark.csv").query("benchmark == 'sines'")
    sines = sines.set_index("generator")
    out = []
    for row in budget.itertuples():
        line = {"generator": row.method, "unit": row.unit, "count": f"{row.units_at_budget:,}",
                "sampling CPU-s per 1,000 stays": f"{row.sample_cpu_s_per_1000:.2f}"}
        for metric in ("discriminative", "predictive"):
            label = f"{row.method} (equal budget)"
            if row.method == "cfg":
                cell = ""  # a class-conditional model of stays; not a Sines generator
            elif label in sines.index and np.isfinite(sines.loc[label, metric]):
                found = sines.loc[label]
                cell = f"{found[metric]:.3f} (bar ≤ {found[metric + '_target']:.3f}" + \
                    ("" if found[metric + "_met"] else
                     f", missed {_times(found[metric] / found[metric + '_target'])}") + ")"  # how far from trained
            else:
                cell = "not run yet"
            line[f"Sines {metric}"] = cell
        out.append(line)
    return pd.DataFrame(out)


def _side(paired: pd.DataFrame, reference: str, metric: str) -> str:
    """Which baselines `reference` is above and below with the paired 95 % CI excluding 0, by how much."""
    rows = paired[(paired["baseline"] == reference) & (paired["metric"] == metric)
                  & paired["method"].isin(paper.BASELINES)].set_index("method")
    if rows.empty:
        return "no baseline in this run"
    gap = -rows[["diff", "ci_high", "ci_low"]].set_axis(["gap", "low", "high"], axis=1)  # reference − baseline
    def names(keep):
        return ", ".join(f"{paper.LABELS[m]} {_number(g, 'signed')}" for m, g in gap.loc[keep, "gap"].items()) \
            or "none"
    above, below = gap["low"] > 0, gap["high"] < 0
    return (f"above {above.sum()} of {len(gap)} ({names(above)}); below {below.sum()} ({names(below)}); "
            f"{len(gap) - above.sum() - below.sum()} inside the CI")


def verdict(results: str = "results/default", root: Path = ROOT) -> pd.DataFrame:
    """The paper's claim checked on our run, per task and metric: which of the five baseline generators `cfg`
    and the reported `tardiff` beat with a seed-paired 95 % CI above 0 (and by how much), and `tardiff`'s
    relative margin over the best baseline as the paper computes its headline."""
    folder = root / results
    margins = pd.read_csv(folder / "margins.csv").query("dataset == 'PhysioNet 2012 (ours)' and method == 'tardiff'")
    out = []
    for task in paper.TASKS:
        paired = _paired(folder, task)
        for metric in ("auroc", "auprc"):
            margin = margins[margins["column"] == f"{task}_{metric}"]
            out.append({"task": task.replace("_", " "), "metric": metric.upper(),
                        "`cfg` against the five": _side(paired, "cfg", metric),
                        "`tardiff` against the five": _side(paired, "tardiff", metric),
                        "`tardiff` over the best of the five (paper's margin)":
                            f"{margin['relative_gain_pct'].iloc[0]:+.1f} % (best: "
                            f"{paper.LABELS[margin['best_baseline'].iloc[0]]})" if len(margin) else ""})
    return pd.DataFrame(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pages", nargs="*", type=Path, help="pages to rewrite (default: README.md, docs/*.md)")
    parser.add_argument("--check", action="store_true", help="rewrite nothing; exit 1 if a page is out of date")
    args = parser.parse_args(argv)
    failed = False
    for path in [p.resolve() for p in args.pages] or pages():
        text = path.read_text()
        try:
            new = rewrite(text)
        except ValueError as error:
            print(f"error: {path}: {error}", file=sys.stderr)
            return 2
        if new == text:
            continue
        if args.check:
            failed = True
            print(f"{path}: its tables or values differ from results/; run `python -m tardiff.report` "
                  "(make docs)", file=sys.stderr)
            diff = difflib.unified_diff(text.splitlines(), new.splitlines(), "page", "results/", n=0, lineterm="")
            print("\n".join(list(diff)[2:12]), file=sys.stderr)
        else:
            path.write_text(new)
            print(f"wrote {path}")
    return int(failed)


if __name__ == "__main__":
    sys.exit(main())
