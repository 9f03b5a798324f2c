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
# Each method generates the real training set's count per label with the same 20-step DDIM sampler; only the
# guidance function differs. TarDiff's guidance, for each sample i with target label y_i, is the gradient with
# respect to the predicted clean sample x̂0_i of the cosine between ∇θ ℓ(f_θ(x̂0_i), y_i) and the normalised
# training-set gradient G: exact per sample and vectorised over the batch. The unguided DDPM has no label,
# so f_θ labels its samples, rank-matched to the real prevalence.

# %% tags=["parameters"]
profile = "default"
data_dir = ""
dataset = ""         # empty: the PhysioNet 2012 arrays written by notebook 01
outputs_dir = "outputs"
figures_dir = "figures"
seed = 0
device = "auto"

# %%
from pathlib import Path

from tardiff import pipeline, plots
from tardiff.config import get_profile

config = get_profile(profile)
print(f"DDIM steps {config.ddim_steps}, eta {config.ddim_eta}; TarDiff scale {config.guidance_scale}, "
      f"sweep {config.sweep_scales}; classifier guidance {config.classifier_guidance_scale}; cfg {config.cfg_scale}")
paths = pipeline.paths(outputs_dir)
dataset = dataset or paths["data"]
tasks = pipeline.tasks_for(dataset, config.tasks)

# %%
for task in tasks:
    real = pipeline.load_real(dataset, task, config, seed=seed)
    written = pipeline.sample_methods(real, config, paths["models"], paths["synthetic"] / task, seed=seed,
                                      device=device)
    X_syn, y_syn = pipeline.load_synthetic(written["tardiff"])
    plots.trajectories(real.X_train, real.y_train, X_syn, y_syn, real.channels,
                       Path(figures_dir) / f"trajectories_{task}.png", preprocessor=real.preprocessor,
                       title=f"{task}: real vs TarDiff")
