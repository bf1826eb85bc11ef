"""The run folder as one object: its lock (two real processes), its metrics reader,
its settings check and markers; the methods as objects; the config's field roles."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import metapinn as mp
from metapinn._lock import LOCK_FILE, folder_lock, is_locked_here
from metapinn.experiment import (
    LEARNERS,
    METHOD_NAMES,
    ROLES,
    ExperimentConfig,
    Method,
    RunFolder,
    fields_with_role,
)


def _holder(folder, ready):
    """A process that holds `folder`'s lock until it is killed."""
    code = textwrap.dedent(
        f"""
        import pathlib, time
        from metapinn._lock import folder_lock
        with folder_lock({str(folder)!r}):
            pathlib.Path({str(ready)!r}).write_text("held")
            time.sleep(600)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", code])
    for _ in range(600):
        if ready.exists():
            return process
        time.sleep(0.05)
    process.kill()
    raise AssertionError("the lock holder never started")


def test_a_second_writer_is_refused_at_once_and_a_killed_holder_leaves_no_lock(tmp_path):
    folder = tmp_path / "run"
    holder = _holder(folder, tmp_path / "ready")
    try:
        t0 = time.perf_counter()
        with pytest.raises(
            mp.RunFolderBusy, match=rf"{folder} is being written by .*PID {holder.pid}"
        ):
            with folder_lock(folder):
                pass
        assert time.perf_counter() - t0 < 5  # refused, not waited for
        # The pipeline's entry points are refused the same way, before any work.
        config = mp.experiment.workload("W1", seeds=(0,), methods=("multitask",), meta_steps=1)
        with pytest.raises(mp.RunFolderBusy):
            mp.experiment.train_runs(config, folder, progress=False, log=lambda _: None)
        assert sorted(p.name for p in folder.iterdir()) == [LOCK_FILE]
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with folder_lock(folder):  # the kernel released the dead holder's lock
        assert is_locked_here(folder)
    assert not is_locked_here(folder)


def test_the_lock_is_reentrant_within_a_process(tmp_path):
    with folder_lock(tmp_path):
        with folder_lock(tmp_path / "."):
            assert is_locked_here(tmp_path)
        assert is_locked_here(tmp_path)
    assert not is_locked_here(tmp_path)
    # A folder holding only the lock file counts as empty: a new run may start there.
    RunFolder(tmp_path).check(ExperimentConfig(), resume=False)


@pytest.mark.slow  # three trials of two `metapinn train --resume` of about 15 s
def test_two_resumers_of_one_folder_one_refused_one_finishing(tmp_path):
    """Fault injection: two `metapinn train --resume` of one interrupted run at once,
    three times (once the second starting after the first holds the lock, twice both
    started together). Each time one is refused with a one-line error naming the
    holder, the other finishes, and the run ends, bit for bit, where an uninterrupted
    one does."""
    import shutil

    import numpy as np

    base = ["train", "--method", "multitask", "--seed", "0", "--no-progress", "--devices", "1"]
    # Long enough (about 14 s on 2 cores) that the first resumer still trains when the
    # second gets to the folder.
    settings = ["--meta-steps", "4000", "--checkpoint-every", "100"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    whole, interrupted = tmp_path / "whole", tmp_path / "interrupted"

    def command(out, *extra):
        return [sys.executable, "-m", "metapinn._cli", *base, *settings, "--out", str(out), *extra]

    def final(out):
        with np.load(out / "train/multitask/seed0/checkpoint.npz") as data:
            return {k: data[k] for k in data.files}

    subprocess.run(command(whole), check=True, env=env, capture_output=True)
    subprocess.run(command(interrupted, "--stop-after", "100"), env=env, capture_output=True)
    for trial in range(3):
        run = tmp_path / f"run{trial}"
        shutil.copytree(interrupted, run)
        first = subprocess.Popen(
            command(run, "--resume"), env=env, stderr=subprocess.PIPE, text=True
        )
        lock = run / LOCK_FILE
        for _ in range(600 if trial == 0 else 0):  # until the first holds the lock
            if lock.exists() and lock.read_text().strip():
                break
            time.sleep(0.05)
        second = subprocess.run(command(run, "--resume"), env=env, capture_output=True, text=True)
        _, first_err = first.communicate(timeout=600)
        outcomes = sorted([first.returncode, second.returncode])
        assert outcomes == [0, 2], (trial, first_err, second.stderr)
        refused = second.stderr if second.returncode else first_err
        assert "is being written by another process (PID" in refused
        assert "Traceback" not in refused and len(refused.strip().splitlines()) == 1
        a = (whole / "train/multitask/seed0/metrics.jsonl").read_text().splitlines()
        b = (run / "train/multitask/seed0/metrics.jsonl").read_text().splitlines()
        assert [json.loads(x)["meta_loss"] for x in a] == [json.loads(x)["meta_loss"] for x in b]
        expected, got = final(whole), final(run)
        for k in expected:
            np.testing.assert_array_equal(got[k], expected[k], err_msg=f"{trial}: {k}")


def _record(step: int) -> str:
    return json.dumps({"step": step, "meta_loss": 1.0, "query_loss": [1.0], "tasks": [0],
                       "seconds": 0.1 * step})  # fmt: skip


@pytest.mark.parametrize(
    "text, expected",
    [
        ("".join(_record(i) + "\n" for i in range(3)), 3),
        ("".join(_record(i) + "\n" for i in range(3)) + '{"step": 3, "me', 3),  # torn by a kill
        ("", 0),
    ],
)
def test_metrics_reader_drops_only_a_torn_last_line(tmp_path, text, expected):
    path = tmp_path / "metrics.jsonl"
    path.write_text(text)
    assert [r["step"] for r in mp.read_metrics(path)] == list(range(expected))


@pytest.mark.parametrize(
    "text, match",
    [
        (_record(0) + "\ngarbage\n" + _record(1) + "\n", "line 2 is not a meta-step's record"),
        (_record(0) + "\n\x00\xff\n", "line 2 is not"),
        (_record(0) + "\n12\n", "line 2 is not"),
        (_record(0) + "\n" + _record(2) + "\n", "line 2 is step 2, expected 1"),
        (_record(0) + "\n\n" + _record(1) + "\n", "line 2 is empty"),
        (_record(0) + "\n" + _record(0) + "\n", "two processes"),
    ],
)
def test_a_damaged_metrics_line_is_a_named_error(tmp_path, text, match):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(mp.DamagedMetricsError, match=match) as info:
        mp.read_metrics(path)
    assert str(path) in str(info.value)


def test_the_settings_check_names_each_difference_and_allows_the_resumable_ones(tmp_path):
    config = ExperimentConfig(seeds=(0,))
    folder = RunFolder(tmp_path)
    folder.write_config(config)
    assert folder.read_config() == config
    with pytest.raises(mp.experiment.ConfigError, match=r"depth \(stored 2, given 3\), width "):
        folder.check(config.replace(width=9, depth=3), resume=True)
    changed = {"seeds": (0, 1), "eval_steps": (0, 5), "budget": 5, "meta_steps": 9}
    folder.check(config.replace(**changed), resume=True)
    assert set(changed) <= set(fields_with_role("resumable"))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(mp.experiment.ConfigError, match="config.json cannot be read"):
        folder.read_config()
    with pytest.raises(mp.experiment.ConfigError, match="is not a metapinn run folder"):
        RunFolder(tmp_path / "elsewhere").read_config()


def test_divergence_records_and_the_layout(tmp_path):
    config = ExperimentConfig(methods=("maml", "transfer"), seeds=(0,))
    folder = RunFolder(tmp_path)
    assert folder.run_dir("maml", 0) == tmp_path / "train/maml/seed0"
    transfer = folder.run_dirs(config, "transfer", 0)
    assert set(transfer) == set(config.method("transfer").run_tasks(config))
    assert all(p.parent == tmp_path / "train/transfer/seed0" for p in transfer.values())
    assert folder.diverged(config, "maml", 0) is None
    folder.mark_diverged(folder.run_dir("maml", 0), {"step": 3, "message": "nan"})
    assert folder.diverged(config, "maml", 0) == {"step": 3, "message": "nan"}
    assert folder.diverged_runs() == [folder.run_dir("maml", 0)]
    folder.clear_diverged(folder.run_dir("maml", 0))
    assert folder.diverged(config, "maml", 0) is None


def test_a_method_is_an_object_with_its_own_settings():
    config = mp.experiment.workload("W3")
    reptile = config.method("cond-reptile")
    assert isinstance(reptile, Method)
    assert (reptile.kind.name, reptile.conditioned, reptile.transfer) == ("reptile", True, False)
    assert (reptile.inner_steps, reptile.inner_optimizer, reptile.meta_steps) == (10, "adam", 100)
    assert reptile.warm_start == "cond-multitask" and reptile.label == "Conditioned + Reptile"
    assert config.method("multitask").inner_steps == 0  # no inner loop, whatever is set
    assert config.method("transfer").transfer and not config.method("transfer").conditioned
    assert config.method("metasgd").learns_rule and config.method("metasgd").rule_row == (
        "metasgd+rule"
    )
    assert isinstance(config.method("maml").meta_learner(), mp.MAML)
    with pytest.raises(mp.experiment.ConfigError, match="methods='mamll' is invalid"):
        config.method("mamll")
    with pytest.raises(ValueError, match="unknown method 'cond-transfer'"):
        Method("cond-transfer")
    # Every learner is one entry: it makes a plain and a conditioned method.
    assert set(METHOD_NAMES) == {
        *LEARNERS,
        *("cond-" + k for k in LEARNERS),
        "transfer",
        "curriculum",
    }


def test_every_field_carries_known_roles_and_the_key_lists_follow_from_them():
    fields = dataclasses.fields(ExperimentConfig)
    for f in fields:
        assert f.metadata["roles"] <= set(ROLES), f.name
    assert set(fields_with_role("evaluation")) <= set(fields_with_role("resumable"))
    assert not set(fields_with_role("training")) & set(fields_with_role("evaluation"))
    assert fields_with_role("tasks") == (
        "train_params", "test_params", "n_train_tasks", "n_test_tasks"
    )  # fmt: skip
    # A method's settings are exactly the fields with the role "method".
    settings = ExperimentConfig().method_settings("maml")
    assert tuple(settings) == fields_with_role("method")
    with pytest.raises(ValueError, match="unknown role 'colour'"):
        fields_with_role("colour")


def test_the_top_level_namespace_is_the_library():
    names = {n for n in dir(mp) if not n.startswith("_")}
    for moved in ("ExperimentConfig", "reproduce", "workload", "quick", "configure_cpu",
                  "standard_grid", "reference_solution", "default_num_nodes"):  # fmt: skip
        assert moved not in names
    for name in ("ExperimentConfig", "reproduce", "RunFolder", "Method", "evaluate", "solve"):
        assert hasattr(mp.experiment, name)
    assert len(names) <= 100


def test_a_full_disk_while_appending_metrics_leaves_no_torn_line(tmp_path, monkeypatch):
    import errno

    from metapinn._metrics_file import MetricsAppender

    path = tmp_path / "metrics.jsonl"
    appender = MetricsAppender(path)
    for step in range(2):
        appender.append(json.loads(_record(step)))
    appender.flush()
    good = path.read_bytes()
    assert [r["step"] for r in mp.read_metrics(path)] == [0, 1]  # written as it goes
    real_write = os.write

    def full_disk(fd, data):  # half a record reaches the disk, then it is full
        real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(mp.RunFolderError, match=rf"cannot write {path}: the disk is full"):
        appender.append(json.loads(_record(2)))
    monkeypatch.setattr(os, "write", real_write)
    assert path.read_bytes() == good  # back to its last complete record
    appender.append(json.loads(_record(2)))  # once there is room again
    appender.close()
    assert [r["step"] for r in mp.read_metrics(path)] == [0, 1, 2]
