#!/usr/bin/env bash
# The separate TensorFlow environment in which TimeGAN's and TimeVAE's authors' code runs (issue 29).
# TensorFlow is never a dependency of the package: this venv lives in .venv-tf/ (git-ignored) and only the
# fixture-writing side of experiments/authors_equivalence runs in it. Idempotent; safe to run twice at once.
#   bash experiments/authors_equivalence/tf_env.sh && .venv-tf/bin/python -m experiments.authors_equivalence ...
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=.venv-tf
exec 9>"/tmp/tardiff-venv-tf.lock"
flock 9
if [ ! -f "$VENV/.installed" ]; then
  python3.11 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  # TimeGAN's TF1 code runs under TF2's compat.v1 (2.15 is the last release with tf.compat.v1.layers on
  # Keras 2); TimeVAE's code is TF2 / Keras 2. numpy < 2 for TF 2.15.
  "$VENV/bin/python" -m pip install --quiet "tensorflow-cpu==2.15.1" "numpy<2" "pandas" "scikit-learn" "pyyaml"
  touch "$VENV/.installed"
fi
"$VENV/bin/python" -c "import tensorflow as tf, numpy; print('tensorflow', tf.__version__, 'numpy', numpy.__version__)"
