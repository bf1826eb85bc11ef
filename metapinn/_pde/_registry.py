"""The PDE families by name, and what an experiment needs of each: its tasks, the
conditioned network's input, the nearest training task, labels and the reference.

`metapinn families` lists them; `metapinn reproduce --family NAME` runs one.
"""

import dataclasses
import hashlib
import importlib
import importlib.util
import math
import os
import pathlib
import sys
import typing
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import PyTree

from .._conditioned import LogScaledFeature, ScaledFeature
from ._allen_cahn import AllenCahn, AllenCahnTask
from ._base import AbstractPDE
from ._burgers import Burgers, BurgersTask
from ._burgers_random_ic import (
    RANDOM_IC_MODES,
    BurgersRandomIC,
    RandomICTask,
    random_initial_conditions,
)
from ._convection import Convection, ConvectionTask
from ._heat import Heat, HeatTask
from ._reference_cache import cached_family_reference
from ._wave import Wave, WaveTask


def _geometric_split(low: float, high: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Standard training and held-out values over `[low, high]`: 11 points spaced
    geometrically, the 6 of even index for training (both ends among them), and
    those of index 1, 3, 7, 9 held out (two in each half of the range), each rounded
    to 4 significant digits."""
    grid = [float(f"{v:.4g}") for v in np.geomspace(low, high, 11)]  # 4 significant digits
    return tuple(grid[::2]), tuple(grid[i] for i in (1, 3, 7, 9))


_W1_ALL = np.linspace(0.005, 0.05, 12)
_BURGERS_VALUES = (
    tuple(float(v) for v in _W1_ALL[::2]),
    tuple(float(v) for v in _W1_ALL[1::2][:4]),
)
"""W1's viscosities (docs/design.md §3): 12 evenly spaced, the even ones for training,
the first four odd ones held out."""


def _check_family(fam: "Family") -> None:
    """The checks of [`metapinn.Family`][] on construction."""

    def bad(field: str, value: Any, why: str) -> typing.NoReturn:
        raise ValueError(f"Family {fam.name!r}: {field}={value!r} is invalid: {why}")

    if not isinstance(fam.name, str) or not fam.name or ":" in fam.name:
        bad("name", fam.name, "give a non-empty name without ':'")
    for field in ("pde", "task"):
        if not callable(getattr(fam, field)):
            bad(field, getattr(fam, field), "must be callable (a class)")
    if dataclasses.is_dataclass(fam.task):
        names = [f.name for f in dataclasses.fields(fam.task)]
        if fam.parameter not in names:
            kind = getattr(fam.task, "__name__", repr(fam.task))
            bad("parameter", fam.parameter, f"the task type {kind} has the fields {names}")
    if fam.draw is None:
        if fam.train_range is not None:
            try:
                low, high = (float(v) for v in fam.train_range)
            except (TypeError, ValueError):
                bad("train_range", fam.train_range, "give two numbers (low, high)")
            if not (math.isfinite(low) and math.isfinite(high) and 0 < low < high):
                bad("train_range", fam.train_range, "needs finite 0 < low < high")
        for field in ("train_values", "test_values"):
            values = getattr(fam, field)
            try:
                numbers = [float(v) for v in values]
            except (TypeError, ValueError):
                numbers = []
            if not numbers or not all(math.isfinite(v) and v > 0 for v in numbers):
                bad(field, values, "a scalar family needs standard values, finite and > 0 "
                    "(the conditioned network takes their log)")  # fmt: skip
    else:
        for field in ("n_train", "n_test", "function_conditions"):
            value = getattr(fam, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                bad(field, value, "a function family needs an integer >= 1")
        if fam.function_features is None:
            bad("function_features", None, "a function family needs its conditioned input")
    if fam.harder not in ("larger", "smaller"):
        bad("harder", fam.harder, "choose 'larger' or 'smaller'")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Family:
    """A PDE family of docs/design.md §2 as the library and the experiment know it.

    A family's tasks are either one scalar parameter (`parameter`, a field of its
    task type, with standard training and held-out values), or functions drawn at
    random (`draw`, e.g. F6's initial conditions, `n_train` and `n_test` of them).

    **Fields:** each is documented below, given by keyword; the first seven are
    required, the rest have defaults. A frozen dataclass, checked on construction.
    The standard families are in [`metapinn.FAMILIES`][]; a family of your own is
    named `MODULE:ATTR` in a config or on the command line (see
    [`metapinn.family`][]).

    **Raises:** `ValueError` naming the field: an empty name, a `parameter` that is not
    a field of the task type (a misspelt name), a bad training range, a scalar family
    without training or held-out values, or a function family without its sampler's
    counts or its conditioned input.
    """

    name: str
    """Its name on the command line."""
    design: str
    """Its label in docs/design.md §2 (F1–F6)."""
    pde: Callable[[], AbstractPDE]
    """Makes the family's PDE with its default domain, e.g. `Burgers`."""
    task: Callable[..., Any]
    """The task type, e.g. `BurgersTask`."""
    parameter: str
    """The field of the task a scalar family varies (`nu`, `kappa`, ...); for a
    function-valued family, the field holding the function's coefficients."""
    train_range: tuple[float, float] | None
    """The training range of a scalar parameter (docs/design.md §2); `None` for a function."""
    truth: str
    """What results are judged against."""
    train_values: tuple[float, ...] = ()
    """A scalar family's standard training values."""
    test_values: tuple[float, ...] = ()
    """A scalar family's standard held-out values."""
    draw: Callable[[jax.Array, int], PyTree] | None = None
    """A function-valued family's sampler: `draw(key, n)` is a batch of `n` tasks."""
    n_train: int = 0
    """A function-valued family's standard number of training tasks."""
    n_test: int = 0
    """A function-valued family's standard number of held-out tasks."""
    describes: str = ""
    """What a task varies, in words (for `metapinn families` and the reports)."""
    function_features: Callable[[], Callable[[PyTree], jax.Array]] | None = None
    """A function-valued family's conditioned-network input (e.g. its coefficients
    scaled to order one), made by calling this."""
    function_conditions: int = 0
    """The number of inputs `function_features` gives."""
    label: str = "task"
    """A function-valued family's task label: `u0 #2` for F6."""
    own_reference: Callable[[PyTree, np.ndarray, np.ndarray], np.ndarray] | None = None
    """A family whose references have a cache of their own (Burgers); the others use
    [`metapinn.cached_family_reference`][]."""
    harder: str = "larger"
    """Which values of a scalar parameter are the harder tasks for a PINN, `"larger"`
    (default: a faster wave or convection) or `"smaller"` (a lower viscosity or
    interface width, a sharper front): the direction a curriculum goes
    ([`metapinn.Family.curriculum`][])."""

    def __post_init__(self):
        _check_family(self)

    @property
    def scalar(self) -> bool:
        """Whether a task is one scalar parameter (else a drawn function)."""
        return self.draw is None

    def tasks(self, values: tuple[float, ...] = (), count: int = 0, seed: int = 0, *,
              held_out: bool = False, dtype: Any = None) -> PyTree:  # fmt: skip
        """A batch of the family's tasks in `dtype` (default: the default float dtype):
        for a scalar family, one per value of `values`; for a function-valued one,
        `count` tasks drawn from the stream `seed` (the training tasks from one
        sub-stream, the held-out ones, `held_out`, from another).

        **Raises:** what the task type raises for bad values (e.g. `ValueError` for a
        viscosity that is not finite and > 0).
        """
        dtype = jnp.zeros(()).dtype if dtype is None else jnp.dtype(dtype)
        if self.scalar:
            return self.task(jnp.asarray(values, dtype=dtype))
        assert self.draw is not None
        tasks = self.draw(jr.fold_in(jr.key(seed), int(held_out)), count)
        return jax.tree_util.tree_map(lambda a: a.astype(dtype), tasks)

    def values(self, tasks: PyTree) -> np.ndarray:
        """The field `parameter` of a batch of tasks in float64: `(B,)` for a scalar
        family, `(B, K)` for a function's coefficients."""
        return np.asarray(getattr(tasks, self.parameter), dtype=np.float64)

    def features(self, train_values: np.ndarray) -> Callable[[PyTree], jax.Array]:
        """The conditioned network's input for a task: a scalar parameter on a log
        scale, `[-1, 1]` over the range of `train_values` (the training values, in
        float64; a factor of 2 either side of a single one), or a function family's
        `function_features`."""
        if not self.scalar:
            assert self.function_features is not None
            return self.function_features()
        values = np.asarray(train_values, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        if high == low:
            low, high = low / 2, high * 2
        return LogScaledFeature(low, high, self.parameter)

    def n_conditions(self) -> int:
        """The number of inputs `features` gives the conditioned network."""
        return 1 if self.scalar else self.function_conditions

    def nearest(self, train_values: np.ndarray, test_values: np.ndarray) -> tuple[int, ...]:
        """For each held-out task, the index of the nearest training task: in log of a
        scalar parameter, in the L2 distance of a function's coefficients (for sine
        coefficients, the L2 distance of the functions, by Parseval). Ties, to a
        relative 1e-9 (a held-out value at a geometric midpoint), go to the lower
        index. This is the task a transfer baseline trains on.

        **Arguments:** the parameter values of the training and held-out tasks in
        float64 (see `values`), `(N,)` or `(N, K)`."""
        train = np.asarray(train_values, dtype=np.float64)
        test = np.asarray(test_values, dtype=np.float64)
        if self.scalar:
            train, test = np.log(train)[:, None], np.log(test)[:, None]
        distance = np.linalg.norm(test[:, None, :] - train[None, :, :], axis=-1)
        best = distance.min(axis=1, keepdims=True)
        ties = distance <= best * (1 + 1e-9) + 1e-300
        return tuple(int(np.flatnonzero(row)[0]) for row in ties)

    def curriculum(
        self, train_values: np.ndarray, test_values: np.ndarray
    ) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """A curriculum over the training tasks (Krishnapriyan et al. 2021): trained one
        after another from the easiest value towards the harder ones (`harder`), each
        warm-started from the one before; a held-out task then starts from the hardest
        training task that is no harder than it (the next easier value; the easiest
        where it is easier than them all).

        **Arguments:** the scalar parameter values of the training and held-out tasks.

        **Returns:** `(chain, sources)`: the training tasks' indices in the order they
        are trained (the easiest first, up to the hardest any held-out task needs),
        and for each held-out task the index of its training task.

        **Raises:** `ValueError` for a family of drawn functions (not ordered)."""
        if not self.scalar:
            raise ValueError(
                f"family {self.name!r} is not ordered by a scalar parameter: a curriculum needs one"
            )
        sign = 1.0 if self.harder == "larger" else -1.0
        hardness = sign * np.log(np.asarray(train_values, dtype=np.float64).reshape(-1))
        order = [int(i) for i in np.argsort(hardness, kind="stable")]
        sources = []
        for v in np.asarray(test_values, dtype=np.float64).reshape(-1):
            easier = [i for i in order if hardness[i] <= sign * np.log(v) + 1e-9]
            sources.append(easier[-1] if easier else order[0])
        last = max(order.index(i) for i in sources)
        return tuple(order[: last + 1]), tuple(sources)

    def labels(self, values: np.ndarray) -> list[str]:
        """A short label per task, from its parameter values (see `values`):
        `nu=0.0091`, or `u0 #2` for a drawn function."""
        if self.scalar:
            return [f"{self.parameter}={v:.4g}" for v in np.asarray(values).reshape(-1)]
        return [f"{self.label} #{i}" for i in range(len(values))]

    def reference(self, tasks: PyTree, x: Any = None, t: Any = None) -> np.ndarray:
        """The reference solution of each task of the batch `tasks` on the grid (the
        standard one by default, made in float64), float64 `(B, len(t), len(x))`, from
        the disk cache where it is there."""
        pde = self.pde()
        standard_x, standard_t = pde.standard_axes()
        x = standard_x if x is None else np.asarray(x, np.float64)
        t = standard_t if t is None else np.asarray(t, np.float64)
        if self.own_reference is not None:
            return self.own_reference(tasks, x, t)
        return cached_family_reference(pde, tasks, x, t)


def _burgers_reference(tasks: BurgersTask, x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Burgers' references from its own cache (keyed by the viscosity)."""
    from ._burgers._reference_cache import cached_burgers_reference

    return cached_burgers_reference(np.asarray(tasks.nu, dtype=np.float64), x, t)


def _coefficient_features() -> ScaledFeature:
    """F6's conditioned input: the coefficients `a_k` times `k`, of order one (before
    the bound on max |u0|, `a_k ~ N(0, 1/k^2)`)."""
    return ScaledFeature(1.0 / np.arange(1, RANDOM_IC_MODES + 1), "coefficients")


def _random_ics(key: jax.Array, n: int) -> RandomICTask:
    """`n` random initial conditions of F6 at its standard viscosity, 0.01, drawn in
    float32 (the same with or without `jax_enable_x64`)."""
    a = random_initial_conditions(key, n, draw_dtype=jnp.float32)
    return RandomICTask(a, jnp.full((n,), 0.01, dtype=a.dtype))


_HEAT = _geometric_split(0.01, 0.5)
_WAVE = _geometric_split(0.5, 2.0)
_CONVECTION = _geometric_split(1.0, 40.0)
_ALLEN_CAHN = _geometric_split(1e-4, 1e-2)


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            name="burgers", design="F1", pde=Burgers, task=BurgersTask, parameter="nu",
            train_range=(0.005, 0.05),
            truth="spectral reference (diffrax), verified against Cole-Hopf",
            train_values=_BURGERS_VALUES[0], test_values=_BURGERS_VALUES[1],
            describes="the viscosity nu", own_reference=_burgers_reference,
            harder="smaller",
        ),
        Family(
            name="heat", design="F2", pde=Heat, task=HeatTask, parameter="kappa",
            train_range=(0.01, 0.5), truth="exact sine series; spectral reference (diffrax)",
            train_values=_HEAT[0], test_values=_HEAT[1],
            describes="the diffusivity kappa",
        ),
        Family(
            name="wave", design="F3", pde=Wave, task=WaveTask, parameter="c",
            train_range=(0.5, 2.0), truth="exact modal solution; spectral reference (diffrax)",
            train_values=_WAVE[0], test_values=_WAVE[1],
            describes="the wave speed c",
        ),
        Family(
            name="convection", design="F4", pde=Convection, task=ConvectionTask,
            parameter="beta", train_range=(1.0, 40.0),
            truth="exact u0(x - beta t); spectral reference (diffrax)",
            train_values=_CONVECTION[0], test_values=_CONVECTION[1],
            describes="the speed beta",
        ),
        Family(
            name="allen-cahn", design="F5", pde=AllenCahn, task=AllenCahnTask,
            parameter="epsilon", train_range=(1e-4, 1e-2),
            truth="Fourier spectral reference (diffrax), self-converged under refinement",
            train_values=_ALLEN_CAHN[0], test_values=_ALLEN_CAHN[1],
            describes="the diffusivity epsilon", harder="smaller",
        ),
        Family(
            name="burgers-random-ic", design="F6", pde=BurgersRandomIC, task=RandomICTask,
            parameter="coefficients", train_range=None,
            truth="Cole-Hopf by quadrature; spectral reference (diffrax)",
            draw=_random_ics, n_train=48, n_test=4, function_features=_coefficient_features,
            function_conditions=RANDOM_IC_MODES, label="u0",
            describes="the initial condition u0 = sum of 8 sine modes, a_k ~ N(0, 1/k^2), "
            "scaled to max abs u0 <= 1; nu = 0.01",
        ),
    )
}  # fmt: skip
"""Every family with verified truth, by name."""


