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
# # 01 · From raw ICU records to model-ready stays
#
# PhysioNet/CinC Challenge 2012 (Silva et al., Computing in Cardiology 2012; ODC-BY 1.0): 4,000 ICU stays
# in set A and 4,000 in set B, one `Time,Parameter,Value` file per stay. We keep the first 24 hours in hourly
# bins of 8 channels (HR, SBP, DBP, MAP, RR, Temp, SaO2, Urine), with invasive blood pressure preferred and
# non-invasive as fallback, and fit imputation and scaling on the training split only.
# Set A (less a stratified 10 % validation split) trains; set B tests and is never used for model selection.

# %% tags=["parameters"]
profile = "default"
data_dir = ""        # PhysioNet 2012 archives; empty: TARDIFF_DATA_DIR, else download
dataset = ""         # an extracted .npz (MIMIC-III / eICU / your own) instead of PhysioNet 2012
outputs_dir = "outputs"
figures_dir = "figures"
seed = 0
device = "auto"
overrides = {}     # any profile setting, e.g. {"guidance_scale": 0.1, "eval_train.max_epochs": 10}

# %%
from pathlib import Path

from IPython.display import display

from tardiff import data, pipeline, plots, real_data
from tardiff.config import get_profile, with_overrides

print(with_overrides(get_profile(profile), **overrides))
data_out = Path(outputs_dir) / "data"
figures = Path(figures_dir)

# %% [markdown]
# ## Extraction
# A second run with unchanged archives and configuration reuses the cached arrays.

# %%
if dataset:
    sources = {Path(dataset).stem: Path(dataset)}
else:
    sources = data.extract(data.resolve_data_dir(data_dir or None), data_out, seed=seed)
    real_data.dataset_files(data_out)  # fails here, naming what is missing, not in notebook 02
    print((data_out / "manifest.json").read_text()[:3000])

# %% [markdown]
# ## The cohort
# Stays, outcome rates, and per channel the observed fraction and the mean ± sd by outcome (physical units).

# %%
overview, per_channel, cohorts = real_data.describe(sources)
display(overview)
display(per_channel.round(2))

# %% [markdown]
# ## Missingness and distributions
# Most channels are charted hourly, SaO2 (arterial blood gas) rarely; urine output is recorded as volumes.

# %%
for first_name, first in list(cohorts.items())[:1]:  # a user's own (X, y) file has no mask to show
    plots.missingness(first["mask"], first["channels"], figures / "missingness.png", title=first_name)
    plots.distributions_by_label(first["X_raw"], first["y_mortality"], first["channels"],
                                 figures / "distributions_by_label.png")
