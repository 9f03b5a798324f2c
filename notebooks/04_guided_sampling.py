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
# # 04 · Sampling: unguided, classifier-free, classifier-guided and TarDiff
#
# Each method is one entry of `tardiff.methods.REGISTRY` and generates the real training set's count per
# label with the same 20-step DDIM sampler; only the backbone, the guidance hook and its reference differ.
# TarDiff samples from the class-conditional model (the checkpoint `cfg` uses, same cfg scale), conditioned
# on the target label, which is also the guidance target and the saved label: `cfg` is its scale-0 ablation.
# Influence guidance moves each predicted clean sample x̂0_i along ∇ of its influence score, exact per
# sample; the step is normalised, so the scale is a shift in model-space sd per value.
# Candidates (validation picks one in notebook 05) and ablations:

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

from tardiff import methods, pipeline, plots, real_data
from tardiff.config import get_profile, with_overrides

config = with_overrides(get_profile(profile), **overrides)
print(f"DDIM steps {config.sampling.ddim_steps}, eta {config.sampling.ddim_eta}; TarDiff scale {config.guidance_scale} "
      f"(strong {config.strong_guidance_scale}); classifier guidance {config.classifier_guidance_scale}; "
      f"cfg {config.sampling.cfg_scale}")
display(pd.DataFrame(methods.describe())[["name", "role", "backbone", "baseline", "guidance", "reference", "score",
                                          "scale", "about"]])
paths = pipeline.paths(outputs_dir)
dataset = dataset or paths["data"]
tasks = real_data.tasks_for(dataset, config.tasks)

# %%
for task in tasks:
    real = real_data.load_real(dataset, task, config, seed=seed)
    written = pipeline.sample_methods(real, config, paths["models"], paths["synthetic"] / task, seed=seed,
                                      device=device)
    # extra stays for augmentation beyond α = 1 (notebook 05 draws the selected candidate's once it is chosen)
    pipeline.sample_pools(real, config, paths["models"], paths["synthetic"] / task, pipeline.pooled_in_sampling(config),
                          seed=seed, device=device)
    X_syn, y_syn = pipeline.load_synthetic(written["tardiff_dot"])
    plots.trajectories(real.X_train, real.y_train, X_syn, y_syn, real.channels,
                       Path(figures_dir) / f"trajectories_{task}.png", preprocessor=real.preprocessor,
                       title=f"{task}: real vs TarDiff (tardiff_dot)")

# %% [markdown]
# ## Sanity check: what guidance does to one batch
# The same noise and labels through the backbone (`cfg`) and through `tardiff_dot`: influence on the held-out
# guidance folds should rise; f_θ's agreement with the labels and the shift from the backbone show the price.

# %%
for task in tasks:
    real = real_data.load_real(dataset, task, config, seed=seed)
    print(task)
    display(pipeline.guidance_sanity(real, config, paths["models"], seed=seed, device=device).round(4))
