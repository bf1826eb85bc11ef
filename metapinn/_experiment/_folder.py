"""The run folder: one object owns its layout, its stored settings and their checks,
its markers, its metrics, and who writes it.

```
RUN/
  config.json                  the experiment's settings (ExperimentConfig.to_dict)
  .lock                        held by the process writing the folder (metapinn._lock)
  train/<method>/seed<s>/      one meta-training run: checkpoint.npz, metrics.jsonl,
                               and diverged.json if its loss turned non-finite
  train/transfer/seed<s>/task<i>/   the transfer baseline: one run per training task
  train/curriculum/seed<s>/task<i>/ the curriculum: one run per task of its chain
  results.json, results.md, plots/  the evaluation's output
```

In a multi-process job every process reads the folder and process 0 alone writes it
([`RunFolder.is_writer`][metapinn.experiment.RunFolder.is_writer]); the writer holds
the folder's lock while it writes, so a second writer is refused at once.
"""

import contextlib
import json
import os
import pathlib
from collections.abc import Iterable, Iterator
from typing import Any

import jax
import numpy as np

from .._checkpoint import (
    CorruptCheckpointError,
    checkpoint_step,
    is_temporary,
    previous_checkpoint_path,
    read_checkpoint_meta,
    write_json,
)
from .._lock import LOCK_FILE, RunFolderBusy, folder_lock
from .._meta_train import CHECKPOINT, RESUMABLE_KEYS, load_initialisation
from .._metrics_file import METRICS, read_metrics
from ._config import ConfigError, ExperimentConfig, fields_with_role


def mismatches(
    stored: dict[str, Any], given: dict[str, Any], ignore: Iterable[str] = (), now: str = "given"
) -> list[str]:
    """The settings in which two records differ, each as `key (stored A, given B)`,
    sorted by key; keys in `ignore` are skipped (a key missing from one is `None`)."""
    skip = set(ignore)
    keys = sorted(k for k in set(stored) | set(given) if k not in skip)
    return [
        f"{k} (stored {stored.get(k)!r}, {now} {given.get(k)!r})"
        for k in keys
        if stored.get(k) != given.get(k)
    ]


def is_bookkeeping(path: pathlib.Path) -> bool:
    """Whether `path` is a file the folder's machinery leaves (a write's temporary, the
    lock) rather than content: a folder holding only such files counts as empty."""
    return is_temporary(path) or path.name == LOCK_FILE


