"""Typed notebook parameters: each stage's config dataclass declares every parameter once.

A stage config is a dataclass whose fields are exactly its notebook's `parameters` cell (names and
defaults; a test keeps the two equal), each declared with `param(default, doc, ...)`: its type
(from the default unless given), range, allowed values, and whether it names another stage's
directory. `check` validates a whole parameter dict and returns one-line problems; the runner
calls it for every job before the first stage starts, and `from_params` (in the notebook) raises
on the first one, so a bad value never reaches torch.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

BASE_MODELS = ("smollm2-135m", "tiny-random", "tiny-llama")  # built-in base LLMs (`recnb.llm.load_base`)
VARIANT = re.compile(r"[A-Za-z0-9_.]*")

# What a `ref` parameter names: a finished stage dir of the same run (05's sft_dir, 07's ppo_dir),
# or the `models` mapping of 06 (label -> "sasrec", "popularity", "base" or a stage dir).
REF_STAGE_DIR = "stage_dir"
REF_MODELS = "models"
MODEL_SOURCES = ("sasrec", "popularity", "base")  # 06's model sources that are not stage dirs


@dataclass(frozen=True)
class Spec:
    """The declaration of one parameter (see `param`)."""

    doc: str
    types: tuple[type, ...]
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    choices: tuple | None = None
    items: tuple | None = None  # allowed values of the elements of a list parameter
    ref: str | None = None
    nonempty: bool = False
    hi_open: bool = False

    def problem(self, value: Any) -> str | None:
        """Why `value` is not allowed ("" -> fine), phrased to follow "<key> = <value>"."""
        if not _is_type(value, self.types):
            return f"must be {_type_names(self.types)}, got {type(value).__name__}"
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if isinstance(value, float) and not math.isfinite(value):
                return "must be a finite number"
            if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
                return f"must be {'>' if self.lo_open else '>='} {self.lo:g}"
            if self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi):
                return f"must be {'<' if self.hi_open else '<='} {self.hi:g}"
        if self.choices is not None and not _in(value, self.choices):
            return f"must be one of {', '.join(map(repr, self.choices))}"
        if self.items is not None and isinstance(value, list):
            bad = [v for v in value if v not in self.items]
            if bad:
                return f"has {bad[0]!r}; its elements must be among {', '.join(map(repr, self.items))}"
        if self.nonempty and not value:
            return "must not be empty"
        return None


def param(default: Any, doc: str, *, types: type | tuple[type, ...] | None = None, lo: float | None = None,
          hi: float | None = None, lo_open: bool = False, hi_open: bool = False, choices: tuple | None = None,
          items: tuple | None = None, ref: str | None = None, nonempty: bool = False) -> Any:
    """A config field with its declaration.

    Args:
        default: the notebook's default (the tiny CI config); mutable defaults are copied per instance.
        doc: what it means, in the words of the notebook's comment.
        types: allowed Python types (default: the default's type; an int default also accepts
            nothing but int, a float default accepts int too).
        lo, hi: inclusive bounds (`lo_open` / `hi_open`: strict).
        choices: the allowed values.
        items: the allowed elements of a list value.
        ref: `REF_STAGE_DIR` or `REF_MODELS`: the value names stage dirs, checked by the runner.
    """
    if types is None:
        types = (float, int) if isinstance(default, float) else (type(default),)
    elif not isinstance(types, tuple):
        types = (types,)
    spec = Spec(doc, types, lo, hi, lo_open, choices, items, ref, nonempty, hi_open)
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"spec": spec})
    return field(default=default, metadata={"spec": spec})


class ParamsError(ValueError):
    """Parameters that cannot run; the message names the file or block, the key, the value and the fix."""


@dataclass
class StageConfig:
    """Parameters every stage notebook has; a stage's config subclasses it and adds its own."""

    STAGE: ClassVar[str] = ""

    run: str = param("tiny", "run name: outputs go to <outputs_dir>/<run>/", nonempty=True)
    outputs_dir: str = param("outputs", "relative to the repository root", nonempty=True)
    dataset: str = param("tiny", "must match 01_data_duckdb/stats.json",
                         choices=("tiny", "ml-100k", "steam", "movies_tv"))
    seed: int = param(0, "python, numpy and torch seed", lo=0)
    threads: int = param(1, "torch threads; 0: every core this process may use", lo=0)

    def __post_init__(self) -> None:
        problems = self.check(dataclasses.asdict(self))
        if problems:
            raise ParamsError(f"{self.STAGE}: {problems[0]}")

    @classmethod
    def specs(cls) -> dict[str, Spec]:
        """Every parameter's declaration, in field order."""
        return {f.name: f.metadata["spec"] for f in dataclasses.fields(cls)}

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every parameter's default value."""
        return {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
                for f in dataclasses.fields(cls)}

    @classmethod
    def check(cls, values: Mapping[str, Any]) -> list[str]:
        """One line per problem in `values` (unknown keys included); empty when all is well."""
        specs = cls.specs()
        problems = [f"{key} is not a parameter of {cls.STAGE} (its parameters: {', '.join(specs)})"
                    for key in values if key not in specs]
        for key, value in values.items():
            if key in specs and (why := specs[key].problem(value)):
                problems.append(f"{key} = {value!r} {why}")
        if problems:  # the checks between parameters assume each one is well typed
            return problems
        return cls.check_together({**cls.defaults(), **values})

    @classmethod
    def check_together(cls, values: Mapping[str, Any]) -> list[str]:
        """Problems between parameters (a stage overrides this); `values` has every parameter."""
        return []

    @classmethod
    def from_params(cls, params: Mapping[str, Any]):
        """The config of a notebook's parameters (other keys ignored), raising `ParamsError` on the first problem."""
        return cls(**{k: v for k, v in params.items() if k in cls.specs()})

    def to_dict(self) -> dict[str, Any]:
        """Field name -> value (what `params.json` records)."""
        return dataclasses.asdict(self)


