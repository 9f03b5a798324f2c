"""Regenerate the paper: run notebooks 01-05 with papermill, in order, skipping steps that are current.

    python -m tardiff.reproduce --profile {smoke,default,paper} [--data-dir DIR] [--dataset NPZ] [--force]

Each notebook is executed from its jupytext `.py` twin (the reviewed source), so the executed copy in
`outputs/notebooks/` always matches the code. A step is skipped when its key (notebook source, the code of the
`tardiff` modules it reaches, parameters and the checksums of what earlier steps wrote) equals the one in its
manifest and the files it wrote still have
the checksums recorded there.
"""
from __future__ import annotations

import argparse
import ast
import hashlib
import json
import re
import sys
import time
from pathlib import Path

from tardiff import artifacts
from tardiff.utils import git_state, read_manifest, write_manifest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ("01_extraction", "02_train_classifier", "03_train_diffusion", "04_guided_sampling", "05_evaluation")


class NotebookFailed(RuntimeError):
    pass


# What each step writes under outputs/ (globs): its manifest records their checksums, and the step is reused
# only while they still match (a truncated or replaced artifact reruns the step that makes it).
STEP_OUTPUTS = {"01_extraction": ("data/*.npz",), "02_train_classifier": artifacts.CLASSIFIER_GLOBS,
                "03_train_diffusion": artifacts.GENERATIVE_GLOBS, "04_guided_sampling": ("synthetic/*/*.npz", "synthetic/*/pool/*.npz"),
                "05_evaluation": ("tables/*.csv",)}


def output_checksums(outputs: Path, name: str) -> dict[str, str]:
    from tardiff.utils import sha256_file

    return {str(p.relative_to(outputs)): sha256_file(p) for pattern in STEP_OUTPUTS[name]
            for p in sorted(outputs.glob(pattern))}


