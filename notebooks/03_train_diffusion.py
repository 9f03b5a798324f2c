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
# # 03 · The generative models
#
# An unconditional 1D-UNet DDPM on the real training stays (200 steps, linear betas 5e-4 → 0.1, ε-prediction,
# L1 loss, EMA weights), the backbone of `ddpm`, classifier guidance and `tardiff_uncond`; one
# class-conditional model per task, trained with label dropout: TarDiff's backbone and the `cfg` baseline;
# and per task the paper's five baseline generators (TimeGAN, TimeVAE, TimeVQVAE, Diffusion-TS, BioDiffusion;
# `tardiff.generators`), rebuilt from their authors' code, with the profile's settings for each.
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

from IPython.display import display

from tardiff import artifacts, pipeline, plots, real_data
from tardiff.config import get_profile, with_overrides

config = with_overrides(get_profile(profile), **overrides)
print(config.unet, config.diffusion, config.diffusion_train, sep="\n")
paths = pipeline.paths(outputs_dir)
dataset = dataset or paths["data"]
tasks = real_data.tasks_for(dataset, config.tasks)

# %% [markdown]
# ## The models
# The unconditional DDPM is shared by every task (labels play no part in it); the class-conditional models
# and the baseline generators are one per task. A generator its authors published without conditioning
# (TimeGAN, TimeVAE, Diffusion-TS) is trained once per label, on that label's stays; TimeVQVAE and
# BioDiffusion condition on the label themselves. The models are independent, so on a CPU they train at
# once, each in its own one-thread process (`pipeline.train_generative_models`): faster on 2 cores, and the
# same weights whatever the core count.

# %%
print(*(f"{name}: {getattr(config.generators, name)}" for name in config.batch_generators), sep="\n")
jobs = {artifacts.diffusion(paths["models"], "uncond", tasks[0]):
        ("diffusion", real_data.load_real(dataset, tasks[0], config, seed=seed).X_train, None)}
for task in tasks:
    real = real_data.load_real(dataset, task, config, seed=seed)
    jobs[artifacts.diffusion(paths["models"], "cond", task)] = ("diffusion", real.X_train, real.y_train)
    jobs |= {artifacts.generator(paths["models"], name, task): (name, real.X_train, real.y_train)
             for name in config.batch_generators}
histories = pipeline.train_generative_models(jobs, config, seed=seed, device=device)
plots.diffusion_loss(histories[artifacts.diffusion(paths["models"], "uncond", tasks[0])]["loss"],
                     Path(figures_dir) / "diffusion_loss.png", loss_name=config.diffusion.loss.upper())
display(pipeline.training_summary(histories))

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
