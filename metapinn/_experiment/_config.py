"""The configuration of an experiment: every setting, checked, with the named workloads."""

import dataclasses
import json
import math
import os
import pathlib
import re
import typing
from typing import Any

import numpy as np

from .._meta._methods import METHODS


_W1_ALL = np.linspace(0.005, 0.05, 12)
W1_TRAIN_NUS = tuple(float(v) for v in _W1_ALL[::2])
W1_TEST_NUS = tuple(float(v) for v in _W1_ALL[1::2][:4])

LABELS = {
    "random": "Random init",
    "maml": "MAML",
    "fomaml": "First-order MAML",
    "reptile": "Reptile",
    "multitask": "Multi-task",
}
RESIDUAL_STRIDE = 2
"""The RMS residual is taken on every `RESIDUAL_STRIDE`-th point of the reference grid
in x and in t (128 x 51 of the 256 x 101 points): it needs second derivatives."""
DIVERGED = "diverged.json"
"""Written into a run's folder when its meta-training stopped on a non-finite loss."""
EVALUATION_KEYS = ("test_nus", "eval_steps", "eval_lr", "budget", "eps")
"""Settings that only change the evaluation, not the meta-training."""


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key and the value."""


def _field(default, help: str):
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Every setting of a meta-learning experiment; the defaults are workload W1.

    Construct it with keywords, from a dict ([`metapinn.ExperimentConfig.from_dict`][])
    or from a JSON file ([`metapinn.load_config`][]). Values are checked on
    construction.

    **Raises:** [`metapinn.ConfigError`][] naming the first bad value.
    """

    name: str = _field("W1", "label of the run (used in the default output folder name)")
    width: int = _field(32, "neurons per hidden layer")
    depth: int = _field(2, "number of hidden layers")
    dtype: str = _field("float32", "float dtype for training and adaptation: float32 or float64")
    n_interior: int = _field(200, "interior collocation points (PDE residual)")
    n_initial: int = _field(50, "collocation points on t = 0 (initial condition)")
    n_boundary: int = _field(20, "collocation points on each boundary x = -1, x = 1")
    points_seed: int = _field(0, "seed of the collocation points, drawn once for all methods")
    train_nus: tuple[float, ...] = _field(W1_TRAIN_NUS, "training viscosities")
    test_nus: tuple[float, ...] = _field(W1_TEST_NUS, "held-out viscosities for evaluation")
    methods: tuple[str, ...] = _field(
        ("maml", "fomaml", "reptile", "multitask"),
        "meta-learning methods: maml, fomaml, reptile, multitask",
    )
    inner_steps: int = _field(5, "inner-loop steps K (not used by multitask)")
    inner_optimizer: str = _field("sgd", "inner-loop optimiser: sgd or adam")
    inner_lr: float = _field(0.01, "inner-loop learning rate")
    outer_lr: float = _field(1e-3, "outer (meta) Adam learning rate")
    meta_steps: int = _field(500, "outer steps per method and seed")
    tasks_per_step: int = _field(6, "training tasks per outer step")
    seeds: tuple[int, ...] = _field((0, 1, 2), "seeds of the random initialisation")
    checkpoint_every: int = _field(100, "write a checkpoint every this many outer steps")
    eval_steps: tuple[int, ...] = _field(
        (0, 10, 20, 50, 100, 200, 500, 1000),
        "adaptation step counts k at which the few-shot curve is read",
    )
    eval_lr: float = _field(1e-3, "Adam learning rate of the few-shot adaptation")
    budget: int = _field(100, "the few-shot budget k of the results table (one of eval_steps)")
    eps: tuple[float, ...] = _field(
        (0.8, 0.6, 0.5, 0.4), "relative-L2 targets for the 'steps to eps' table"
    )

    def __post_init__(self):
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _coerce(f.name, f.type, getattr(self, f.name)))
        self._check()

    def _check(self):
        if not re.fullmatch(r"[A-Za-z0-9._-]+", self.name):
            _fail("name", self.name, "use letters, digits, '.', '_' or '-'")
        for key in ("width", "depth", "n_interior", "n_initial", "n_boundary"):
            _at_least(key, getattr(self, key), 1)
        for key in ("points_seed", "inner_steps", "meta_steps"):
            _at_least(key, getattr(self, key), 0)
        _at_least("checkpoint_every", self.checkpoint_every, 1)
        if self.dtype not in ("float32", "float64"):
            _fail("dtype", self.dtype, "choose float32 or float64")
        for key in ("train_nus", "test_nus"):
            values = getattr(self, key)
            if not values:
                _fail(key, values, "give at least one viscosity")
            for nu in values:
                if not (math.isfinite(nu) and nu > 0):
                    _fail(key, nu, "every viscosity nu must be finite and > 0")
        if not self.methods:
            _fail("methods", self.methods, f"choose one or more of {sorted(METHODS)}")
        for m in self.methods:
            if m not in METHODS:
                _fail("methods", m, f"unknown method; choose from {sorted(METHODS)}")
        if len(set(self.methods)) != len(self.methods):
            _fail("methods", self.methods, "a method is listed twice")
        if self.inner_optimizer not in ("sgd", "adam"):
            _fail("inner_optimizer", self.inner_optimizer, "choose sgd or adam")
        for key in ("inner_lr", "outer_lr", "eval_lr"):
            value = getattr(self, key)
            if not (math.isfinite(value) and value > 0):
                _fail(key, value, "a learning rate must be finite and > 0")
        if not 1 <= self.tasks_per_step <= len(self.train_nus):
            _fail(
                "tasks_per_step",
                self.tasks_per_step,
                f"must be between 1 and the number of training viscosities ({len(self.train_nus)})",
            )
        if not self.seeds:
            _fail("seeds", self.seeds, "give at least one seed")
        for s in self.seeds:
            _at_least("seeds", s, 0)
        if len(set(self.seeds)) != len(self.seeds):
            _fail("seeds", self.seeds, "a seed is listed twice")
        if not self.eval_steps:
            _fail("eval_steps", self.eval_steps, "give at least one step count")
        for k in self.eval_steps:
            _at_least("eval_steps", k, 0)
        if list(self.eval_steps) != sorted(set(self.eval_steps)):
            _fail("eval_steps", self.eval_steps, "must be strictly increasing")
        if self.budget not in self.eval_steps:
            _fail("budget", self.budget, f"must be one of eval_steps {list(self.eval_steps)}")
        if not self.eps:
            _fail("eps", self.eps, "give at least one target")
        for e in self.eps:
            if not (math.isfinite(e) and e > 0):
                _fail("eps", e, "a target must be finite and > 0")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ExperimentConfig":
        """Build a config from plain data (e.g. parsed JSON); missing keys take their
        defaults. **Raises:** [`metapinn.ConfigError`][] for unknown keys or bad values."""
        if not isinstance(data, dict):
            raise ConfigError(f"a config must be a JSON object, got {type(data).__name__}")
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(types))
        if unknown:
            raise ConfigError(
                f"unknown config key(s) {', '.join(map(repr, unknown))}; known keys: "
                + ", ".join(sorted(types))
            )
        return cls(**{k: _coerce(k, types[k], v) for k, v in data.items()})

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists for tuples), as stored in `config.json`."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    def replace(self, **changes) -> "ExperimentConfig":
        """A copy with some values changed (and checked)."""
        return self.from_dict({**self.to_dict(), **changes})


