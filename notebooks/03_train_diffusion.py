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
# L1 loss, EMA weights), the backbone of `ddpm`, classifier guidance and `tardiff_uncond`; and one
# class-conditional model per task, trained with label dropout: TarDiff's backbone and the `cfg` baseline.
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
# ## The three models
# The unconditional DDPM is shared by every task (labels play no part in it); the class-conditional models
# are one per task. They are independent, so on a CPU they train at once, each in its own one-thread
# process (`pipeline.train_diffusion_models`): faster on 2 cores, and the same weights whatever the core count.

# %%
jobs = {paths["models"] / "ddpm.pt": (real_data.load_real(dataset, tasks[0], config, seed=seed).X_train, None)}
for task in tasks:
    real = real_data.load_real(dataset, task, config, seed=seed)
    jobs[paths["models"] / f"cfg_{task}.pt"] = (real.X_train, real.y_train)
histories = pipeline.train_diffusion_models(jobs, config, seed=seed, device=device)
plots.diffusion_loss(histories[paths["models"] / "ddpm.pt"]["loss"], Path(figures_dir) / "diffusion_loss.png",
                     loss_name=config.diffusion.loss.upper())

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
