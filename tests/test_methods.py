"""The method registry and the cross-fit folds the influence references are built on."""
import numpy as np
import pytest

from tardiff import methods, references
from tardiff.config import get_profile
from tardiff.generators import GENERATORS


def test_stratified_folds_spread_each_label_evenly():
    y = np.r_[np.zeros(301), np.ones(55)].astype(int)
    folds = references.stratified_folds(y, 3, seed=0)
    for label in (0, 1):
        counts = np.bincount(folds[y == label], minlength=3)
        assert counts.max() - counts.min() <= 1
    assert not np.array_equal(folds, references.stratified_folds(y, 3, seed=1))
    with pytest.raises(ValueError, match="at least 2 folds"):
        references.stratified_folds(y, 1)


def test_registry_is_consistent():
    profile = get_profile("default")
    for name, method in methods.REGISTRY.items():
        assert method.role in ("baseline", "candidate", "ablation")
        assert method.backbone in ("uncond", "cond") or method.backbone in GENERATORS, name
        if method.backbone in GENERATORS:  # a baseline generator: its own sampler, no guidance, its labels
            assert method.role == "baseline" and method.guidance is None and method.labels == "target", name
        assert method.baseline is None or method.baseline in methods.REGISTRY, name
        assert method.labels in ("target", "pseudo")
        assert methods.scale_of(method, profile) >= 0
        if method.role == "candidate":  # TarDiff's candidates share the original's class-conditional backbone
            assert method.backbone == "cond" and method.baseline == "cfg", name
    assert methods.SELECTED not in methods.REGISTRY  # `tardiff` names the validation-selected candidate
    assert methods.methods("candidate") and methods.methods("ablation")
    with pytest.raises(ValueError, match="registered"):
        methods.get_method("tardif")


def test_every_generator_is_a_baseline_row_and_needs_only_itself():
    for name in GENERATORS:
        assert methods.get_method(name).role == "baseline"
        assert methods.needs([name]) == {name}
    assert methods.needs(["tardiff_dot"]) == {"cond", "classifier", "references"}
    assert methods.needs(["ddpm"]) == {"uncond", "classifier"}   # f_theta pseudo-labels its stays
    assert methods.needs(["cfg"]) == {"cond"}
