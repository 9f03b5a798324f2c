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
# # 03 · The diffusion models
#
# An unconditional 1D-UNet DDPM on the real training stays (200 steps, linear betas 5e-4 → 0.1, ε-prediction,
# L1 loss, EMA weights): the model TarDiff guides. Beside it, for the classifier-free guidance baseline the
# original lacks, one class-conditional model per task, trained with label dropout.
# Training checkpoints as it goes and resumes from the last checkpoint when rerun.

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

from tardiff import pipeline, plots, real_data
from tardiff.config import get_profile, with_overrides

config = with_overrides(get_profile(profile), **overrides)
print(config.unet, config.diffusion, config.diffusion_train, sep="\n")
paths = pipeline.paths(outputs_dir)
dataset = dataset or paths["data"]
tasks = real_data.tasks_for(dataset, config.tasks)

# %% [markdown]
# ## Unconditional DDPM (shared by every task; labels play no part in it)

# %%
real = real_data.load_real(dataset, tasks[0], config, seed=seed)
model, history = pipeline.train_diffusion_model(real.X_train, None, config, paths["models"] / "ddpm.pt",
                                                seed=seed, device=device)
plots.diffusion_loss(history["loss"], Path(figures_dir) / "diffusion_loss.png",
                     loss_name=config.diffusion.loss.upper())

# %% [markdown]
# ## Class-conditional models for classifier-free guidance

# %%
for task in tasks:
    real = real_data.load_real(dataset, task, config, seed=seed)
    pipeline.train_diffusion_model(real.X_train, real.y_train, config, paths["models"] / f"cfg_{task}.pt",
                                   seed=seed, device=device)

# %% [markdown]
# ## A few generated stays beside real ones
# Eight class-conditional draws per label (unguided, the `cfg` backbone) against real training stays, in
# physical units where the preprocessing is known.

# %%
for task in tasks:
    real = real_data.load_real(dataset, task, config, seed=seed)
    X_gen, y_gen = pipeline.backbone_preview(real, config, paths["models"], n_per_label=8, seed=seed, device=device)
    plots.trajectories(real.X_train, real.y_train, X_gen, y_gen, real.channels,
                       Path(figures_dir) / f"generated_vs_real_{task}.png", preprocessor=real.preprocessor,
                       title=f"{task}: real vs class-conditional DDPM")
