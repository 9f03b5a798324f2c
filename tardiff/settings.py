"""What each setting may hold: declared once per config dataclass, checked whenever one is built.

A config lists its fields' ranges in a class attribute `RANGES` ({field: Range}) and calls `check(self)` from
`__post_init__`. Every way a setting arrives (a profile, `--set`, papermill's `overrides`, the API,
`dataclasses.replace`) builds the dataclass through `__init__`, so a value that cannot run stops there, in one
line, before any data is read or any model trained; `tardiff.config.with_overrides` puts the dotted name the user
typed (`generators.timegan.iterations`) into that line. `tardiff.config.settings_table` lists the ranges.
"""
from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass, fields


class SettingError(ValueError):
    """A setting outside its range: `setting 'generators.timegan.iterations' must be an integer >= 1, got -5`."""

    def __init__(self, owner: type, name: str, value, allowed: str, path: str | None = None):
        self.owner, self.name, self.value, self.allowed = owner, name, value, allowed
        self.path = path or f"{owner.__name__}.{name}"
        super().__init__(f"setting {self.path!r} must be {allowed}, got {value!r}")

    def at(self, prefix: str) -> "SettingError":
        """The same refusal named from the profile down: `at("generators.timegan.")`."""
        return SettingError(self.owner, self.name, self.value, self.allowed, prefix + self.name)


@dataclass(frozen=True)
class Range:
    """kind "number": between `low` and `high` (each closed unless `*_open`; `integer`: whole numbers only);
    "choice": one of `choices`; "text": any string; "tuple": a tuple (or list) whose items are each in `items`.
    `optional`: None (the setting is off) is allowed too; `why`: a reason shown with the range."""

    kind: str = "number"
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    choices: tuple = ()
    items: Range | None = None
    min_items: int = 0
    length: int | None = None
    optional: bool = False
    why: str = ""

    def allows(self, value) -> bool:
        if value is None:
            return self.optional
        if self.kind == "text":
            return isinstance(value, str)
        if self.kind == "choice":
            return isinstance(value, str) and value in self.choices
        if self.kind == "tuple":
            return (isinstance(value, (tuple, list)) and len(value) >= self.min_items
                    and (self.length is None or len(value) == self.length) and all(map(self.items.allows, value)))
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return False
        if (self.integer and not isinstance(value, numbers.Integral)) or not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return self.high is None or not (value > self.high or (self.high_open and value == self.high))

    def describe(self) -> str:
        """What the range allows, in words: `a number in (0, 1)`, `one of 'l1', 'l2'`, `... or None`."""
        if self.kind == "text":
            text = "text"
        elif self.kind == "choice":
            text = "one of " + ", ".join(map(repr, self.choices))
        elif self.kind == "tuple":
            text = f"a tuple of {self.length} items" if self.length else "a tuple"
            text += f" (at least {self.min_items})" if self.min_items else ""
            text += f" whose items are each {self.items.describe()}"
        else:
            text = "an integer" if self.integer else "a number"
            if self.low is not None and self.high is not None:
                text += (f" in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}"
                         f"{')' if self.high_open else ']'}")
            elif self.low is not None:
                text += f" {'>' if self.low_open else '>='} {self.low:g}"
            elif self.high is not None:
                text += f" {'<' if self.high_open else '<='} {self.high:g}"
        return text + (" or None" if self.optional else "") + (f" ({self.why})" if self.why else "")

    def impossible(self) -> list:
        """Values this range refuses, derived from its bounds: what the tests try on every field."""
        if self.kind == "text":
            return [1]
        if self.kind == "choice":
            return ["not-" + self.choices[0]]
        if self.kind == "tuple":
            bad = [(item,) * max(1, self.length or 0) for item in self.items.impossible()]
            return bad + ([()] if self.min_items or self.length else [])
        out = [] if self.integer else [math.nan, math.inf]
        if self.integer:
            out.append(1.5 if self.low is None or self.low < 1.5 else self.low + 0.5)
        step = 1 if self.integer else max(1.0, abs(self.low or 0), abs(self.high or 0))
        if self.low is not None:
            out.append(self.low if self.low_open else self.low - step)
        if self.high is not None:
            out.append(self.high if self.high_open else self.high + step)
        return out


# ---- the ranges configs declare

def count(low: int = 1, why: str = "") -> Range:
    """A whole number >= low (steps, epochs, seeds, sizes: >= 1 unless 0 means something)."""
    return Range(low=low, integer=True, why=why)


def number(low: float | None = None, high: float | None = None, low_open: bool = False, high_open: bool = False,
           why: str = "") -> Range:
    """A finite number within the bounds given (closed unless `*_open`)."""
    return Range(low=low, high=high, low_open=low_open, high_open=high_open, why=why)


def positive(why: str = "") -> Range:
    """A number > 0 (rates, scales that divide or multiply a step)."""
    return number(0, low_open=True, why=why)


def fraction(why: str = "") -> Range:
    """A probability that must leave something: [0, 1) (dropout, decay rates)."""
    return number(0, 1, high_open=True, why=why)


def one_of(*choices: str, why: str = "") -> Range:
    return Range(kind="choice", choices=tuple(choices), why=why)


def text() -> Range:
    return Range(kind="text")


def each(items: Range, min_items: int = 0, length: int | None = None, why: str = "") -> Range:
    """A tuple whose every item is in `items`."""
    return Range(kind="tuple", items=items, min_items=min_items, length=length, why=why)


def optional(inner: Range) -> Range:
    """`inner`, or None (the setting is off)."""
    return Range(**{**{f.name: getattr(inner, f.name) for f in fields(Range)}, "optional": True})


# ---- the one checker

def check(config) -> None:
    """Refuse the first field of `config` outside its declared range, naming it (call from `__post_init__`)."""
    for name, allowed in type(config).RANGES.items():
        value = getattr(config, name)
        if not allowed.allows(value):
            raise SettingError(type(config), name, value, allowed.describe())


def declaration_problems(cls: type) -> list[str]:
    """What `cls` leaves undeclared: a numeric or tuple field without a range, a range for no field."""
    names = {f.name for f in fields(cls)}
    declared = getattr(cls, "RANGES", {})
    problems = [f"{cls.__name__}.{name} has a range but is not a field" for name in sorted(set(declared) - names)]
    for f in fields(cls):
        kinds = set(re.findall(r"\w+", getattr(f.type, "__name__", str(f.type))))
        if kinds & {"int", "float", "tuple"} and f.name not in declared:
            problems.append(f"{cls.__name__}.{f.name} ({f.type}) declares no range in {cls.__name__}.RANGES")
    return problems
