"""An ablation grid: a base configuration and axes, each a setting with its values;
every combination of values is a *cell*, one method with those settings in a run
folder of its own (see `metapinn._experiment._ablation` for how a grid is run).

A method that starts from another method's result has that source trained once, in
`sources/<methods>-<digest>/`, and shared by every cell whose source has the same
settings (the digest is that of its configuration). Every cell's configuration is
built, and checked, when the grid is made.
"""

import dataclasses
import hashlib
import itertools
import json
import os
import pathlib
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any, cast

from ._config import (
    ConfigError,
    ExperimentConfig,
    _coerce,
    _parse_override,
    fields_with_role,
    read_settings_file,
)
from ._methods import METHOD_NAMES
from ._workloads import DEFAULT_WORKLOAD, WORKLOADS, quick as _quick, workload


METHOD_KEY = "method"
"""The axis that names each cell's method (one of `METHOD_NAMES`)."""
_TYPES: dict[str, type] = {f.name: cast(type, f.type) for f in dataclasses.fields(ExperimentConfig)}
GRID_KEYS: dict[str, type] = {
    METHOD_KEY: str,
    **{k: _TYPES[k] for k in fields_with_role("method")},
    **{k: _TYPES[k] for k in fields_with_role("gridded")},
}
"""Every setting a grid may vary: the method, the method settings (set for the cell's
method alone: its order is its method, `maml` or `fomaml`; learned inner rates are
`metasgd` and `mamlpp`; a warm start is `init`), and the run-wide settings with the
role `gridded` (they change the cell's sources too). The seeds, points, tasks and
evaluation are the base's, the same in every cell."""
GRID_FILE_KEYS = ("workload", "family", "settings", "vary")
"""The keys of a grid file: the named workload (default W3) and family (default
Burgers) of the base, `settings` (changes to it, any configuration key), and `vary`
(the axes: `{key: [values]}`)."""
CELL_FILE = "cell.json"
"""Written into a cell's folder once it is finished: its row of the grid's table."""


class GridError(ConfigError):
    """A grid is invalid; the message names the key, the value or the cell."""


@dataclasses.dataclass(frozen=True)
class Cell:
    """One combination of a grid's values: `config` runs its one method in `folder`,
    after its warm-start `source` (a run configuration) has trained in `source_dir`."""

    name: str
    values: dict[str, Any]
    config: ExperimentConfig
    folder: pathlib.Path
    source: ExperimentConfig | None
    source_dir: pathlib.Path | None

    @property
    def method(self) -> str:
        return self.values[METHOD_KEY]


