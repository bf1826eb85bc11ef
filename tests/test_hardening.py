"""Failures that are the user's or the machine's, not the code's: each is a named,
one-line error (or a warning where nothing is lost), never a traceback or lost work."""

import argparse
import json
import os
import stat
import subprocess
import sys
import zipfile

import jax
import numpy as np
import optax
import pytest

import metapinn as mp
from metapinn._checkpoint import checkpoint_step, read_checkpoint_meta
from metapinn._cli import _after_a_write_error, main
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
