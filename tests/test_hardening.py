"""Failures that are the user's or the machine's, not the code's: each is a named,
one-line error (or a warning where nothing is lost), never a traceback or lost work."""

import argparse
import errno
import json
import os
import pathlib
import shutil
import stat
import subprocess
import sys
import time
import zipfile

import jax
import numpy as np
import optax
import pytest

import metapinn as mp
from metapinn._checkpoint import checkpoint_step, is_temporary, read_checkpoint_meta
from metapinn._cli import _after_a_write_error, main
from metapinn._lock import LOCK_FILE
from metapinn._pde._reference_cache import cached_family_reference
from metapinn.experiment import RunFolder


TINY = ["--width", "8", "--depth", "1", "--n-interior", "24", "--n-initial", "8",
        "--n-boundary", "4", "--no-progress", "--devices", "1"]  # fmt: skip


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def _heat_reference(cache):
    x, t = np.linspace(0.0, 1.0, 9), np.linspace(0.0, 0.5, 5)
    tasks = mp.HeatTask(jax.numpy.asarray([0.05]))
    return cached_family_reference(mp.Heat(), tasks, x, t, cache_dir=cache)


def test_a_damaged_reference_cache_file_is_recomputed_and_replaced(tmp_path):
    first = _heat_reference(tmp_path)
    (path,) = tmp_path.glob("*.npz")
    for damage in (path.read_bytes()[:40], b"\x00" * 64, b"not a zip"):
        path.write_bytes(damage)
        np.testing.assert_array_equal(_heat_reference(tmp_path), first)
        with np.load(path) as data:  # replaced by a whole file
            np.testing.assert_array_equal(data["u"][None], first)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_reference_cache_that_cannot_be_written_is_a_warning(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        with pytest.warns(RuntimeWarning, match="reference cache .* cannot be written"):
            u = _heat_reference(cache)
    finally:
        cache.chmod(stat.S_IRWXU)
    assert u.shape == (1, 5, 9) and np.all(np.isfinite(u))


def test_a_reference_cache_on_a_full_disk_is_a_warning(tmp_path, monkeypatch):
    import errno

    import metapinn._pde._reference_cache as cache_module

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache_module, "_temporary_beside", full)
    with pytest.warns(RuntimeWarning, match="No space left on device"):
        u = _heat_reference(tmp_path)
    assert u.shape == (1, 5, 9) and not list(tmp_path.glob("*"))


def _npz(path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name + ".npy", data)


def _npy(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_a_checkpoint_header_is_checked_before_its_array_is_read(tmp_path):
    import io

    path = tmp_path / "checkpoint.npz"
    # The header of a float64 array of 2**30 entries (8 GiB), with 24 bytes of data.
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": "<f8", "fortran_order": False, "shape": (1 << 30,)}
    )
    huge = buffer.getvalue() + bytes(24)
    _npz(path, {"leaf_00000": huge, "__meta__": _npy(np.asarray(json.dumps({"step": 1})))})
    with pytest.raises(ValueError, match=r"array 0 has shape \(1073741824,\)"):
        mp.load_checkpoint(path, {"w": np.zeros(3)})


@pytest.mark.parametrize("meta", ["[1, 2]", '{"step": "3"}', '{"step": -1}', "7"])
def test_malformed_checkpoint_metadata_is_a_named_error(tmp_path, meta):
    path = tmp_path / "checkpoint.npz"
    _npz(path, {"leaf_00000": _npy(np.zeros(3)), "__meta__": _npy(np.asarray(meta))})
    with pytest.raises(mp.CorruptCheckpointError, match=str(path)):
        read_checkpoint_meta(path)
    with pytest.raises(mp.CorruptCheckpointError, match=str(path)):
        mp.load_checkpoint(path, {"w": np.zeros(3)})