@dataclasses.dataclass(frozen=True)
class AblationGrid:
    """A base configuration and the axes varied over it.

    **Arguments:**

    - `base`: the [`metapinn.experiment.ExperimentConfig`][] every cell starts from (its methods
      serve only as the sources a cell's `init` may name).
    - `axes`: `((key, values), ...)`, each key one of `GRID_KEYS`, in the order they
      vary (the last fastest); `method` must be one of them, or its one value given.

    **Raises:** [`metapinn.experiment.GridError`][] for an unknown or repeated key, values that
    are not a non-empty list or list a value twice, a value of the wrong type, or no
    `method` axis; [`metapinn.experiment.AblationGrid.cells`][] raises it for a cell whose settings
    are incompatible.
    """

    base: ExperimentConfig
    axes: tuple[tuple[str, Any], ...]

    def __post_init__(self):
        axes = []
        seen = set()
        for key, values in self.axes:
            if key not in GRID_KEYS:
                raise GridError(
                    f"unknown grid key {key!r}; a grid varies one of: {', '.join(GRID_KEYS)}"
                )
            if key in seen:
                raise GridError(f"grid key {key!r} is given twice")
            seen.add(key)
            if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
                raise GridError(f"grid key {key!r}: give a list of values, got {values!r}")
            if not values:
                raise GridError(f"grid key {key!r} has no values")
            values = tuple(_grid_value(key, v) for v in values)
            if len(set(values)) != len(values):
                raise GridError(f"grid key {key!r} lists a value twice: {list(values)}")
            axes.append((key, values))
        if METHOD_KEY not in seen:
            raise GridError(
                f"a grid needs the {METHOD_KEY!r} of its cells: vary it, or give its one value "
                f"(e.g. --vary method=maml); methods: {', '.join(METHOD_NAMES)}"
            )
        object.__setattr__(self, "axes", tuple(axes))

    @property
    def varied(self) -> tuple[str, ...]:
        """The keys with more than one value."""
        return tuple(k for k, v in self.axes if len(v) > 1)

    def combinations(self) -> list[dict[str, Any]]:
        """Every cell's values, `{key: value}`, the last axis varying fastest."""
        keys = [k for k, _ in self.axes]
        return [
            dict(zip(keys, c, strict=True)) for c in itertools.product(*dict(self.axes).values())
        ]

    def cells(self, out_dir: str | os.PathLike) -> list[Cell]:
        """Every cell, its configuration built and checked.

        **Raises:** `GridError` naming the first cell whose settings are invalid."""
        out_dir = pathlib.Path(out_dir).resolve()  # the sources' paths, wherever run from
        cells = [self._cell(values, out_dir) for values in self.combinations()]
        names = [c.name for c in cells]
        if len(set(names)) != len(names):  # pragma: no cover - values are distinct
            raise GridError(f"two cells share a name: {names}")
        return cells

    def _cell(self, values: dict[str, Any], out_dir: pathlib.Path) -> Cell:
        name = cell_name(values, self.axes)
        method = values[METHOD_KEY]
        try:
            if method not in METHOD_NAMES:
                raise GridError(f"unknown method {method!r}; choose from {', '.join(METHOD_NAMES)}")
            run_wide = {k: v for k, v in values.items() if k in fields_with_role("gridded")}
            own = [
                f"{method}.{k}={_text(v)}"
                for k, v in values.items()
                if k in fields_with_role("method")
            ]
            mine = [o for o in self.base.overrides if _parse_override(o)[0] == method] + own
            chain = _sources(self.base, mine, method)
            if chain:
                # Checked as one run of the method and its sources first (the same
                # network, no transfer baseline, ...); then its init becomes the
                # source run's result.
                self.base.replace(
                    **run_wide,
                    methods=(*reversed(chain), method),
                    overrides=[o for o in self.base.overrides if _parse_override(o)[0] in chain]
                    + mine,
                )
                mine = [o for o in mine if _parse_override(o)[1] != "init"]
            config = self.base.replace(
                name=_safe(f"{self.base.name}-{name}"), **run_wide, methods=(method,),
                overrides=mine,
            )  # fmt: skip
            if not chain:
                return Cell(name, values, config, out_dir / "cells" / name, None, None)
            # The source run: those methods with their own settings from the base.
            source = self.base.replace(
                name=_safe(f"{self.base.name}-source"),
                **run_wide,
                methods=tuple(reversed(chain)),
                overrides=[o for o in self.base.overrides if _parse_override(o)[0] in chain],
            )
            source_dir = out_dir / "sources" / f"{'+'.join(reversed(chain))}-{_digest(source)}"
            config = config.replace(overrides=[*mine, f"{method}.init={source_dir}:{chain[0]}"])
        except ConfigError as e:
            raise GridError(f"grid cell {name}: {e}") from None
        return Cell(name, values, config, out_dir / "cells" / name, source, source_dir)

    def to_dict(self) -> dict[str, Any]:
        """Plain data, as stored in `grid.json`."""
        return {"base": self.base.to_dict(), "vary": {k: list(v) for k, v in self.axes}}


def _init_of(base: ExperimentConfig, overrides: Sequence[str], method: str) -> str:
    """`method`'s `init` under the base's run-wide value and `overrides`."""
    init = base.init
    for item in overrides:
        m, key, value = _parse_override(item)
        if m == method and key == "init":
            init = value
    return init


def _sources(base: ExperimentConfig, overrides: Sequence[str], method: str) -> list[str]:
    """The methods `method` starts from, nearest first (`maml` <- `multitask`), each
    with the base's settings."""
    chain: list[str] = []
    source = _init_of(base, overrides, method)
    while source in METHOD_NAMES:
        if source == method or source in chain:
            raise GridError(f"the init settings form a cycle through {source!r}")
        chain.append(source)
        source = _init_of(base, base.overrides, source)
    return chain


