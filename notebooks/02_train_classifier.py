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
# # 02 · The downstream classifier f_θ
#
# TarDiff steers generation with the gradients of a classifier trained on real stays: a bidirectional GRU,
# one logit, binary cross-entropy. One classifier per task (in-hospital mortality, stay longer than 14 days),
# trained on set A's training split and selected on its validation split. Set B is not touched here.
#
# Beside f_θ, the influence references TarDiff's variants guide with (`tardiff.references.build_references`):
# the training split is cut into K stratified folds; fold classifier k is trained on the other folds and its
# reference gradient G_k is the mean loss gradient over fold k, which it never saw (the paper's expected
# loss, estimated on held-out stays; every real stay contributes to one G). Per fold also (H + λI)⁻¹G_k
# (true influence), TracIn checkpoints of its training run with their own G, and a random unit G (a control).

# %% tags=["parameters"]
profile = "default"
data_dir = ""
dataset = ""         # empty: the PhysioNet 2012 arrays written by notebook 01
outputs_dir = "outputs"
figures_dir = "figures"
seed = 0
device = "auto"
overrides = {}     # any profile setting, e.g. {"guidance_scale": 0.1, "eval_train.max_epochs": 10}

# %%
from pathlib import Path

import pandas as pd
from IPython.display import display

from tardiff import pipeline, plots, real_data
from tardiff.config import get_profile, with_overrides

config = with_overrides(get_profile(profile), **overrides)
print(config.guide_classifier, config.guide_train, sep="\n")
paths = pipeline.paths(outputs_dir)
dataset = dataset or paths["data"]
tasks = real_data.tasks_for(dataset, config.tasks)

# %%
results = {}
for task in tasks:
    real = real_data.load_real(dataset, task, config, seed=seed)
    print(real.summary())
    model, history, validation = pipeline.train_guide_classifier(real, config, paths["models"], seed=seed,
                                                                 device=device)
    results[task] = {**validation, "best_epoch": history["best_epoch"], "epochs_run": history["epochs_run"]}
    plots.classifier_history(history, Path(figures_dir) / f"classifier_history_{task}.png", title=task)
    references = pipeline.build_references(real, config, paths["models"], seed=seed, device=device)
    results[task]["hinv_cg"] = [fold["hinv_info"] for fold in references["folds"]]

# %% [markdown]
# Validation performance of f_θ (the test set stays unseen until notebook 05), and the conjugate-gradient
# solves of (H + λI)⁻¹G per fold (iterations, relative residual, damping λ).

# %%
display(pd.DataFrame(results).T.round(3))