def test_a_run_checkpoint_without_a_step_is_a_named_error(tmp_path):
    path = tmp_path / "checkpoint.npz"
    mp.save_checkpoint(path, {"w": np.zeros(3)}, {"config": {}})
    with pytest.raises(mp.CorruptCheckpointError, match="names no meta-step"):
        checkpoint_step(path, read_checkpoint_meta(path))


def test_a_run_of_no_meta_steps_writes_its_starting_point(tmp_path):
    config = mp.experiment.workload("W1", methods=("multitask",), seeds=(0,), meta_steps=0,
                                    width=8, depth=1)  # fmt: skip
    mp.experiment.train_runs(config, tmp_path / "run", progress=False, log=lambda _: None)
    folder = RunFolder(tmp_path / "run")
    meta = read_checkpoint_meta(folder.run_dir("multitask", 0) / "checkpoint.npz")
    assert meta["step"] == 0
    from metapinn._experiment._problem import initialisation

    params, _, _ = initialisation(config, 0)
    loaded = folder.load_trained(config, "multitask", 0, params)
    for a, b in zip(jax.tree_util.tree_leaves(loaded), jax.tree_util.tree_leaves(params),
                    strict=True):  # fmt: skip
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "argv, match",
    [
        (["train", "--out", ""], "empty path names no file or folder"),
        (["evaluate", ""], "empty path names no file or folder"),
        (["reproduce", "--config", "."], "is a folder: give a JSON file"),
    ],
)
def test_bad_paths_are_named(argv, match, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert match in capsys.readouterr().err


def test_a_config_that_is_not_utf8_is_named(tmp_path, capsys):
    bad = tmp_path / "config.json"
    bad.write_bytes(b'{"name": "\xff\xfe"}')
    with pytest.raises(SystemExit):
        main(["reproduce", "--config", str(bad), "--out", str(tmp_path / "run")])
    assert "is not UTF-8 text" in _error_line(capsys)


def test_an_empty_stored_grid_is_named(tmp_path, capsys):
    (tmp_path / "grid.json").write_text("")
    with pytest.raises(SystemExit):
        main(["ablate", "--resume", "--out", str(tmp_path)])
    assert "cannot be read as a stored grid" in _error_line(capsys)


def test_a_writer_removes_the_temporaries_a_killed_writer_left(tmp_path):
    run = tmp_path / "train" / "maml" / "seed0"
    run.mkdir(parents=True)
    leftovers = [tmp_path / ".config.json.1a2b.tmp", run / ".checkpoint.npz.3c4d.tmp"]
    for path in leftovers:
        path.write_bytes(b"half")
    kept = run / "checkpoint.npz"
    kept.write_bytes(b"x")
    with RunFolder(tmp_path).writing():
        assert not any(p.exists() for p in leftovers) and kept.exists()


def test_the_advice_after_a_write_error_fits_the_folder(tmp_path):
    def advice(command, out):
        return _after_a_write_error(argparse.Namespace(command=command, out=out))

    assert "run the same command again (the folder holds no run yet)" in advice(
        "reproduce", tmp_path
    )
    RunFolder(tmp_path).write_config(mp.experiment.ExperimentConfig())
    assert "continue with --resume" in advice("train", tmp_path)
    assert "--resume" not in advice("evaluate", None)


def test_an_unexpected_error_is_reported_as_a_bug(monkeypatch, capsys):
    import metapinn._cli as cli

    def broken(args):
        raise RuntimeError("an internal slip")

    monkeypatch.setattr(cli, "_cmd_families", broken)
    assert main(["families"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "this is a bug in metapinn" in err


@pytest.mark.e2e  # two `metapinn train` processes
def test_resuming_below_the_checkpointed_step_is_a_named_error(tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "metapinn._cli", "train", "--method", "multitask", *TINY,
               "--out", str(out)]  # fmt: skip
    subprocess.run([*command, "--meta-steps", "4"], check=True, capture_output=True)
    done = subprocess.run([*command, "--resume", "--meta-steps", "2"], capture_output=True,
                          text=True)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "is at meta-step 4, beyond the 2 meta_steps now given" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_network_too_large_for_the_machine_is_refused_before_anything_is_made(tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--method", "maml", "--width", "10000000", "--out", str(out)])
    assert exit_info.value.code == 2
    line = _error_line(capsys)
    assert "width=10000000 is invalid" in line and "GiB" in line
    assert not out.exists()  # a failed start leaves nothing to refuse a retry


@pytest.mark.e2e  # two small runs
def test_a_warm_start_from_another_network_is_a_named_error(tmp_path, capsys):
    source = tmp_path / "source"
    args = ["--method", "multitask", "--meta-steps", "1", *TINY]
    assert main(["train", *args, "--out", str(source)]) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--method", "fomaml", "--meta-steps", "1", *TINY, "--width", "9",
              "--init", f"{source}:multitask", "--out", str(tmp_path / "run")])  # fmt: skip
    assert exit_info.value.code == 2
    assert "is not this run's network" in _error_line(capsys)


def test_meta_train_refused_for_bad_arguments_leaves_no_folder(tmp_path):
    import equinox as eqx
    import jax.random as jr

    pinn = mp.MLPPINN(width=4, depth=1, key=jr.key(0))
    params, static = eqx.partition(pinn, eqx.is_inexact_array)
    run_dir = tmp_path / "run"
    with pytest.raises(ValueError, match="give the collocation points"):
        mp.meta_train(mp.MultiTask(), params, static, mp.PINNLoss(mp.Burgers()),
                      mp.BurgersTask(jax.numpy.asarray([0.01])), None, steps=-1,
                      optimizer=optax.adam(1e-3),
                      key=jr.key(0), run_dir=run_dir)  # fmt: skip
    assert not run_dir.exists()


def test_evaluating_a_missing_folder_makes_none(tmp_path):
    config = mp.experiment.ExperimentConfig(seeds=(0,), methods=("maml",))
    with pytest.raises(FileNotFoundError, match="no such run folder"):
        mp.experiment.evaluate_runs(config, tmp_path / "typo")
    assert not (tmp_path / "typo").exists()


def test_a_folder_that_cannot_be_made_is_a_named_error(tmp_path, monkeypatch):
    import errno

    from metapinn._lock import folder_lock

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr("pathlib.Path.mkdir", read_only)
    with pytest.raises(mp.RunFolderError, match="read-only file system"):
        with folder_lock(tmp_path / "new"):
            pass


@pytest.mark.e2e  # two small runs
def test_damaged_files_of_a_finished_run_are_named_before_any_work(tmp_path, capsys):
    source = tmp_path / "source"
    args = ["--method", "multitask", "--meta-steps", "2", *TINY]
    assert main(["train", *args, "--out", str(source)]) == 0
    metrics = source / "train" / "multitask" / "seed0" / "metrics.jsonl"
    intact = metrics.read_bytes()
    metrics.write_bytes(intact + b"garbage\n")  # a complete line that is no record
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", str(source), "--no-plots"])
    assert exit_info.value.code == 2
    line = _error_line(capsys)
    assert f"{metrics} line 3 is not a meta-step's record" in line
    assert not (source / "results.json").exists()  # refused before any work
    metrics.write_bytes(intact)
    (source / "config.json").write_text("")  # an empty config in a warm-start source
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--method", "fomaml", "--meta-steps", "1", *TINY,
              "--init", f"{source}:multitask", "--out", str(tmp_path / "run")])  # fmt: skip
    assert exit_info.value.code == 2
    assert "config.json cannot be read as a run's settings" in _error_line(capsys)