def _digest(config: ExperimentConfig) -> str:
    """A short digest of the settings a source's training depends on."""
    data = {
        k: v
        for k, v in config.to_dict().items()
        if k not in ("name", *fields_with_role("evaluation"))
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:10]


def _grid_value(key: str, value: Any) -> Any:
    kind = GRID_KEYS[key]
    if key == "inner_remat" and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # a segment length
    if key == "inner_remat" and isinstance(value, str) and re.fullmatch(r"0*[1-9][0-9]*", value):
        value = str(int(value))  # "04" is 4
    try:
        return _coerce(key, kind, value)
    except ConfigError as e:
        raise GridError(f"grid key {key!r}: {e}") from None


def _text(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text)


def cell_name(values: Mapping[str, Any], axes: Sequence[tuple[str, Sequence[Any]]]) -> str:
    """A cell's folder name: its method, then `key=value` for each other axis."""
    parts = [str(values[METHOD_KEY])]
    parts += [f"{k}={_text(values[k])}" for k, _ in axes if k != METHOD_KEY]
    return re.sub(r"[^A-Za-z0-9._=,-]+", "-", "_".join(parts))


def parse_vary(item: str) -> tuple[str, list[Any]]:
    """`"inner_steps=1,5,20"` -> `("inner_steps", [1, 5, 20])`, each value parsed as the
    key's type. **Raises:** `GridError` for a malformed item, an unknown key or a value
    that does not parse."""
    key, sep, text = item.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key:
        raise GridError(f"--vary {item!r}: write KEY=V1,V2,..., e.g. inner_steps=1,5,20,100")
    if key not in GRID_KEYS:
        raise GridError(f"unknown grid key {key!r}; a grid varies one of: {', '.join(GRID_KEYS)}")
    words = [w.strip() for w in text.split(",")]
    if not text.strip() or not all(words):
        raise GridError(f"--vary {item!r}: give one or more values, separated by commas")
    kind = GRID_KEYS[key]
    out = []
    for w in words:
        try:
            if kind is bool:
                if w.lower() not in ("true", "false", "on", "off"):
                    raise ValueError
                out.append(w.lower() in ("true", "on"))
            else:
                out.append(kind(w))
        except ValueError:
            raise GridError(f"--vary {item!r}: {key} takes a {kind.__name__}, got {w!r}") from None
    return key, out


