"""A meta-training run's metrics file, `metrics.jsonl`: one JSON record per meta-step,
appended as the run goes and read back, checked, on resume and by the evaluation."""

import json
import os
import pathlib
from typing import Any

from ._checkpoint import _write_error


METRICS = "metrics.jsonl"


class DamagedMetricsError(ValueError):
    """A metrics file holds a line that is not a step's record (other than a last line
    cut short by a kill); the message names the file and the line."""


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a metrics file (`metrics.jsonl`), one per meta-step in order.

    A last line cut short (a run killed while it wrote it) is dropped; any other line
    that is not a record (torn, binary, not an object with an integer `step`, a
    `seconds`, a `meta_loss` and a `query_loss`) is an error, so that a damaged file
    is found before a resume or an evaluation builds on it.

    **Returns:** the records; `[]` for a missing file.

    **Raises:** [`metapinn.DamagedMetricsError`][] naming the file and the line.
    """
    path = pathlib.Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")
    complete = data.endswith(b"\n")
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(lines, 1):
        row: Any = None
        if not line:
            if number < len(lines):
                raise DamagedMetricsError(f"{path} line {number} is empty: the file is damaged")
            continue
        try:
            row = json.loads(line.decode())
            ok = (
                isinstance(row, dict)
                and type(row.get("step")) is int
                and isinstance(row.get("seconds"), int | float)
                and isinstance(row.get("meta_loss"), int | float)
                and isinstance(row.get("query_loss"), list)
            )
        except (UnicodeDecodeError, json.JSONDecodeError):
            ok = False
        if not ok:
            if number == len(lines) and not complete:
                break  # the last line, cut short by a kill
            raise DamagedMetricsError(
                f"{path} line {number} is not a meta-step's record ({line[:60]!r}): the file "
                "is damaged; restore it, or train the run again in a new folder"
            )
        if row["step"] != len(rows):
            raise DamagedMetricsError(
                f"{path} line {number} is step {row['step']}, expected {len(rows)}: the file "
                "is damaged (were two processes writing it?)"
            )
        rows.append(row)
    return rows


class MetricsAppender:
    """Appends a run's records to its metrics file, a whole line per write (so that
    the file can be followed as the run goes), synced to disk at each checkpoint
    (`flush`), so that the file covers every checkpointed step.

    A write that fails (a full disk, a quota) truncates the file back to its last
    complete record and raises [`metapinn.RunFolderError`][] naming it: no line is
    left torn, and the run stops before the checkpoint that record would be part of.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = pathlib.Path(path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        self._good = os.fstat(self._fd).st_size

    def append(self, record: dict[str, Any]) -> None:
        data = (json.dumps(record) + "\n").encode()
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as error:
            self._cut_back()
            raise _write_error(self.path, error) from error
        self._good += len(data)

    def flush(self) -> None:
        """Sync the records written so far to disk."""
        try:
            os.fsync(self._fd)
        except OSError as error:
            raise _write_error(self.path, error) from error

    def _cut_back(self) -> None:
        try:
            os.ftruncate(self._fd, self._good)
        except OSError:
            pass  # the error being raised names the file; a resume reads past a torn tail

    def close(self) -> None:
        os.close(self._fd)
