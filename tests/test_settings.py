"""Every setting is checked against its declared range when its config is built: an impossible value is refused in
one line naming it, through every entry point, before any data is read (tardiff.settings)."""
from __future__ import annotations

import importlib
import inspect
import math
import pkgutil
import re
from dataclasses import dataclass, fields, is_dataclass, replace

import numpy as np
import pytest

import tardiff
from tardiff.augment import Mix
from tardiff.config import Profile, data_warnings, get_profile, parse_overrides, settings_table, with_overrides
from tardiff.settings import Range, SettingError, count, declaration_problems, each, number, one_of, optional


def _config_classes() -> list[type]:
    """Every dataclass of the package named *Config, those a profile holds (walked from Profile), and Mix: found by
    walking the package, so a new config is tested without being listed here."""
    found = {Profile, Mix}
    for info in pkgutil.walk_packages(tardiff.__path__, "tardiff."):
        if info.name == "tardiff.__main__":
            continue
        module = importlib.import_module(info.name)
        found |= {obj for _, obj in inspect.getmembers(module, inspect.isclass)
                  if is_dataclass(obj) and obj.__module__ == module.__name__ and obj.__name__.endswith("Config")}

    def walk(config):
        for f in fields(config):
            value = getattr(config, f.name)
            if is_dataclass(value):
                found.add(type(value))
                walk(value)

    walk(get_profile("default"))
    return sorted(found, key=lambda cls: (cls.__module__, cls.__name__))


CONFIGS = _config_classes()


def _built(cls: type):
    """A valid instance of `cls`: the default profile's own where it has one."""
    if cls is Profile:
        return get_profile("default")
    if cls is Mix:
        return Mix(sources=("cfg",), alpha=1.0)
    return cls()


def _impossible_fields():
    for cls in CONFIGS:
        for name, allowed in getattr(cls, "RANGES", {}).items():
            for bad in allowed.impossible():
                yield pytest.param(cls, name, bad, id=f"{cls.__name__}.{name}={bad!r}")


def _profile_settings(config=None, prefix: str = ""):
    """(dotted path, Range) of every declared setting a profile holds."""
    config = config if config is not None else get_profile("default")
    for f in fields(config):
        value = getattr(config, f.name)
        if is_dataclass(value):
            yield from _profile_settings(value, f"{prefix}{f.name}.")
        elif f.name in getattr(type(config), "RANGES", {}):
            yield f"{prefix}{f.name}", type(config).RANGES[f.name]


def _typed(value) -> str:
    """`value` as a user types it after --set (tuples comma-separated)."""
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def test_the_walk_finds_the_configs_of_every_part_of_the_package():
    names = {cls.__name__ for cls in CONFIGS}
    assert {"Profile", "SamplingConfig", "FieldMetricsConfig", "ClassifierConfig", "TrainConfig", "DiffusionConfig",
            "DiffusionTrainConfig", "UNetConfig", "EvalConfig", "FidelityConfig", "Mix", "TimeGANConfig",
            "TimeVAEConfig", "TimeVQVAEConfig", "DiffusionTSConfig", "BioDiffusionConfig"} <= names


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda cls: cls.__name__)
def test_every_numeric_field_declares_its_range(cls):
    assert declaration_problems(cls) == []


def test_an_undeclared_numeric_field_is_caught():
    @dataclass
    class NewConfig:
        steps: int = 3
        scale: float | None = None
        names: tuple = ()
        label: str = ""
        RANGES = {"steps": count(), "gone": count()}

    assert declaration_problems(NewConfig) == [
        "NewConfig.gone has a range but is not a field",
        "NewConfig.scale (float | None) declares no range in NewConfig.RANGES",
        "NewConfig.names (tuple) declares no range in NewConfig.RANGES"]


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda cls: cls.__name__)
def test_every_profile_and_default_config_is_valid(cls):
    _built(cls)
    for name in ("smoke", "default", "paper"):
        get_profile(name)


@pytest.mark.parametrize("cls, name, bad", list(_impossible_fields()))
def test_an_impossible_value_is_refused_in_one_line_naming_it(cls, name, bad):
    with pytest.raises(SettingError) as refused:
        replace(_built(cls), **{name: bad})
    message = str(refused.value)
    assert "\n" not in message
    assert message == f"setting '{cls.__name__}.{name}' must be {cls.RANGES[name].describe()}, got {bad!r}"


@pytest.mark.parametrize("path, allowed", list(_profile_settings()), ids=lambda p: p if isinstance(p, str) else "")
def test_set_and_overrides_name_the_dotted_setting(path, allowed):
    """As `--set`, papermill's `overrides` and the API hand them to with_overrides: strings, typed there."""
    for bad in allowed.impossible():
        with pytest.raises(ValueError, match=re.escape(repr(path))) as refused:
            with_overrides(get_profile("default"), **parse_overrides([f"{path}={_typed(bad)}"]))
        assert "\n" not in str(refused.value)


def test_optional_settings_still_take_none():
    profile = with_overrides(get_profile("smoke"), **parse_overrides(
        ["max_train_stays=none", "sampling.clip_x0=None", "generators.biodiffusion.max_steps=none"]))
    assert (profile.max_train_stays, profile.sampling.clip_x0, profile.generators.biodiffusion.max_steps) == \
        (None, None, None)