def read_grid_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a grid file (JSON, or TOML for a `.toml` name): `{"workload", "family",
    "settings", "vary"}`, each optional.

    **Arguments:** `path`, the grid file.

    **Returns:** its data, a dict with some of `GRID_FILE_KEYS` (`settings` and `vary`
    are dicts), for [`metapinn.experiment.make_grid`][]; the values are not checked here.

    **Raises:** [`metapinn.experiment.GridError`][] naming the file and the problem: a missing
    file, one that does not parse, not an object, an unknown key, or `settings` or
    `vary` that is not a table. Other read errors (e.g. a `PermissionError`) propagate
    as they are.
    """
    path = pathlib.Path(path)
    text = read_settings_file(path, "grid file", "JSON or TOML", GridError)
    try:
        if path.suffix == ".toml":
            data = _toml().loads(text)
        else:
            data = json.loads(text)
    except ValueError as e:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        raise GridError(f"grid file {path} does not parse: {e}") from None
    if not isinstance(data, dict):
        raise GridError(f"grid file {path}: expected an object with keys {GRID_FILE_KEYS}")
    unknown = sorted(set(data) - set(GRID_FILE_KEYS))
    if unknown:
        raise GridError(
            f"grid file {path}: unknown key(s) {unknown}; known: {list(GRID_FILE_KEYS)}"
        )
    for key in ("settings", "vary"):
        if not isinstance(data.get(key, {}), dict):
            raise GridError(f"grid file {path}: {key!r} must be a table of key = value")
    return data


def _toml():
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib
    import tomli  # a dependency on Python 3.10

    return tomli


def make_grid(
    data: Mapping[str, Any] | None = None,
    *,
    workload_name: str | None = None,
    family: str | None = None,
    settings: Mapping[str, Any] | None = None,
    vary: Sequence[tuple[str, Sequence[Any]]] = (),
    quick: bool = False,
) -> AblationGrid:
    """A grid from a grid file's `data` (see
    [`metapinn.experiment.read_grid_file`][]) and arguments that override it: the
    workload and family of the base, `settings` (configuration changes, applied after
    the file's) and `vary` (axes that replace the file's axes of the same key, or are
    added after them). A method setting given here applies to every method: it
    replaces the workload's values for single methods. `quick` shrinks the base to a
    smoke run (see [`metapinn.experiment.quick`][]).

    **Arguments:**

    - `data`: a grid file's data (default `None`: none).
    - `workload_name`: the base's workload (keyword only, as are the rest); default
      `data["workload"]`, else `DEFAULT_WORKLOAD` (W3).
    - `family`: the base's family; default `data`'s (at its top or in its
      `settings`), else the workload's.
    - `settings`: configuration changes, after the file's (and after `quick`); not
      `methods`.
    - `vary`: axes `((key, values), ...)`, each key one of `GRID_KEYS`.
    - `quick`: shrink the base to a smoke run (default `False`).

    **Returns:** an [`metapinn.experiment.AblationGrid`][].

    **Raises:** [`metapinn.experiment.GridError`][] (a
    [`metapinn.experiment.ConfigError`][]) for any bad value: an unknown workload,
    `methods` among the settings, a bad base, a key given twice in `vary`, or what
    [`metapinn.experiment.AblationGrid`][] rejects.
    """
    data = dict(data or {})
    name = workload_name or data.get("workload") or DEFAULT_WORKLOAD
    if name not in WORKLOADS:
        raise GridError(f"unknown workload {name!r}; choose one of {sorted(WORKLOADS)}")
    from_file = dict(data.get("settings", {}))
    given = dict(settings or {})
    if "methods" in from_file or "methods" in given:
        raise GridError("a grid's methods are its 'method' axis: vary method, not the methods")
    # The family: the flag's, else the file's (at its top or among its settings).
    family = family or given.pop("family", None) or from_file.pop("family", data.get("family"))
    from_file.pop("family", None)
    try:
        base = workload(name, family=family)
        base = _changed(base, from_file)  # the file's settings, then --quick, then flags
        if quick:
            base = _quick(base)
        base = _changed(base, given)
    except ConfigError as e:
        raise GridError(f"the grid's base: {e}") from None
    axes = dict(data.get("vary", {}))
    flagged = [key for key, _ in vary]
    for key in flagged:
        if flagged.count(key) > 1:
            raise GridError(f"--vary {key} is given twice: list its values in one --vary")
    for key, values in vary:
        axes[key] = values  # in the file's position if it has that axis
    return AblationGrid(base, tuple(axes.items()))


def _changed(base: ExperimentConfig, changes: dict[str, Any]) -> ExperimentConfig:
    """`base` with `changes`; a per-method key among them replaces the base's values
    of it for single methods (as a flag does for `metapinn reproduce`)."""
    if not changes:
        return base
    changes = dict(changes)
    if set(changes) & set(fields_with_role("method")) and "overrides" not in changes:
        changes["overrides"] = [o for o in base.overrides if _parse_override(o)[1] not in changes]
    return base.replace(**changes)


def stored_grid(path: str | os.PathLike) -> AblationGrid:
    """The grid stored in a grid folder's `grid.json`."""
    try:
        data = json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
        base = ExperimentConfig.from_dict(data["base"])
        axes = tuple((k, tuple(v)) for k, v in data["vary"].items())
    except ConfigError as e:
        raise GridError(f"{path}: {e}") from None
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise GridError(
            f"{path} cannot be read as a stored grid ({type(e).__name__}: {e}); give the grid "
            "again (GRID or --vary) to continue it"
        ) from None
    return AblationGrid(base, axes)