def family(name: str) -> Family:
    """The family called `name`: a standard one, or one of your own as `MODULE:ATTR`.

    **Arguments:** `name`, a key of [`metapinn.FAMILIES`][] (e.g. `"burgers"`), or
    `MODULE:ATTR` naming a [`metapinn.Family`][] in your own code: `MODULE` a module
    importable from the working directory (`my_families`, `pkg.families`) or the path
    of a `.py` file (`families/drift.py`), `ATTR` the family's name in it.

    **Returns:** its [`metapinn.Family`][].

    **Raises:** `ValueError` for an unknown name (naming the known ones), a module or
    file that cannot be imported, an attribute it lacks, or one that is not a `Family`.
    """
    if name in FAMILIES:
        return FAMILIES[name]
    if ":" in name:
        return _imported_family(name)
    raise ValueError(
        f"unknown family {name!r}; choose one of {sorted(FAMILIES)}, or give MODULE:ATTR "
        "for a family of your own"
    )


_IMPORTED: dict[str, Family] = {}


def _imported_family(name: str) -> Family:
    """`MODULE:ATTR` imported (a file once per process, by its resolved path) and
    checked."""
    source, _, attr = name.rpartition(":")
    if not source or not attr:
        raise ValueError(f"family {name!r}: give MODULE:ATTR, e.g. my_families.py:DRIFT")
    is_file = source.endswith(".py") or os.sep in source or "/" in source
    path = pathlib.Path(source).resolve() if is_file else None
    key = f"{path if path is not None else source}:{attr}"
    if key in _IMPORTED and source != "__main__":  # a script's or notebook's own: as it is now
        return _IMPORTED[key]
    try:
        if path is not None:
            if not path.is_file():
                raise ValueError(f"family {name!r}: no file {source}")
            module_name = f"_metapinn_family_{hashlib.sha1(str(path).encode()).hexdigest()[:12]}"
            module = sys.modules.get(module_name)
            if module is None:
                spec = importlib.util.spec_from_file_location(module_name, path)
                assert spec is not None and spec.loader is not None
                module = importlib.util.module_from_spec(spec)
                # Registered before it runs, as an import does: dataclasses (and so
                # equinox modules) defined in it look their module up there.
                sys.modules[module_name] = module
                try:
                    spec.loader.exec_module(module)
                except BaseException:
                    del sys.modules[module_name]
                    raise
        else:
            if os.getcwd() not in sys.path and "" not in sys.path:
                sys.path.append(os.getcwd())  # after the installed packages: no shadowing
            module = importlib.import_module(source)
    except ValueError:
        raise
    except Exception as e:  # an import runs the user's code: any error is theirs to see
        raise ValueError(f"family {name!r}: importing {source} failed: {e!r}") from None
    found = getattr(module, attr, None)
    if found is None:
        raise ValueError(f"family {name!r}: {source} has no attribute {attr!r}")
    if not isinstance(found, Family):
        raise ValueError(
            f"family {name!r}: {source}.{attr} is a {type(found).__name__}, not a metapinn.Family"
        )
    if source != "__main__":
        _IMPORTED[key] = found
    return found


def family_table(families: Any = None) -> str:
    """`families` (default: every one of `FAMILIES`) as a Markdown table."""
    rows = ["| family | docs/design.md | PDE | a task varies | training range | truth |"]
    rows.append("|---|---|---|---|---|---|")
    for f in FAMILIES.values() if families is None else families:
        span = (
            f"{f.n_train} drawn" if f.train_range is None
            else f"[{f.train_range[0]:g}, {f.train_range[1]:g}]"
        )  # fmt: skip
        rows.append(
            f"| {f.name} | {f.design} | {f.pde.__name__} | {f.describes} | {span} | {f.truth} |"
        )
    return "\n".join(rows)
