# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · Evaluation: utility, fidelity, privacy
#
# Each synthetic set is judged by training a fresh downstream classifier on it: **TSTR** (synthetic only,
# test on real set B) and **TSRTR** (real + α × synthetic, α ∈ {0.2 … 1.0}). AUROC and AUPRC are mean ± sd
# over seeds; the seed-averaged predictions also get a bootstrap CI. The downstream model selects its epoch on
# the real validation loss (not the AUPRC of ~55 positives, whose noise would swamp the differences).
# Fidelity and privacy sit beside utility: a generator can win TSTR and still be easy to tell from real data.

# %% tags=["parameters"]
profile = "default"
data_dir = ""
dataset = ""
outputs_dir = "outputs"
figures_dir = "figures"
seed = 0
device = "auto"

# %%
from pathlib import Path

from IPython.display import Markdown, display

from tardiff import pipeline
from tardiff.config import get_profile

config = get_profile(profile)
print(config.eval_classifier, config.eval_train, f"seeds {config.n_seeds}, alphas {config.alphas}", sep="\n")
paths = pipeline.paths(outputs_dir)
dataset = dataset or paths["data"]
tasks = pipeline.tasks_for(dataset, config.tasks)

# %%
results = {}
for task in tasks:
    real = pipeline.load_real(dataset, task, config, seed=seed)
    results[task] = pipeline.evaluate_task(real, config, paths["synthetic"] / task, paths["models"], seed=seed,
                                           device=device)
    pipeline.plot_task(real, paths["synthetic"] / task, results[task], Path(figures_dir), seed=seed)
tables = pipeline.write_results(results, paths["tables"])

# %% [markdown]
# ## TSTR: train on synthetic, test on real

# %%
display(Markdown((paths["tables"] / "tstr.md").read_text()))

# %% [markdown]
# ## TSRTR: real + α × synthetic

# %%
display(Markdown((paths["tables"] / "tsrtr.md").read_text()))

# %% [markdown]
# ## Fidelity, privacy, the guidance-scale sweep, and what guidance optimises
# Discriminative score |accuracy − 0.5| (0 is best), predictive score (next-step MAE), marginal and
# autocorrelation distances; distance to the closest training record and membership-inference AUC (0.5: no leak).
# Diagnostics: the guiding classifier f_θ's AUROC against each set's target labels, and the mean influence
# score cos(g_i, G) that TarDiff's guidance ascends. Guidance can raise both and still not help a fresh model.

# %%
for name in ("fidelity", "privacy", "sweep", "diagnostics"):
    display(tables[name].round(3))
