"""README.md and docs/: their tables and marked numbers equal what results/ gives (tardiff.report), every
relative link resolves, and nothing points a user at a file outside the repository."""
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tardiff import report

ROOT = Path(__file__).resolve().parent.parent
PAGES = report.pages(ROOT)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
OUTSIDE = re.compile(r"\.\./shared|/work/|shared/notes/")


def test_readme_is_short_and_gives_the_two_commands_first():
    text = (ROOT / "README.md").read_text()
    assert len(text.encode()) <= 16_000
    head = "\n".join(text.splitlines()[:40])
    assert "make reproduce" in head and "make test" in head
    assert len(list((ROOT / "docs").glob("*.md"))) >= 5


def test_ci_runs_the_test_command_readme_gives():
    assert "make test" in (ROOT / "README.md").read_text()
    assert re.search(r"^make test$", (ROOT / ".ci" / "run").read_text(), re.M)


def test_every_page_matches_the_results_it_quotes():
    stale = report.stale(PAGES, ROOT)
    assert not stale, f"{[str(p.relative_to(ROOT)) for p in stale]} differ from results/: run `make docs`"


def test_the_check_command_agrees():
    done = subprocess.run([sys.executable, "-m", "tardiff.report", "--check"], cwd=ROOT, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr


@pytest.fixture
def tiny(tmp_path):
    """A repository of one results table and one page quoting it."""
    (tmp_path / "results").mkdir()
    pd.DataFrame({"task": ["a", "a", "b"], "method": ["x", "y", "x"], "metric": ["auroc"] * 3,
                  "diff": [0.0123, -0.0456, float("nan")], "ci_low": [0.001, -0.08, 0.0],
                  "ci_high": [0.02, -0.01, 0.0]}).to_csv(tmp_path / "results" / "t.csv", index=False)
    page = tmp_path / "page.md"
    page.write_text("Gain <!-- value: results/t.csv task=a method=x col=diff fmt=signed -->+.012<!-- /value -->.\n\n"
                    "<!-- table: results/t.csv task=a cols=method,diff:Δ -->\n\n"
                    "| method | Δ |\n|---|---|\n| x | 0.012 |\n| y | -0.046 |\n\n<!-- /table -->\n")
    return tmp_path, page


def test_check_passes_when_the_page_agrees(tiny):
    root, page = tiny
    assert report.stale([page], root) == []


@pytest.mark.parametrize("typed, generated", [("+.012<", "+.013<"), ("| y | -0.046 |", "| y | -0.047 |")])
def test_check_fails_on_a_number_or_table_cell_that_differs(tiny, typed, generated):
    root, page = tiny
    page.write_text(page.read_text().replace(typed, generated))
    assert report.stale([page], root) == [page]
    page.write_text(report.rewrite(page.read_text(), root))
    assert report.stale([page], root) == []


def test_check_fails_when_the_results_change(tiny):
    root, page = tiny
    table = pd.read_csv(root / "results" / "t.csv")
    table.loc[1, "diff"] = -0.5
    table.to_csv(root / "results" / "t.csv", index=False)
    assert report.stale([page], root) == [page]


def test_table_options(tiny):
    root, _ = tiny
    both = report.render_table("results/t.csv method!=y ci=1 cols=task,metric,diff pivot=task", root)
    assert both.splitlines() == ["| metric | a | b |", "|---|---|---|",
                                 "| auroc | +0.012 [+0.001, +0.020] |  |"]
    plain = report.render_table("results/t.csv method=x|y task=a cols=diff digits=2", root)
    assert plain.splitlines()[2:] == ["| 0.01 |", "| -0.05 |"]


def test_values_in_prose_style(tiny):
    root, _ = tiny
    assert report.render_value("results/t.csv task=a method=y fmt=ci", root) == "−.046 [−.080, −.010]"
    assert report.render_value("results/t.csv task=a col=diff agg=min", root) == "−.046"
    assert report.render_value("results/t.csv task=a col=diff agg=range", root) == ".058"  # +.012 - (-.046)
    with pytest.raises(ValueError, match="agg must be"):
        report.render_value("results/t.csv task=a col=diff agg=mean", root)
    with pytest.raises(ValueError, match="2 rows match"):
        report.render_value("results/t.csv task=a col=diff", root)


def test_a_missing_results_file_is_an_error_naming_the_marker(tiny):
    root, page = tiny
    page.write_text("<!-- table: results/gone.csv -->\n<!-- /table -->\n")
    with pytest.raises(ValueError, match="results/gone.csv"):
        report.rewrite(page.read_text(), root)


def test_markers_in_a_code_block_are_examples_left_alone(tiny):
    root, _ = tiny
    text = "```markdown\n<!-- table: results/gone.csv -->\n<!-- /table -->\n```\n"
    assert report.rewrite(text, root) == text


def test_a_function_not_written_yet_is_said_not_hidden():
    text = report.render_table("tardiff.report:no_such_table")
    assert "Not generated yet" in text and "no_such_table" in text


def _run_folder(tmp_path, baselines=()):
    """A results folder with real, cfg, tardiff and the given baselines' TSTR, and paired rows against cfg
    (every method) and tardiff (the baselines): {method: (auroc, diff against cfg, its CI, diff against tardiff,
    its CI)}."""
    folder = tmp_path / "results" / "run"
    folder.mkdir(parents=True, exist_ok=True)
    methods = {"real": (.7,), "cfg": (.66,), "tardiff": (.63, -.03, (-.05, -.01)), **dict(baselines)}
    tstr = pd.DataFrame([{"task": "mortality", "method": m, "auroc_mean": v[0], "auroc_sd": .01, "auprc_mean": .2,
                          "auprc_sd": .01, "selected_from": "tardiff_dot" if m == "tardiff" else ""}
                         for m, v in methods.items()])
    paired = pd.DataFrame([{"task": "mortality", "method": m, "baseline": base, "metric": metric, "diff": d,
                            "ci_low": ci[0], "ci_high": ci[1], "downstream": "gru"}
                           for m, v in methods.items() if len(v) > 1
                           for base, d, ci in (("cfg", v[1], v[2]), ("tardiff", *v[3:5]))[:len(v) // 2]
                           for metric in ("auroc", "auprc")])
    tstr.to_csv(folder / "tstr.csv", index=False)
    paired.to_csv(folder / "paired.csv", index=False)
    return folder


def test_readme_glance_gives_every_paper_row_beside_the_papers_numbers(tmp_path):
    _run_folder(tmp_path)
    before = report.glance("mortality", "results/run", root=tmp_path).set_index("")
    timegan = before.loc["TimeGAN"]
    assert list(timegan.iloc[[0, 2]]) == ["not run"] * 2
    assert timegan.iloc[1] == "0.514 / 0.624"          # the paper's MIMIC-III / eICU mortality AUROC
    assert before.iloc[2, 4] == "-0.030 [-0.050, -0.010]"
    assert before.iloc[1, 1] == ""                      # cfg is not a row of the paper
    _run_folder(tmp_path, {"timegan": (.55, -.11, (-.14, -.08), -.08, (-.1, -.06)),
                           "timevae": (.60, -.06, (-.09, .01), -.03, (-.05, -.01))})
    after = report.glance("mortality", "results/run", root=tmp_path).set_index("")
    assert after.loc["TimeVAE"].iloc[0].startswith("0.600 ±") and after.loc["TimeVAE"].iloc[4].startswith("-0.060")


def test_verdict_names_the_baselines_beaten_with_a_paired_ci_above_zero(tmp_path):
    folder = _run_folder(tmp_path, {"timegan": (.55, -.11, (-.14, -.08), -.08, (-.1, -.06)),
                                    "timevae": (.60, -.06, (-.09, .01), .03, (.01, .05))})
    pd.DataFrame([{"dataset": "PhysioNet 2012 (ours)", "column": "mortality_auroc", "method": "tardiff",
                   "value": .63, "best_baseline": "timevae", "best_baseline_value": .6, "gain": .03,
                   "relative_gain_pct": 5.0}]).to_csv(folder / "margins.csv", index=False)
    table = report.verdict("results/run", root=tmp_path).set_index(["task", "metric"])
    auroc = table.loc[("mortality", "AUROC")]
    assert auroc["`cfg` against the five"] == "above 1 of 2 (TimeGAN +.110); below 0 (none); 1 inside the CI"
    assert auroc["`tardiff` against the five"] == "above 1 of 2 (TimeGAN +.080); below 1 (TimeVAE −.030); " \
                                                  "0 inside the CI"
    assert auroc.iloc[2] == "+5.0 % (best: TimeVAE)"
    assert table.loc[("long stay", "AUROC")].iloc[0] == "no baseline in this run"


def test_budget_table_says_how_trained_each_generator_is_and_what_is_not_run_yet(tmp_path):
    (tmp_path / "results" / "budget_curves").mkdir(parents=True)
    (tmp_path / "results" / "generator_benchmarks").mkdir(parents=True)
    pd.DataFrame([{"method": m, "unit": "step", "units_at_budget": n, "sample_cpu_s_per_1000": 1.0}
                  for m, n in (("cfg", 3000), ("timegan", 593), ("timevae", 256))]).to_csv(
        tmp_path / "results/budget_curves/budget.csv", index=False)
    pd.DataFrame([{"benchmark": "sines", "generator": "timegan (equal budget)", "discriminative": .2,
                   "discriminative_target": .031, "discriminative_met": False, "predictive": .097,
                   "predictive_target": .098, "predictive_met": True},
                  {"benchmark": "sines", "generator": "timevae (default profile)", "discriminative": .01,
                   "discriminative_target": .061, "discriminative_met": True, "predictive": .093,
                   "predictive_target": .098, "predictive_met": True}]).to_csv(
        tmp_path / "results/generator_benchmarks/benchmark.csv", index=False)
    table = report.equal_budget(root=tmp_path).set_index("generator")
    assert table.loc["timegan", "count"] == "593"
    assert table.loc["timegan", "Sines discriminative"] == "0.200 (bar ≤ 0.031, missed 6.5 ×)"
    assert table.loc["timegan", "Sines predictive"] == "0.097 (bar ≤ 0.098)"
    assert table.loc["timevae", "Sines predictive"] == "not run yet"   # another budget's row is not this one
    assert table.loc["cfg", "Sines discriminative"] == ""


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors of a markdown page."""
    return {re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
            for line in page.read_text().splitlines() if line.startswith("#")}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves_inside_the_repository(page):
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        assert resolved.is_relative_to(ROOT), f"{page.name}: {target} leaves the repository"
        assert resolved.exists(), f"{page.name}: {target} does not exist"
        if anchor and resolved.suffix == ".md":
            assert anchor in _anchors(resolved), f"{page.name}: {target}: no such heading"


def test_nothing_points_a_user_outside_the_repository():
    files = [*PAGES, *(ROOT / "tardiff").rglob("*.py"), *(ROOT / "notebooks").glob("*.py"),
             *(ROOT / "experiments").rglob("*.py"), *(ROOT / "benchmarks").glob("*.py"),
             *(ROOT / "data_preprocess").rglob("*.py")]
    found = [f"{f.relative_to(ROOT)}:{n}" for f in files
             for n, line in enumerate(f.read_text().splitlines(), 1) if OUTSIDE.search(line)]
    assert not found, f"these lines point at files a user does not have: {found}"
