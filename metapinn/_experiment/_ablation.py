"""`metapinn ablate`: a grid of experiments over learner settings, each cell run by the
main job's pipeline.

A grid is a base configuration (a named workload on a family, with changes) and axes,
each a setting with a list of values. Every combination of values is a *cell*: one
method with those settings, in a run folder of its own (`cells/<name>/`), meta-trained
and evaluated by [`metapinn.experiment.reproduce`][] on the base's seeds, collocation points and
held-out tasks, so that every cell is measured by the same protocol (docs/design.md §5).

A method that starts from another method's result (W3's meta-learners start from
multi-task pre-training) has that source trained once, in `sources/<methods>-<digest>/`,
and shared by every cell whose source has the same settings (the digest is that of its
configuration).

The grid folder holds `grid.json` (the grid last run there), the sources, the cells, and
the results over the cells: `ablation.json`, `ablation.md`, `ablation.csv` and
`plots/ablation.png`. An interrupted grid continues with `resume`: a finished cell (its
`results.json` written with its configuration) is read, not rerun; an unfinished one
continues from its checkpoints. Every cell's configuration is built, and checked, before
anything is trained.
"""

import json
import os
import pathlib
import time
from collections.abc import Callable
from typing import Any

from .._checkpoint import write_json
from .._processes import _sync
from ._ablation_grid import CELL_FILE, AblationGrid, Cell, GridError, stored_grid
from ._ablation_report import cell_row_of, step_seconds, write_ablation
from ._config import fields_with_role
from ._folder import RunFolder, is_bookkeeping, mismatches
from ._methods import label
from ._pipeline import reproduce
from ._training import meta_step_memory, train_runs


def run_ablation(
    grid: AblationGrid,
    out_dir: str | os.PathLike,
    *,
    resume: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
    log: Callable[[str], None] = print,
    plots: bool = True,
    command: str | None = None,
    previous_checkpoint: bool = False,
    train: bool = True,
    mesh: Any = None,
) -> dict[str, Any] | None:
    """Train and evaluate every cell of `grid` in `out_dir` (see the module notes), and
    write the results over all cells.

    **Arguments:** the grid; the folder; `resume`, continue a grid folder (finished
    cells are read, not rerun); `progress`, `stop_after` and `log` as for
    [`metapinn.experiment.train_runs`][] (`stop_after` counts the meta-steps of the first run that
    trains); `plots`, draw every cell's plots and the grid's; `command`, the command
    line recorded with the results; `previous_checkpoint`, with `resume`, a run whose
    checkpoint is damaged continues from the one before (see [`metapinn.experiment.train_runs`][]);
    `train=False` tabulates the cells finished so far and trains nothing (the others
    are left out of the table, and named in the log); `mesh`, split each meta-step's
    task batch over these devices (in a multi-process job, a mesh over every process's
    devices: every process trains every cell, process 0 alone evaluates and writes).

    **Returns:** the results (as in `ablation.json`); `None` on the processes other
    than 0 of a multi-process job.

    **Raises:** `GridError` for a bad cell (before anything is trained), or for a
    grid folder resumed or tabulated with another base; `FileExistsError` if `out_dir`
    holds a grid and `resume` is false, or holds other files and no grid;
    `FileNotFoundError` with `resume` or `train=False` if it holds no grid;
    [`metapinn.RunFolderBusy`][] if another process writes it; otherwise what
    [`metapinn.experiment.train_runs`][] and [`metapinn.experiment.reproduce`][] raise.
    """
    out_dir = pathlib.Path(out_dir)
    _checked_cells(grid, out_dir, resume, train)  # before the lock makes the folder
    with RunFolder(out_dir).writing():  # the grid's folder, locked as a run's is
        return _run_cells(
            grid, out_dir, resume=resume, progress=progress, stop_after=stop_after, log=log,
            plots=plots, command=command, previous_checkpoint=previous_checkpoint,
            train=train, mesh=mesh,
        )  # fmt: skip


def check_grid_folder(folder: pathlib.Path, resume: bool, train: bool = True) -> None:
    """Refuse to resume or tabulate a folder that holds no grid (no `grid.json`), or
    to start a grid in a folder that holds other files; each message names the
    folder."""
    if (folder / "grid.json").exists():
        return
    if not train:
        raise FileNotFoundError(f"{folder} holds no grid to tabulate (no grid.json)")
    if resume:
        why = "it holds no grid (no grid.json)" if folder.exists() else "no such folder"
        raise FileNotFoundError(f"cannot resume {folder}: {why}")
    if folder.is_dir() and not all(map(is_bookkeeping, folder.iterdir())):
        raise FileExistsError(
            f"{folder} is not empty and holds no grid (no grid.json): choose a new or empty "
            "output folder"
        )