@pytest.mark.parametrize("overrides, message", [
    ({"sampling.ddim_steps": 500}, "'sampling.ddim_steps' must be an integer in 1..diffusion.timesteps"),
    ({"diffusion.beta_end": 1e-4}, "'diffusion.beta_end' must be a number in (0.0005, 1)"),
    ({"guide_classifier.rnn": "cnn"}, "'guide_classifier.rnn' must be one of 'gru', 'lstm'"),
    ({"augment_downstream": ("cnn",)}, "'augment_downstream' must be a tuple that includes 'gru'"),
    ({"generators.diffusion_ts.d_model": 30}, "'generators.diffusion_ts.d_model' must be even"),
    ({"generators.diffusion_ts.sampling_timesteps": 600}, "'generators.diffusion_ts.sampling_timesteps'"),
    ({"generators.biodiffusion.resnet_block_groups": 5}, "'generators.biodiffusion.resnet_block_groups'"),
    ({"generators.timevae.use_residual_conn": False}, "'generators.timevae.use_residual_conn'"),
])
def test_settings_that_cannot_run_together_are_refused_by_name(overrides, message):
    with pytest.raises(SettingError, match=re.escape(message)):
        with_overrides(get_profile("default"), **overrides)


def test_ranges_allow_and_refuse_what_they_say():
    unit = number(0, 1, high_open=True)
    assert unit.describe() == "a number in [0, 1)"
    assert [unit.allows(v) for v in (0, 0.5, 1, -0.1, math.nan, True, "0.5", None)] == \
        [True, True, False, False, False, False, False, False]
    steps = optional(count())
    assert steps.describe() == "an integer >= 1 or None"
    assert [steps.allows(v) for v in (1, np.int64(3), None, 0, 1.0, 2.5)] == [True, True, True, False, False, False]
    pairs = each(each(count(), length=2), min_items=1)
    assert pairs.allows(((3, 2),)) and pairs.allows([[3, 2]])
    assert not pairs.allows(()) and not pairs.allows(((3,),)) and not pairs.allows(((3, 0),))
    assert one_of("l1", "l2").describe() == "one of 'l1', 'l2'"
    for allowed in (unit, steps, pairs, one_of("l1", "l2"), number(0, low_open=True), number(-1, 1)):
        assert allowed.impossible() and not any(allowed.allows(v) for v in allowed.impossible())
    assert Range().impossible() == [math.nan, math.inf]  # an unbounded number refuses only the non-finite


def test_the_settings_table_lists_every_setting_with_its_range():
    table = settings_table()
    lines = table.strip().splitlines()
    assert lines[:2] == ["| setting | type | allowed | default |", "|---|---|---|---|"]
    paths = [line.split("|")[1].strip().strip("`") for line in lines[2:]]
    assert {path for path, _ in _profile_settings()} <= set(paths)
    iterations = get_profile("default").generators.timegan.iterations
    assert f"| `generators.timegan.iterations` | `int` | an integer >= 1 | `{iterations}` |" in lines
    assert "| `max_train_stays` | `int \\| None` | an integer >= 1 or None | `None` |" in lines
    assert all(line.count(" | ") == 3 for line in lines[2:])  # no unescaped `|` inside a cell


# ---- the entry points: one line, exit 2, before any data is read or anything written

def test_generate_refuses_before_reading_the_data(tmp_path, capsys):
    from tardiff.__main__ import main

    out = tmp_path / "new" / "syn.npz"
    code = main(["generate", "--dataset", str(tmp_path / "absent.npz"), "--method", "timegan", "--profile", "smoke",
                 "--out", str(out), "--set", "generators.timegan.iterations=-5"])
    err = capsys.readouterr().err
    assert code == 2
    assert err == "tardiff generate: setting 'generators.timegan.iterations' must be an integer >= 1, got -5\n"
    assert not out.parent.exists()  # nothing written, the absent dataset never opened


def test_reproduce_refuses_before_any_notebook(tmp_path, capsys):
    from tardiff.reproduce import main

    code = main(["--profile", "smoke", "--set", "sampling.ddim_eta=2", "--outputs", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip() == "[reproduce] setting 'sampling.ddim_eta' must be a number in [0, 1] (DDIM's sigma; above 1 " \
                          "the direction term is imaginary), got 2.0"
    assert not (tmp_path / "out").exists()


def test_the_api_refuses_when_built(tmp_path):
    from tardiff.api import TarDiff

    with pytest.raises(SettingError, match=r"^setting 'eval_train.batch_size' must be an integer >= 1, got 0$"):
        TarDiff("smoke", {"eval_train.batch_size": 0})


# ---- what can run but makes little sense is said, not refused

def test_data_warnings_name_what_the_data_makes_odd():
    profile = get_profile("default")
    y_train, y_val = np.r_[np.zeros(400), np.ones(60)].astype(int), np.r_[np.zeros(30), np.ones(8)].astype(int)
    assert data_warnings(profile, y_train, y_val) == []
    small = data_warnings(profile, y_train[:100].copy() | (np.arange(100) < 2), np.array([0, 0, 1, 0]))
    assert any("validation split has 4 stays (1 positive)" in w for w in small)
    assert any("influence_folds = 3" in w and "2 positive" in w for w in small)
    assert any("guide_train.batch_size = 256 is more than the 100 training stays" in w for w in small)