def tardiff_imports(source: str) -> set[str]:
    """The `tardiff` modules a source imports anywhere (module level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "tardiff":
            if node.module == "tardiff":  # from tardiff import pipeline, plots
                found.update(f"tardiff.{alias.name}" for alias in node.names)
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "tardiff")
    return found


def code_digest(source: Path, package: Path = ROOT / "tardiff") -> str:
    """Digest of a notebook's code and of every `tardiff` module it reaches, comments excluded.

    Each module enters as its syntax tree (`ast.dump`), so a comment edited in `plots.py` reruns nothing,
    and a code change reruns only the steps whose notebooks reach that module.
    """
    text = source.read_text()
    notebook_code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    seen, todo = {}, sorted(tardiff_imports(notebook_code))
    while todo:
        name = todo.pop()
        relative = name.split(".", 1)[1].replace(".", "/") if "." in name else ""
        path = package / (relative + ".py")
        if not path.is_file():  # a subpackage (tardiff.generators) or the package itself
            path = package / relative / "__init__.py"
        if name in seen or not path.exists():
            continue
        module_source = path.read_text()
        seen[name] = ast.dump(ast.parse(module_source))
        todo.extend(sorted(tardiff_imports(module_source) - set(seen)))
    digest = hashlib.sha256(text.encode())
    for name in sorted(seen):
        digest.update(name.encode() + b"\0" + seen[name].encode())
    return digest.hexdigest()


def step_key(source: Path, parameters: dict, upstream: str, package: Path = ROOT / "tardiff") -> str:
    """What a step's result depends on: its code, the parameters, and the files earlier steps wrote."""
    payload = json.dumps({"code": code_digest(source, package), "parameters": parameters, "upstream": upstream},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def execute(name: str, parameters: dict, out_dir: Path, notebooks_dir: Path) -> Path:
    """Run one notebook's `.py` twin through papermill; failures name the notebook and cell."""
    import jupytext
    import papermill

    source = notebooks_dir / f"{name}.py"
    notebook = jupytext.read(source)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    staged = out_dir / f"{name}.input.ipynb"
    jupytext.write(notebook, staged)
    executed = out_dir / f"{name}.ipynb"
    try:
        papermill.execute_notebook(str(staged), str(executed), parameters=parameters, cwd=str(ROOT),
                                   kernel_name="python3", progress_bar=False, log_output=True)
    except papermill.PapermillExecutionError as error:
        raise NotebookFailed(f"{name} failed in cell {error.exec_count} ({error.ename}: {error.evalue}); "
                             f"the executed notebook with the traceback is {executed}") from error
    finally:
        staged.unlink(missing_ok=True)
    return executed


def figures_folder(profile: str, outputs: str | Path, figures: str | Path | None = None) -> Path:
    """Where a run's figures go: the committed `figures/` belongs to the default profile (README and docs show
    them), so any other profile writes beside its outputs unless told otherwise: a smoke check or a GPU run of
    the paper profile never overwrites the published figures. Relative paths are from the repository root."""
    chosen = Path(figures) if figures else Path("figures") if profile == "default" else Path(outputs) / "figures"
    return chosen if chosen.is_absolute() else (ROOT / chosen).resolve()


def reproduce(profile: str = "default", data_dir: str | None = None, dataset: str | None = None,
              outputs: str = "outputs", figures: str | None = None, seed: int = 0, device: str = "auto",
              force: bool = False, only: tuple = NOTEBOOKS, notebooks_dir: Path = ROOT / "notebooks",
              overrides: dict | None = None) -> dict:
    if overrides:  # fail here, before anything is written or run, on a setting the profile lacks or cannot run
        from tardiff.config import get_profile, with_overrides

        with_overrides(get_profile(profile), **overrides)
        print(f"[reproduce] overrides: {overrides}", flush=True)
    outputs_path = (ROOT / outputs).resolve() if not Path(outputs).is_absolute() else Path(outputs)
    out_dir = outputs_path / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    parameters = {"profile": profile, "data_dir": data_dir or "", "dataset": dataset or "",
                  "outputs_dir": str(outputs_path), "figures_dir": str(figures_folder(profile, outputs, figures)),
                  "seed": seed, "device": device, "overrides": dict(overrides or {})}
    if force and NOTEBOOKS[0] in only:  # --force redoes extraction too: without its manifest nothing is reused
        (outputs_path / "data" / "manifest.json").unlink(missing_ok=True)
    upstream, report = {}, {}  # the output checksums of every earlier step: what a step reads
    for name in NOTEBOOKS:
        if name not in only:
            continue
        key = step_key(notebooks_dir / f"{name}.py", parameters, json.dumps(upstream, sort_keys=True))
        manifest_path = out_dir / f"{name}.json"
        manifest = read_manifest(manifest_path)
        if (not force and manifest and manifest.get("key") == key and (out_dir / f"{name}.ipynb").exists()
                and manifest.get("outputs") == output_checksums(outputs_path, name)):
            print(f"[reproduce] {name}: unchanged, skipped", flush=True)
            report[name] = {"skipped": True, "wall_time_s": manifest.get("wall_time_s")}
        else:
            print(f"[reproduce] {name}: running ({profile} profile)", flush=True)
            # "Done" again only when it finishes: a failure leaves no manifest over partial artifacts. Later
            # steps are keyed on these outputs' checksums, so they rerun exactly when the outputs changed.
            manifest_path.unlink(missing_ok=True)
            start = time.perf_counter()
            execute(name, parameters, out_dir, notebooks_dir)
            wall = time.perf_counter() - start
            write_manifest(manifest_path, config=parameters, seed=seed, wall_time_s=wall, key=key,
                           outputs=output_checksums(outputs_path, name))
            print(f"[reproduce] {name}: done in {wall:.0f} s", flush=True)
            report[name] = {"skipped": False, "wall_time_s": round(wall, 1)}
        upstream.update(output_checksums(outputs_path, name))
    total = sum(r["wall_time_s"] or 0 for r in report.values() if not r["skipped"])
    write_manifest(out_dir / "reproduce.json", config=parameters, seed=seed, wall_time_s=total, steps=report)
    return report


def portable_paths(text: str, outputs: str | Path, figures: str | Path = "figures", data_dir=None) -> str:
    """An executed notebook's text without this machine's paths (papermill's parameters, warnings' file names):
    the run's outputs and figures folders become `outputs` and `figures`, the archives' folder `<data-dir>`,
    the repository `.`, the Python environment `<env>`."""
    named = [(outputs, "outputs"), (figures, "figures"), (sys.prefix, "<env>"), (ROOT, ".")]
    for path, name in named + ([(data_dir, "<data-dir>")] if data_dir else []):
        for form in {str(Path(path).resolve()), str(Path(path).absolute())}:
            text = re.sub(re.escape(form) + r"(?![\w.-])", name, text)  # /x/a, not inside /x/ab
    return text


def publish(outputs: str | Path, results: str | Path, profile: str, figures: str | Path | None = None,
            data_dir=None) -> Path:
    """Copy a finished run's tables and executed notebooks to `results` (committed, so README's numbers are
    traceable; the notebooks without this machine's paths), with a manifest naming the commit, the profile, its
    `--set` overrides (one set for every step, else an error) and each step's wall time."""
    import shutil

    outputs, results = Path(outputs), Path(results)
    tables = sorted((outputs / "tables").glob("*.csv"))
    if not tables:
        raise FileNotFoundError(f"no tables under {outputs / 'tables'}: run the batch first")
    steps = {name: read_manifest(outputs / "notebooks" / f"{name}.json") for name in NOTEBOOKS}
    overrides = {name: (m.get("config") or {}).get("overrides") or {} for name, m in steps.items() if m}
    if len({json.dumps(o, sort_keys=True) for o in overrides.values()}) > 1:
        raise ValueError(f"the steps under {outputs} ran with different --set overrides {overrides}; rerun the batch "
                         "with one set before publishing")
    (results / "notebooks").mkdir(parents=True, exist_ok=True)
    for path in tables + sorted((outputs / "tables").glob("*.md")):
        shutil.copyfile(path, results / path.name)
    for path in sorted((outputs / "notebooks").glob("*.ipynb")):
        text = portable_paths(path.read_text(), outputs, figures_folder(profile, outputs, figures), data_dir)
        (results / "notebooks" / path.name).write_text(text)
    commit, dirty = git_state(("tardiff", "notebooks"))
    write_manifest(results / "manifest.json", seed=None,
                   config={"profile": profile, "overrides": next(iter(overrides.values()), {})},
                   wall_time_s=sum((m or {}).get("wall_time_s") or 0 for m in steps.values()), commit=commit,
                   code_changed_since_commit=dirty,
                   steps={name: {"wall_time_s": (m or {}).get("wall_time_s"), "created": (m or {}).get("created")}
                          for name, m in steps.items()},
                   tables=[p.name for p in tables])
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tardiff.reproduce", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="default", choices=("smoke", "default", "paper"))
    parser.add_argument("--data-dir", help="PhysioNet 2012 archives (else TARDIFF_DATA_DIR, else download)")
    parser.add_argument("--dataset", help="an extracted `.npz` (data_preprocess/ output or your own X, y) "
                                          "to use instead of PhysioNet 2012")
    parser.add_argument("--outputs", default="outputs")
    parser.add_argument("--figures", help="where figures go (default: figures/ for the default profile, whose "
                                         "figures are committed; <outputs>/figures for the others)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:1 ...")
    parser.add_argument("--force", action="store_true", help="rerun every step")
    parser.add_argument("--only", nargs="+", choices=NOTEBOOKS, default=list(NOTEBOOKS))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a profile setting, type-checked (repeatable): --set guidance_scale=0.1 "
                             "--set eval_train.max_epochs=10; recorded in every manifest and step key")
    parser.add_argument("--publish", metavar="DIR", help="after a successful run, copy its tables and executed "
                                                         "notebooks to DIR (e.g. results/default) with a manifest")
    args = parser.parse_args(argv)
    from tardiff.config import parse_overrides

    try:
        report = reproduce(args.profile, args.data_dir, args.dataset, args.outputs, args.figures, args.seed,
                           args.device, args.force, tuple(args.only), overrides=parse_overrides(args.set))
    except ValueError as error:  # a bad --set names the setting and what it expects
        print(f"[reproduce] {error}", file=sys.stderr)
        return 2
    except NotebookFailed as error:
        print(f"[reproduce] FAILED: {error}", file=sys.stderr)
        return 1
    total = sum(r["wall_time_s"] or 0 for r in report.values() if not r["skipped"])
    print(f"[reproduce] all steps done; {total:.0f} s of work this run")
    if args.publish:
        try:
            published = publish(args.outputs, args.publish, args.profile, args.figures, args.data_dir)
        except (ValueError, FileNotFoundError) as error:  # checked before anything is copied
            print(f"[reproduce] not published: {error}", file=sys.stderr)
            return 2
        print(f"[reproduce] published to {published}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