def _fail(key: str, value: Any, why: str) -> typing.NoReturn:
    raise ConfigError(f"config value {key}={value!r} is invalid: {why}")


def _at_least(key: str, value: int, low: int) -> None:
    if value < low:
        _fail(key, value, f"must be an integer >= {low}")


def _coerce(key: str, kind: Any, value: Any) -> Any:
    """Check the type of one value, turning lists into tuples and ints into floats."""
    if typing.get_origin(kind) is tuple:
        (item, _) = typing.get_args(kind)
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            _fail(key, value, f"expected a list of {item.__name__}")
        return tuple(_coerce(key, item, v) for v in value)
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            _fail(key, value, "expected an integer")
        return int(value)
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
            _fail(key, value, "expected a number")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            _fail(key, value, "expected a string")
        return value
    raise TypeError(f"unsupported config field type {kind!r}")  # pragma: no cover


def load_config(path: str | os.PathLike) -> ExperimentConfig:
    """Read an [`metapinn.ExperimentConfig`][] from a JSON file (missing keys take
    their defaults). **Raises:** [`metapinn.ConfigError`][] naming the file and the
    problem."""
    path = pathlib.Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"config file {path} is not valid JSON: {e}") from None
    try:
        return ExperimentConfig.from_dict(data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


QUICK = {
    "meta_steps": 20,
    "seeds": (0, 1),
    "checkpoint_every": 10,
    "eval_steps": (0, 10, 20, 50, 100),
    "budget": 10,
}
"""Overrides for a smoke run (`--quick`): a minute, not meaningful numbers."""


def quick(config: ExperimentConfig) -> ExperimentConfig:
    """`config` shrunk to a smoke run (see `QUICK`)."""
    return config.replace(**QUICK)