class RunFolder:
    """An experiment's run folder (see the module notes for its layout).

    **Arguments:** `path`, the folder (it need not exist yet).
    """

    CONFIG = "config.json"
    RESULTS = "results.json"
    REPORT = "results.md"
    PLOTS = "plots"
    DIVERGED = "diverged.json"
    """Written into a run's folder when its meta-training stopped on a non-finite loss
    (or never started, its warm-start source having diverged)."""

    def __init__(self, path: str | os.PathLike):
        self.path = pathlib.Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    # ------------------------------------------------------------------ layout

    @property
    def config_file(self) -> pathlib.Path:
        return self.path / self.CONFIG

    @property
    def results_file(self) -> pathlib.Path:
        return self.path / self.RESULTS

    @property
    def report_file(self) -> pathlib.Path:
        return self.path / self.REPORT

    @property
    def plots_dir(self) -> pathlib.Path:
        return self.path / self.PLOTS

    def run_dir(self, method: str, seed: int, task: int | None = None) -> pathlib.Path:
        """The folder of one training run (`task`: a per-task baseline's training
        task)."""
        folder = self.path / "train" / method / f"seed{seed}"
        return folder if task is None else folder / f"task{task}"

    def run_dirs(
        self, config: ExperimentConfig, method: str, seed: int
    ) -> dict[int | None, pathlib.Path]:
        """Every training run folder of `method` for `seed`, by its task: `{None:
        folder}`, or a per-task baseline's (transfer, curriculum) one folder per training
        task."""
        return {t: self.run_dir(method, seed, t) for t in config.method(method).run_tasks(config)}

    # ------------------------------------------------------------- the settings

    def holds_run(self) -> bool:
        """Whether the folder holds a run (its `config.json`)."""
        return self.config_file.exists()

    def read_config(self) -> ExperimentConfig:
        """The settings the run was started with.

        **Raises:** [`metapinn.experiment.ConfigError`][] naming the folder if it holds no run,
        or the file if it cannot be read as a run's settings."""
        path = self.config_file
        if not path.is_file():
            raise ConfigError(f"{self.path} is not a metapinn run folder (no {self.CONFIG})")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(f"{path} cannot be read as a run's settings: {e}") from None
        try:
            return ExperimentConfig.from_dict(data)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None

    def check(
        self, config: ExperimentConfig, resume: bool, previous_checkpoint: bool = False
    ) -> None:
        """Check, writing nothing, that `config` may start (or with `resume`, continue)
        a run here: a new run needs a new folder (missing or empty), a resumed one a
        run's folder trained with the same settings.

        **Raises:** `FileExistsError` where a new run would start in a folder that
        holds a run or other files; `FileNotFoundError` where a run would be resumed
        from a folder that is missing or holds no run; [`metapinn.experiment.ConfigError`][]
        where a resumed run's settings, or those of its checkpoints, are not
        `config`'s (or a checkpoint cannot be read without `previous_checkpoint`);
        [`metapinn.DamagedMetricsError`][] where a resumed run's metrics file holds a
        damaged line.
        Each message names the folder."""
        if not self.holds_run():
            if resume and self.path.exists():
                raise FileNotFoundError(
                    f"cannot resume {self.path}: it holds no run (no {self.CONFIG})"
                )
            if resume:
                raise FileNotFoundError(
                    f"cannot resume {self.path}: no such folder (a new run starts without --resume)"
                )
            if self.path.is_dir() and not all(map(is_bookkeeping, self.path.iterdir())):
                raise FileExistsError(
                    f"{self.path} is not empty and holds no run (no {self.CONFIG}): choose "
                    "a new or empty output folder"
                )
            return
        if not resume:
            raise FileExistsError(
                f"{self.path} already holds a run: continue it with --resume, or choose "
                "another output folder"
            )
        # Per-method settings are checked run by run against each checkpoint; each
        # (method, seed) is a run of its own, so a resumed run may add seeds or
        # methods (those trained already are loaded, the others trained).
        bad = mismatches(
            self.read_config().to_dict(), config.to_dict(), ignore=fields_with_role("resumable")
        )
        if bad:
            raise ConfigError(
                f"cannot resume {self.path} with different settings: " + ", ".join(bad)
            )
        self._check_checkpoints(config, previous_checkpoint)

    def _check_checkpoints(self, config: ExperimentConfig, previous_checkpoint: bool) -> None:
        """Refuse to resume runs whose checkpoints were trained with settings other
        than `config` gives them (other than the length), or cannot be read."""
        bad = []
        for method in config.methods:
            spec = config.method(method)
            for seed in config.seeds:
                for task, folder in self.run_dirs(config, method, seed).items():
                    path = _resume_from(folder, previous_checkpoint)
                    if path is not None:
                        # A damaged metrics line is named before the resume writes
                        # anything (DamagedMetricsError).
                        read_metrics(folder / METRICS)
                        meta = read_checkpoint_meta(path)
                        if checkpoint_step(path, meta) > spec.meta_steps:
                            bad.append(
                                f"{folder}: it is at meta-step {meta['step']}, beyond the "
                                f"{spec.meta_steps} meta_steps now given"
                            )
                        stored = meta.get("config") or {}
                        given = spec.run_settings(config, seed, task)
                        bad += [
                            f"{folder}: {m}"
                            for m in mismatches(stored, given, RESUMABLE_KEYS, now="now")
                        ]
        if bad:
            raise ConfigError(
                "cannot resume: these runs were trained with other settings (train them in a "
                "new folder, or give the settings they were trained with): " + "; ".join(bad)
            )

    # ------------------------------------------------------------------ writing

    @staticmethod
    def is_writer() -> bool:
        """Whether this process writes run folders: process 0 of a multi-process job
        (every process of one computes the same values)."""
        return jax.process_index() == 0

    @contextlib.contextmanager
    def writing(self) -> Iterator["RunFolder"]:
        """Hold the folder's lock inside the block, in the writing process (the others
        write nothing and take no lock). The temporaries of writes that a killed
        process left (no one else can be writing now) are removed first.

        **Raises:** [`metapinn.RunFolderBusy`][] at once if another process holds it."""
        if not self.is_writer():
            yield self
            return
        with folder_lock(self.path):
            for leftover in self.path.rglob(".*.tmp"):
                if is_temporary(leftover) and leftover.is_file():
                    leftover.unlink(missing_ok=True)
            yield self

    def discard_failed_start(self, config: ExperimentConfig, *, made: bool = False) -> bool:
        """Undo the start of a new run that failed before it trained anything (a
        warm-start source of another network, say): remove its `config.json`, so that
        the same command, corrected, may run again in the same folder.

        Only a folder whose `config.json` holds `config` and that holds nothing else
        (but the lock, temporaries and empty folders) is touched, under its lock; one
        that another process writes is left as it is. With `made` (the folder did not
        exist before the run started), the folder goes too.

        **Returns:** whether the start was undone."""
        if not (self.is_writer() and self.holds_run()):
            return False
        try:
            with folder_lock(self.path):
                found = [p for p in self.path.rglob("*") if not p.is_dir()]
                content = [p for p in found if not is_bookkeeping(p)]
                if content != [self.config_file] or self.read_config() != config:
                    return False
                for path in found:
                    if path != self.path / LOCK_FILE:  # held: it goes (with made) once free
                        path.unlink(missing_ok=True)
                folders = sorted((p for p in self.path.rglob("*") if p.is_dir()), reverse=True)
                for folder in folders:  # the deepest first
                    with contextlib.suppress(OSError):
                        folder.rmdir()
        except (RunFolderBusy, OSError, ConfigError):
            return False
        if made:
            with contextlib.suppress(OSError):
                (self.path / LOCK_FILE).unlink(missing_ok=True)
                self.path.rmdir()
        return True

    def write_config(self, config: ExperimentConfig) -> None:
        """Store `config` as the run's settings (from the writing process only)."""
        if self.is_writer():
            self.path.mkdir(parents=True, exist_ok=True)
            write_json(self.config_file, config.to_dict())

    def write_json(self, name: str, data: Any) -> None:
        """Write `data` as JSON to `name` in the folder (from the writing process only)."""
        if self.is_writer():
            write_json(self.path / name, data)

    # ------------------------------------------------------------------ markers

    def diverged(self, config: ExperimentConfig, method: str, seed: int) -> dict | None:
        """The divergence record of `method`'s run for `seed` (any of a transfer
        baseline's runs), or `None` if it did not diverge."""
        for folder in self.run_dirs(config, method, seed).values():
            record = self.divergence(folder)
            if record is not None:
                return record
        return None

    def divergence(self, run_dir: pathlib.Path) -> dict | None:
        """The divergence record in one training run's folder, or `None`."""
        path = run_dir / self.DIVERGED
        if not path.exists():
            return None
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(f"{path} cannot be read as a divergence record: {e}") from None
        return record if isinstance(record, dict) else {"message": str(record)}

    def mark_diverged(self, run_dir: pathlib.Path, record: dict[str, Any]) -> None:
        """Record that a training run diverged (from the writing process only)."""
        if self.is_writer():
            run_dir.mkdir(parents=True, exist_ok=True)
            write_json(run_dir / self.DIVERGED, record)

    def clear_diverged(self, run_dir: pathlib.Path) -> None:
        """Drop a stale divergence record (a run trained again, to its end)."""
        if self.is_writer():
            (run_dir / self.DIVERGED).unlink(missing_ok=True)

    def diverged_runs(self) -> list[pathlib.Path]:
        """Every training run folder holding a divergence record."""
        return sorted(p.parent for p in self.path.glob(f"train/*/*/{self.DIVERGED}"))

    # ------------------------------------------------------------------ metrics

    def metrics(self, run_dir: pathlib.Path) -> list[dict[str, Any]]:
        """The metrics records of one training run (see [`metapinn.read_metrics`][]);
        `[]` if it never trained."""
        return read_metrics(run_dir / METRICS)

    def training_curve(self, method: str, seed: int, steps: int) -> np.ndarray:
        """Mean query loss per meta-step, NaN-padded to `steps` (a diverged run stops
        early; one whose warm-start source diverged never started)."""
        rows = self.metrics(self.run_dir(method, seed))
        curve = np.full(steps, np.nan)
        curve[: len(rows)] = [np.mean(r["query_loss"]) for r in rows[:steps]]
        return curve

    def clock(self, method: str, seed: int, task: int | None = None) -> list[float]:
        """The `seconds` column of a run's metrics (it restarts from zero where a
        resumed segment starts)."""
        return [float(r["seconds"]) for r in self.metrics(self.run_dir(method, seed, task))]

    def training_seconds(self, config: ExperimentConfig) -> dict[str, float]:
        """Meta-training wall time per method, summed over its seeds (and a transfer
        baseline's tasks), from the metrics files."""
        totals = {}
        for m in config.methods:
            total = 0.0
            for s in config.seeds:
                for task in self.run_dirs(config, m, s):
                    previous = 0.0
                    for seconds in self.clock(m, s, task):
                        if seconds < previous:  # a resumed segment starts
                            total += previous
                        previous = seconds
                    total += previous
            totals[m] = round(total, 2)
        return totals

    # ---------------------------------------------------------- initialisations

    def load_trained(
        self,
        config: ExperimentConfig,
        method: str,
        seed: int,
        params: Any,
        task: int | None = None,
    ) -> Any:
        """The trained initialisation of `method` for `seed` (`params`: the random
        one, for structure), after checking that its run finished with `config`'s
        settings.

        **Raises:** `FileNotFoundError` if the run is missing;
        [`metapinn.experiment.ConfigError`][] if it is unfinished or was trained with other
        settings; [`metapinn.CorruptCheckpointError`][] if its checkpoint is damaged.
        """
        folder = self.run_dir(method, seed, task)
        if not (folder / CHECKPOINT).exists():
            raise FileNotFoundError(
                f"no checkpoint for {method} seed {seed} in {folder}: train it first "
                "(metapinn train, or metapinn reproduce)"
            )
        spec = config.method(method)
        settings = spec.run_settings(config, seed, task)
        meta = read_checkpoint_meta(folder / CHECKPOINT)
        if checkpoint_step(folder / CHECKPOINT, meta) != settings["meta_steps"]:
            raise ConfigError(
                f"the {method} seed {seed} run in {folder} stopped at meta-step "
                f"{meta['step']} of {settings['meta_steps']}; finish it with --resume first"
            )
        bad = mismatches(meta.get("config") or {}, settings, ("checkpoint_every",), now="now")
        if bad:
            raise ConfigError(
                f"the checkpoint in {folder} was trained with other settings: " + ", ".join(bad)
            )
        # Checked first: a checkpoint written by another optimiser would not even load.
        params, _ = load_initialisation(
            folder, params, spec.outer_optimizer(), spec.meta_learner(params)
        )
        return params


def _damaged(folder: pathlib.Path) -> bool:
    """Whether the run in `folder` has a checkpoint that cannot be read."""
    try:
        read_checkpoint_meta(folder / CHECKPOINT)
    except FileNotFoundError:
        return False
    except CorruptCheckpointError:
        return True
    return False


def _resume_from(folder: pathlib.Path, previous_checkpoint: bool) -> pathlib.Path | None:
    """The checkpoint a run in `folder` resumes from: its last, or the one before when
    the last is damaged and `previous_checkpoint` allows it; `None` if it has none."""
    if previous_checkpoint and _damaged(folder):
        return previous_checkpoint_path(folder / CHECKPOINT)
    return folder / CHECKPOINT if (folder / CHECKPOINT).exists() else None