def _is_type(value: Any, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool) and bool not in types:
        return False  # True is an int to Python, not to a params file
    return isinstance(value, types)


def _type_names(types: tuple[type, ...]) -> str:
    names = {float: "a number", int: "an integer", str: "a string", bool: "true or false", list: "a list",
             dict: "a mapping", type(None): "null"}
    return " or ".join(names.get(t, t.__name__) for t in types if not (t is int and float in types))


def _in(value: Any, choices: tuple) -> bool:
    try:
        return value in choices
    except TypeError:  # unhashable values in a tuple of strings
        return False


def base_model_problem(name: str) -> str | None:
    """Why `name` cannot be a base model: a built-in name, an existing local folder, or a Hub id
    (`org/name`, which needs Hub access at run time) are accepted."""
    from pathlib import Path

    if name in BASE_MODELS or Path(name).expanduser().is_dir() or re.fullmatch(r"[\w.-]+/[\w.-]+", name):
        return None
    return (f"base_model = {name!r} is neither a built-in model ({', '.join(BASE_MODELS)}), an existing "
            "local folder, nor a Hugging Face id (org/name)")


def tasks_problem(value: str | list, allowed: tuple[str, ...]) -> str | None:
    """Why a `tasks` value selects nothing valid: "all", or names/prefixes of `allowed` tasks."""
    if value == "all":
        return None
    wanted = [value] if isinstance(value, str) else value
    bad = [t for t in wanted if not isinstance(t, str) or not any(a == t or a.startswith(t) for a in allowed)]
    if bad or not wanted:
        return (f"tasks = {value!r}: use \"all\" or a list of tasks or prefixes of {', '.join(allowed)}"
                + (f" ({bad[0]!r} matches none)" if bad else ""))
    return None


def variant_problem(value: str) -> str | None:
    """Why a stage variant name cannot be a directory suffix."""
    if not VARIANT.fullmatch(value):
        return f"variant = {value!r} must be letters, digits, '_' or '.'"
    return None