def _checked_cells(grid: AblationGrid, out_dir: pathlib.Path, resume: bool, train: bool):
    """The grid's cells, once the cells and the folder are checked (see `run_ablation`)."""
    cells = grid.cells(out_dir)
    check_grid_folder(out_dir, resume, train)
    if (out_dir / "grid.json").exists() and (resume or not train):
        _check_stored_base(grid, out_dir / "grid.json")
    if (out_dir / "grid.json").exists() and not resume and train:
        raise FileExistsError(
            f"{out_dir} already holds a grid: continue it with --resume (finished cells are "
            "reused), or choose another output folder"
        )
    return cells


def _run_cells(
    grid: AblationGrid,
    out_dir: pathlib.Path,
    *,
    resume: bool,
    progress: bool,
    stop_after: int | None,
    log: Callable[[str], None],
    plots: bool,
    command: str | None,
    previous_checkpoint: bool,
    train: bool,
    mesh: Any,
) -> dict[str, Any] | None:
    writes = RunFolder.is_writer()
    cells = _checked_cells(grid, out_dir, resume, train)  # again, now that it is locked
    # Every process has checked the folder before process 0 writes to it.
    _sync("ablation checked")
    if writes:
        out_dir.mkdir(parents=True, exist_ok=True)
        if train:
            write_json(out_dir / "grid.json", grid.to_dict())
    log(f"grid folder: {out_dir}; {len(cells)} cells over {', '.join(grid.varied) or 'one cell'}")
    t0 = time.perf_counter()
    rows = []
    for i, cell in enumerate(cells, 1):
        head = f"[cell {i}/{len(cells)}] {cell.name}"
        # Every process sees the folder as process 0 left it after the last cell.
        _sync(f"ablation cell {i}")
        row = _finished_row(cell)
        if row is not None:
            log(f"{head}: finished before, reused")
            rows.append(row)
            continue
        if not train:
            log(f"{head}: not finished, left out of the table")
            continue
        log(f"{head}: {label(cell.method)}")
        resume_cell = RunFolder(cell.folder).holds_run()  # before anything writes
        if cell.source is not None and cell.source_dir is not None:
            again = RunFolder(cell.source_dir).holds_run()
            train_runs(cell.source, cell.source_dir, resume=again, progress=progress,
                       stop_after=stop_after, log=log, keep_going=True,
                       previous_checkpoint=previous_checkpoint, mesh=mesh)  # fmt: skip
            _sync(f"ablation source {i}")  # process 0 has written its divergence marks
            failed = [str(p) for p in RunFolder(cell.source_dir).diverged_runs()]
            if failed:
                log(f"{head}: not run, its warm-start source diverged ({', '.join(failed)})")
                continue
        results = reproduce(
            cell.config,
            cell.folder,
            resume=resume_cell,
            progress=progress,
            stop_after=stop_after,
            log=log,
            plots=plots,
            previous_checkpoint=previous_checkpoint,
            mesh=mesh,
        )
        if results is None:  # another process than 0: process 0 evaluated the cell
            log(f"{head}: trained")
            continue
        row = _measured_row(cell, results)
        write_json(cell.folder / CELL_FILE, {"config": cell.config.to_dict(), "row": row})
        rows.append(row)
        log(f"{head}: done ({i}/{len(cells)} cells, {time.perf_counter() - t0:.0f} s so far)")
    if not writes:
        _sync("ablation written")
        return None
    results = write_ablation(grid, cells, rows, out_dir, plots=plots, command=command)
    _sync("ablation written")
    return results


def _check_stored_base(grid: AblationGrid, path: pathlib.Path) -> None:
    """Refuse to continue a grid folder with another base (the axes may change: a
    narrower or a wider grid reuses the cells they share); evaluation settings may
    differ (the cells are evaluated again)."""
    stored = stored_grid(path).base.to_dict()  # an unreadable one is a named error
    bad = mismatches(stored, grid.base.to_dict(), ignore=fields_with_role("evaluation"))
    if bad:
        raise GridError(
            f"cannot continue the grid in {path.parent} with another base: " + ", ".join(bad)
        )


def _finished_row(cell: Cell) -> dict[str, Any] | None:
    """The stored row of a cell finished with its configuration, or `None`."""
    path = cell.folder / CELL_FILE
    if not (path.exists() and RunFolder(cell.folder).results_file.exists()):
        return None
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None  # a damaged record: the cell is evaluated again
    if not isinstance(stored, dict) or "row" not in stored:
        return None
    return stored["row"] if stored.get("config") == cell.config.to_dict() else None


def _measured_row(cell: Cell, results: dict[str, Any]) -> dict[str, Any]:
    """One cell's row (see `cell_row_of`), with its meta-step times read from its
    metrics files and XLA's memory of its meta-step, compiled here."""
    folder = RunFolder(cell.folder)
    times = [t for s in cell.config.seeds for t in step_seconds(folder.clock(cell.method, s))]
    memory = meta_step_memory(cell.config, cell.method)
    return cell_row_of(cell, results, times=times, memory=memory)