# ------------------------------------------------ the probes, as the user met them
# Each probe of issue 28 through the command that met it, where a run is cheap: its
# exit status, one line naming the file and what to do, and the run's files as they
# were (or, for a write that failed, no torn or half-written file).

EVAL = ["--test-params", "0.04", "0.05", "--eval-steps", "0", "2", "--budget", "2"]
RUN = pathlib.Path("train", "multitask", "seed0")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, reference_cache):
    """A finished two-step `metapinn train` of multitask (the tests copy it)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    argv = ["train", "--method", "multitask", "--meta-steps", "2", "--checkpoint-every", "1",
            *TINY, *EVAL, "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    return out


def _copy(run, tmp_path) -> pathlib.Path:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy


def _files(folder) -> dict:
    """The bytes of every file in `folder` but its locks (whose text names a holder)."""
    return {
        p.relative_to(folder): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != LOCK_FILE
    }


def _refused(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    return _error_line(capsys)


def _replace_members(path, **members: bytes) -> None:
    """Rewrite the `.npz` at `path` with some of its `.npy` members replaced."""
    with zipfile.ZipFile(path) as archive:
        kept = {n.removesuffix(".npy"): archive.read(n) for n in archive.namelist()}
    _npz(path, {**kept, **members})


def _hold_lock(folder, ready) -> subprocess.Popen:
    """Another process, holding `folder`'s lock until it is killed."""
    code = (
        "import pathlib, time\n"
        "from metapinn._lock import folder_lock\n"
        f"with folder_lock({str(folder)!r}):\n"
        f"    pathlib.Path({str(ready)!r}).write_text('held')\n"
        "    time.sleep(600)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 120
    while not ready.exists():
        if holder.poll() is not None or time.monotonic() > deadline:
            holder.kill()
            raise AssertionError("the lock holder never started")
        time.sleep(0.05)
    return holder


@pytest.mark.e2e  # a run, and a second process holding its folder
def test_a_resume_of_a_folder_another_process_writes_is_refused_in_one_line(
    finished_run, tmp_path, capsys
):
    run = _copy(finished_run, tmp_path)
    before = _files(run)
    holder = _hold_lock(run, tmp_path / "ready")
    try:
        line = _refused(["train", "--resume", "--meta-steps", "4", "--no-progress",
                         "--devices", "1", "--out", str(run)], capsys)  # fmt: skip
    finally:
        holder.kill()
        holder.wait()
    assert f"{run} is being written by another process (PID {holder.pid} on" in line
    assert _files(run) == before


def test_each_save_keeps_the_previous_checkpoint_through_a_name_of_its_own(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.npz"
    links = []
    real_link = os.link

    def link(source, target):
        links.append(pathlib.Path(target).name)
        real_link(source, target)

    monkeypatch.setattr(os, "link", link)
    for step in range(3):
        mp.save_checkpoint(path, {"w": np.full(3, float(step))}, {"step": step})
    assert len(links) == 2 and len(set(links)) == 2  # no two writers share a name
    assert all(map(is_temporary, links))  # a killed writer's leftover is removed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.npz", "checkpoint.prev.npz"]


def _full_disk_at(monkeypatch, name: str) -> None:
    """Atomic writes of files called `name` fail as on a full disk."""
    import metapinn._checkpoint as checkpoint_module

    real = checkpoint_module._temporary_beside

    def temporary_beside(path):
        if pathlib.Path(path).name == name:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path)

    monkeypatch.setattr(checkpoint_module, "_temporary_beside", temporary_beside)


@pytest.mark.e2e  # a failed start, then the run
def test_the_advice_after_a_failed_start_reruns_the_same_experiment(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    argv = ["train", "--method", "multitask", "--meta-steps", "0", *TINY, "--width", "9",
            "--out", str(out)]  # fmt: skip
    with monkeypatch.context() as patch:
        _full_disk_at(patch, "config.json")
        with pytest.raises(SystemExit, match="2"):  # one line, status 2
            main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert f"cannot write {out / 'config.json'}: the disk is full" in err
    assert "run the same command again (the folder holds no run yet)" in err
    assert "--resume" not in err
    # What the advice once said starts no other experiment (the default workload).
    line = _refused(["train", "--resume", "--no-progress", "--devices", "1",
                     "--out", str(out)], capsys)  # fmt: skip
    assert f"cannot resume {out}: it holds no run" in line
    assert not (out / "config.json").exists() and not (out / "train").exists()
    assert main(argv) == 0  # what it says now
    assert json.loads((out / "config.json").read_text())["width"] == 9


class _DiskFullAfter:
    """The `os` module, but its `write` finds the disk full after `writes` writes:
    half the next one reaches the file, then ENOSPC."""

    def __init__(self, writes: int):
        self.writes = writes

    def __getattr__(self, name):
        return getattr(os, name)

    def write(self, fd, data):
        if self.writes == 0:
            os.write(fd, bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, "No space left on device")
        self.writes -= 1
        return os.write(fd, data)


@pytest.mark.e2e  # a run stopped by a full disk, then resumed
def test_a_full_disk_while_appending_metrics_is_one_named_error_and_the_run_resumes(
    tmp_path, monkeypatch, capsys
):
    out = tmp_path / "run"
    args = ["--method", "multitask", "--meta-steps", "4", "--checkpoint-every", "1", *TINY,
            "--out", str(out)]  # fmt: skip
    metrics, checkpoint = out / RUN / "metrics.jsonl", out / RUN / "checkpoint.npz"
    with monkeypatch.context() as patch:
        patch.setattr("metapinn._metrics_file.os", _DiskFullAfter(2))
        with pytest.raises(SystemExit, match="2"):  # one line, status 2
            main(["train", *args])
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert f"cannot write {metrics}: the disk is full" in err
    assert "continue with --resume and the same --out" in err
    assert metrics.read_bytes().endswith(b"\n")  # no torn line
    assert [r["step"] for r in mp.read_metrics(metrics)] == [0, 1]
    assert checkpoint_step(checkpoint, read_checkpoint_meta(checkpoint)) == 2
    assert main(["train", "--resume", *args]) == 0  # once there is room again
    assert [r["step"] for r in mp.read_metrics(metrics)] == [0, 1, 2, 3]


def test_a_bit_flipped_reference_cache_file_is_recomputed_and_replaced(tmp_path):
    first = _heat_reference(tmp_path)
    (path,) = tmp_path.glob("*.npz")
    raw = bytearray(path.read_bytes())
    at = raw.find(np.ascontiguousarray(first[0], "<f8").tobytes())
    assert at > 0
    raw[at + 8 * 20 + 3] ^= 0x10  # one bit of one value
    path.write_bytes(bytes(raw))
    with pytest.raises(zipfile.BadZipFile, match="CRC"), np.load(path) as data:
        data["u"]  # what a plain reader meets
    np.testing.assert_array_equal(_heat_reference(tmp_path), first)
    with np.load(path) as data:
        np.testing.assert_array_equal(data["u"][None], first)


@pytest.mark.e2e  # a warm start refused before it trains
def test_a_warm_start_from_a_run_of_another_dtype_is_a_named_error_that_leaves_nothing(
    finished_run, tmp_path, capsys
):
    out = tmp_path / "run"
    argv = ["train", "--method", "fomaml", "--meta-steps", "0", *TINY,
            "--init", f"{finished_run}:multitask", "--out", str(out)]  # fmt: skip
    line = _refused([*argv, "--dtype", "float64"], capsys)
    assert f"init='{finished_run}:multitask' is not this run's network" in line
    assert "dtype float32, expected" in line and "float64" in line
    assert not out.exists()  # a failed start leaves nothing to refuse a retry
    assert main([*argv, "--dtype", "float32"]) == 0


@pytest.mark.e2e  # a failed warm start, then its retry
def test_a_failed_start_leaves_no_run_and_its_retry_is_not_refused(finished_run, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()  # the user's: kept
    argv = ["train", "--method", "fomaml", "--meta-steps", "0", *TINY,
            "--init", f"{finished_run}:multitask", "--out", str(out)]  # fmt: skip
    line = _refused([*argv, "--width", "9"], capsys)
    assert "is not this run's network" in line
    assert {p.name for p in out.iterdir()} <= {LOCK_FILE}  # counts as empty
    assert main(argv) == 0  # the same command, corrected: not "already holds a run"


@pytest.mark.e2e  # a library start refused, then the corrected one
def test_a_library_start_from_another_network_writes_nothing(finished_run, tmp_path):
    config = (
        RunFolder(finished_run)
        .read_config()
        .replace(methods=["fomaml"], meta_steps=0, init=f"{finished_run}:multitask", width=9)
    )
    out = tmp_path / "run"
    with pytest.raises(mp.experiment.ConfigError, match="is not this run's network"):
        mp.experiment.train_runs(config, out, progress=False, log=lambda _: None)
    assert not (out / "config.json").exists()  # checked before anything is written
    mp.experiment.train_runs(config.replace(width=8), out, progress=False, log=lambda _: None)
    assert (out / "config.json").exists()


@pytest.mark.e2e  # resumes refused before they train
@pytest.mark.parametrize("meta", ["[1, 2]", '{"config": {}}', '{"step": "2"}'])
def test_malformed_checkpoint_metadata_stops_a_resume_in_one_line(
    finished_run, tmp_path, capsys, meta
):
    run = _copy(finished_run, tmp_path)
    checkpoint = run / RUN / "checkpoint.npz"
    _replace_members(checkpoint, __meta__=_npy(np.asarray(meta)))
    before = _files(run)
    line = _refused(["train", "--resume", "--meta-steps", "4", "--no-progress",
                     "--devices", "1", "--out", str(run)], capsys)  # fmt: skip
    assert f"checkpoint {checkpoint} cannot be read" in line
    assert _files(run) == before


@pytest.mark.e2e  # resumes and evaluations refused before any work
@pytest.mark.parametrize(
    "damage",
    [
        lambda lines: [lines[0], b"\x00\xff\xfe\x80", *lines[2:]],  # binary bytes
        lambda lines: [lines[0], b"12", *lines[2:]],  # a number
        lambda lines: [lines[0], b"garbage", *lines[1:]],  # a garbage middle line
    ],
    ids=["binary", "number", "garbage-middle"],
)
def test_a_damaged_metrics_line_stops_a_resume_and_an_evaluation_in_one_line(
    finished_run, tmp_path, capsys, damage
):
    run = _copy(finished_run, tmp_path)
    metrics = run / RUN / "metrics.jsonl"
    metrics.write_bytes(b"\n".join(damage(metrics.read_bytes().split(b"\n"))))
    before = _files(run)
    line = _refused(["evaluate", str(run), "--no-plots"], capsys)
    assert f"{metrics} line 2 is not a meta-step's record" in line
    line = _refused(["train", "--resume", "--meta-steps", "4", "--no-progress",
                     "--devices", "1", "--out", str(run)], capsys)  # fmt: skip
    assert f"{metrics} line 2 is not a meta-step's record" in line
    assert _files(run) == before


@pytest.mark.parametrize(
    "content, match",
    [(b'{"vary": {"width": [8, 9]}, "name": "\xff"}', "is not UTF-8 text"), (None, "is a folder")],
)
def test_a_grid_file_that_is_not_utf8_or_is_a_folder_is_named(tmp_path, capsys, content, match):
    grid = tmp_path / "grid.json"
    if content is None:
        grid.mkdir()
    else:
        grid.write_bytes(content)
    out = tmp_path / "out"
    line = _refused(["ablate", str(grid), "--out", str(out), "--no-progress"], capsys)
    assert f"grid file {grid} {match}" in line
    assert not out.exists()


@pytest.mark.e2e  # a resume and an evaluation refused before any work
def test_a_checkpoint_declaring_8_gib_is_refused_in_one_line_without_allocating_it(
    finished_run, tmp_path, capsys
):
    import io
    import tracemalloc

    run = _copy(finished_run, tmp_path)
    checkpoint = run / RUN / "checkpoint.npz"
    header = io.BytesIO()  # a float64 array of 2**30 entries (8 GiB), with 64 KiB of data
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (1 << 30,)}
    )
    _replace_members(checkpoint, leaf_00000=header.getvalue() + bytes(1 << 16))
    assert checkpoint.stat().st_size < 100_000
    before = _files(run)
    tracemalloc.start()
    try:
        for argv in (["evaluate", str(run), "--no-plots"],
                     ["train", "--resume", "--no-progress", "--devices", "1",
                      "--out", str(run)]):  # fmt: skip
            line = _refused(argv, capsys)
            assert f"checkpoint {checkpoint}: array 0 has shape (1073741824,)" in line
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**28  # nothing near 8 GiB was asked for
    assert _files(run) == before


@pytest.mark.e2e  # a source run, and two warm starts from it
def test_an_init_folder_whose_path_holds_a_colon_is_read_as_a_folder(tmp_path):
    from metapinn._experiment._problem import initialisation

    source = tmp_path / "runs:old"
    args = ["--meta-steps", "1", *TINY]
    assert main(["train", "--method", "multitask", *args, "--out", str(source)]) == 0
    for init, out in [(source / RUN, tmp_path / "a"), (f"{source}:multitask", tmp_path / "b")]:
        argv = ["train", "--method", "fomaml", "--meta-steps", "0", *TINY,
                "--init", str(init), "--out", str(out)]  # fmt: skip
        assert main(argv) == 0, init
        config = RunFolder(out).read_config()
        params, _, _ = initialisation(config, 0)
        started = RunFolder(out).load_trained(config, "fomaml", 0, params)
        trained = RunFolder(source).load_trained(
            RunFolder(source).read_config(), "multitask", 0, params
        )
        for a, b in zip(jax.tree_util.tree_leaves(started), jax.tree_util.tree_leaves(trained),
                        strict=True):  # fmt: skip
            np.testing.assert_array_equal(a, b)


@pytest.mark.e2e  # an evaluation stopped by a full disk, then done
def test_evaluate_on_a_full_disk_advises_only_what_evaluate_can_do(
    finished_run, tmp_path, monkeypatch, capsys
):
    run = _copy(finished_run, tmp_path)
    with monkeypatch.context() as patch:
        _full_disk_at(patch, "results.json")
        with pytest.raises(SystemExit, match="2"):  # one line, status 2
            main(["evaluate", str(run), "--no-plots"])
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert f"cannot write {run / 'results.json'}: the disk is full" in err
    assert "once it can be written, run the same command again" in err
    assert "--resume" not in err
    assert not (run / "results.json").exists()
    assert main(["evaluate", str(run), "--no-plots"]) == 0


@pytest.mark.e2e  # a run of no meta-steps, evaluated
def test_a_run_of_no_meta_steps_is_evaluated(tmp_path, reference_cache, capsys):
    out = tmp_path / "run"
    argv = ["train", "--method", "multitask", "--meta-steps", "0", *TINY, *EVAL,
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert main(["evaluate", str(out), "--no-plots"]) == 0
    assert "Multi-task" in (out / "results.md").read_text()


@pytest.mark.e2e  # a resumed run
def test_a_resume_removes_the_temporaries_a_killed_writer_left(finished_run, tmp_path):
    run = _copy(finished_run, tmp_path)
    leftovers = [run / ".config.json.1a2b3c.tmp", run / RUN / ".checkpoint.npz.4d5e6f.tmp",
                 run / RUN / ".checkpoint.prev.npz.a1b2c3.tmp"]  # fmt: skip
    for path in leftovers:
        path.write_bytes(b"half")
    argv = ["train", "--resume", "--meta-steps", "3", "--no-progress", "--devices", "1"]
    assert main([*argv, "--out", str(run)]) == 0
    assert not any(path.exists() for path in leftovers)
    assert read_checkpoint_meta(run / RUN / "checkpoint.npz")["step"] == 3
