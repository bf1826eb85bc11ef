"""Runs that survive: the checkpoint before the last is kept; a damaged checkpoint is
named, and the previous one used only when asked; resume checks the metrics file and
the PRNG implementation; a full disk or read-only folder is a clear error that leaves
nothing half-written; SIGTERM or SIGINT checkpoints the step in progress and stops."""

import errno
import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import metapinn as mp
from metapinn._cli import main

from .helpers import small_problem, tree_allclose


OUTER = optax.adam(1e-3)  # one object: meta_step compiles once for the whole module
FOMAML = mp.FOMAML(inner_steps=2, inner_optimizer=0.01)
NUS = [0.02, 0.03, 0.04]


@pytest.fixture(scope="module")
def problem():
    params, static, loss_fn, batch = small_problem(jr.key(11), width=8, depth=1)
    to32 = lambda tree: jax.tree_util.tree_map(lambda x: x.astype(jnp.float32), tree)
    return to32(params), static, loss_fn, to32(batch)


def _train(problem, run_dir, **kwargs):
    params, static, loss_fn, batch = problem
    tasks = mp.BurgersTask(jnp.asarray(NUS, dtype=jnp.float32))
    settings = dict(steps=6, optimizer=OUTER, key=jr.key(3), tasks_per_step=2, progress=False,
                    run_dir=run_dir, checkpoint_every=2)  # fmt: skip
    settings.update(kwargs)
    return mp.meta_train(FOMAML, params, static, loss_fn, tasks, batch, **settings)


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_the_checkpoint_before_the_last_is_kept(tmp_path, getkey):
    params, *_ = small_problem(getkey())
    path = tmp_path / "checkpoint.npz"
    mp.save_checkpoint(path, params, {"step": 1})
    assert not mp.previous_checkpoint_path(path).exists()
    mp.save_checkpoint(path, params, {"step": 2})
    mp.save_checkpoint(path, params, {"step": 3})
    assert mp.previous_checkpoint_path(path) == tmp_path / "checkpoint.prev.npz"
    assert mp.load_checkpoint(path, params)[1] == {"step": 3}
    assert mp.load_checkpoint(path, params, previous=True)[1] == {"step": 2}
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.npz", "checkpoint.prev.npz"]
    mp.save_checkpoint(tmp_path / "other.npz", params, {"step": 1}, keep_previous=False)
    mp.save_checkpoint(tmp_path / "other.npz", params, {"step": 2}, keep_previous=False)
    assert not (tmp_path / "other.prev.npz").exists()


def test_a_damaged_checkpoint_is_named_and_the_previous_used_only_when_asked(tmp_path, problem):
    whole = _train(problem, tmp_path / "whole")
    with pytest.raises(mp.RunInterrupted):
        _train(problem, tmp_path / "run", stop_after=5)  # checkpoints at 2 and 4
    ckpt = tmp_path / "run" / "checkpoint.npz"
    _truncate(ckpt)
    with pytest.raises(mp.CorruptCheckpointError, match=f"{ckpt} cannot be read.*prev.npz"):
        _train(problem, tmp_path / "run", resume=True)
    with pytest.raises(ValueError, match="needs resume=True"):
        _train(problem, tmp_path / "fresh", previous_checkpoint=True)
    resumed = _train(problem, tmp_path / "run", resume=True, previous_checkpoint=True)
    assert resumed.start_step == 2
    assert tree_allclose(resumed.params, whole.params, rtol=0, atol=0)
    assert tree_allclose(resumed.opt_state, whole.opt_state, rtol=0, atol=0)
    rows = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["step"] for r in rows] == list(range(6))
    # A file that is no checkpoint at all, with nothing before it.
    bad = tmp_path / "junk" / "checkpoint.npz"
    bad.parent.mkdir()
    bad.write_bytes(b"not a zip file")
    with pytest.raises(mp.CorruptCheckpointError, match="no earlier checkpoint"):
        mp.load_checkpoint(bad, problem[0])


def test_resume_needs_a_run_dir(problem):
    """Without a run folder there is no checkpoint, nor a previous one, to continue
    from: asking for either is an error, not ignored."""
    with pytest.raises(ValueError, match=r"previous_checkpoint=True .* needs a run_dir"):
        _train(problem, None, resume=True, previous_checkpoint=True)
    # Nor is resuming without one: it would silently train a fresh run.
    with pytest.raises(ValueError, match=r"resume=True .* needs a run_dir"):
        _train(problem, None, resume=True)


def test_resume_checks_the_metrics_and_the_prng(tmp_path, problem):
    with pytest.raises(mp.RunInterrupted):
        _train(problem, tmp_path / "run", stop_after=5)
    metrics = tmp_path / "run" / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    assert len(lines) == 5  # a line past the checkpoint at step 4: dropped on resume
    metrics.write_text("\n".join(lines[:3]) + "\n")
    with pytest.raises(ValueError, match="at step 4, but .*metrics.jsonl holds only 3 lines"):
        _train(problem, tmp_path / "run", resume=True)
    metrics.write_text("\n".join(lines) + "\n")
    with pytest.raises(mp.ResumeMismatchError, match="'threefry2x32' PRNG key, this one is 'rbg'"):
        _train(problem, tmp_path / "run", resume=True, key=jr.key(3, impl="rbg"))
    assert _train(problem, tmp_path / "run", resume=True).start_step == 4


def test_a_full_disk_or_read_only_folder_is_a_clear_error(tmp_path, getkey, monkeypatch):
    params, *_ = small_problem(getkey())
    path = tmp_path / "checkpoint.npz"
    mp.save_checkpoint(path, params, {"step": 1})
    before = path.read_bytes()

    def full(file, **arrays):
        file.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez", full)
    with pytest.raises(mp.RunFolderError, match=f"cannot write {path}: the disk is full"):
        mp.save_checkpoint(path, params, {"step": 2}, keep_previous=False)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.npz"]  # no temporary file left

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(os, "open", read_only)  # creating the temporary file
    with pytest.raises(mp.RunFolderError, match="results.json: the folder is on a read-only"):
        mp._checkpoint.write_json(tmp_path / "results.json", {"a": 1})
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.npz"]


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_respect_the_umask(tmp_path, getkey, umask):
    """Every file is written as a plain `open` would write it, 0o666 less the umask (a
    temporary file from `tempfile.mkstemp` is 0o600 whatever the umask: on a shared
    file system no collaborator could read a run's results)."""
    params, *_ = small_problem(getkey())
    old = os.umask(umask)
    try:
        mp._checkpoint.write_json(tmp_path / "results.json", {"a": 1})
        mp._checkpoint.write_text(tmp_path / "results.md", "# results\n")
        mp._checkpoint.atomic_write(tmp_path / "plot.png", lambda f: f.write(b"png"), True)
        mp.save_checkpoint(tmp_path / "checkpoint.npz", params, {"step": 1})
        mp.save_checkpoint(tmp_path / "checkpoint.npz", params, {"step": 2})  # keeps step 1
        # The reference cache, which collaborators share too.
        mp._pde._reference_cache._save(tmp_path / "cache" / "u.npz", "key", np.zeros(3))
    finally:
        os.umask(old)
    assert oct(os.stat(tmp_path / "cache" / "u.npz").st_mode & 0o777) == oct(0o666 & ~umask)
    names = ["cache", "checkpoint.npz", "checkpoint.prev.npz", "plot.png", "results.json",
             "results.md"]  # fmt: skip
    assert sorted(os.listdir(tmp_path)) == names
    names.remove("cache")
    for name in names:
        assert oct(os.stat(tmp_path / name).st_mode & 0o777) == oct(0o666 & ~umask), name


def test_cli_resumes_a_damaged_run_only_with_previous_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    flags = ["train", "--method", "reptile", "--width", "8", "--depth", "1",
             "--n-interior", "24", "--n-initial", "8", "--n-boundary", "4",
             "--meta-steps", "6", "--checkpoint-every", "2", "--no-progress",
             "--out", str(out)]  # fmt: skip
    assert main([*flags, "--stop-after", "5"]) == 3
    ckpt = out / "train" / "reptile" / "seed0" / "checkpoint.npz"
    _truncate(ckpt)
    capsys.readouterr()
    assert main(["show", str(out)]) == 0
    assert "damaged checkpoint" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main([*flags, "--resume"])
    assert exit_info.value.code == 2
    assert f"checkpoint {ckpt} cannot be read" in capsys.readouterr().err
    assert main([*flags, "--resume", "--previous-checkpoint"]) == 0
    assert mp._checkpoint.read_checkpoint_meta(ckpt)["step"] == 6


def _train_command(out, *extra):
    return [sys.executable, "-m", "metapinn._cli", "train", "--method", "fomaml",
            "--width", "8", "--depth", "1", "--n-interior", "24", "--n-initial", "8",
            "--n-boundary", "4", "--checkpoint-every", "1000", "--no-progress",
            "--out", str(out), *extra]  # fmt: skip


def _lines(path):
    return len(path.read_text().splitlines()) if path.exists() else 0


def _final_arrays(out):
    with np.load(out / "train" / "fomaml" / "seed0" / "checkpoint.npz") as data:
        return {k: data[k] for k in data.files}


@pytest.mark.e2e  # two `metapinn train` processes of 200 meta-steps
@pytest.mark.parametrize(
    "sig", [signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.slow)]
)
def test_a_signal_checkpoints_the_step_in_progress_and_stops(tmp_path, sig):
    """A pre-empted job (SIGTERM) or Ctrl-C (SIGINT) between checkpoints: the step in
    progress finishes, is checkpointed (no checkpoint was due for 1000 steps), the
    command exits 3 naming the signal, and the resumed run ends where an
    uninterrupted one does."""
    steps = ["--meta-steps", "200"]
    subprocess.run(_train_command(tmp_path / "whole", *steps), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    out = tmp_path / "run"
    process = subprocess.Popen(_train_command(out, *steps), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)  # fmt: skip
    metrics = out / "train" / "fomaml" / "seed0" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while _lines(metrics) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(sig)
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 3, output
    assert f"stopped by {sig.name} after meta-step" in output
    meta = mp._checkpoint.read_checkpoint_meta(metrics.parent / "checkpoint.npz")
    assert 3 <= meta["step"] < 200 and meta["step"] == _lines(metrics)
    subprocess.run(_train_command(out, *steps, "--resume"), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    whole, resumed = _final_arrays(tmp_path / "whole"), _final_arrays(out)
    for k in whole:
        np.testing.assert_array_equal(resumed[k], whole[k], err_msg=k)


def _resumable(command, out):
    """`command` into `out`, resuming the run there if it has started (its settings
    then come from its folder, so the workload flag goes)."""
    if not (out / "config.json").exists():
        return [*command, "--out", str(out)]
    i = command.index("--workload")
    return [*command[:i], *command[i + 2 :], "--out", str(out), "--resume"]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_reproduce_survives_being_stopped_at_random_moments(tmp_path, sig):
    """Fault injection: a real `metapinn reproduce --quick` is stopped (kill -9, or
    SIGTERM) at random moments, over and over, and resumed each time: its results are
    those of an uninterrupted run, to the bit."""
    flags = ["reproduce", "--quick", "--workload", "W1", "--width", "8", "--depth", "1",
             "--n-interior", "24", "--n-initial", "8", "--n-boundary", "4",
             "--methods", "reptile", "multitask", "--checkpoint-every", "3",
             "--no-plots", "--no-progress"]  # fmt: skip
    command = [sys.executable, "-m", "metapinn._cli", *flags]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    # Each run computes its own reference (no shared cache), so that the first stopped
    # attempt has the uninterrupted run's work ahead of it, and the stops fall within it.
    env = {**os.environ, "METAPINN_CACHE": str(tmp_path / "cache-whole")}
    start = time.monotonic()
    subprocess.run([*command, "--out", str(tmp_path / "whole")], check=True, env=env, **quiet)
    whole_seconds = time.monotonic() - start
    env = {**os.environ, "METAPINN_CACHE": str(tmp_path / "cache-run")}
    out = tmp_path / "run"
    rng = np.random.default_rng(int(sig))
    stops = 0
    while stops < 6:
        process = subprocess.Popen(_resumable(command, out), env=env, **quiet)
        try:
            process.wait(timeout=float(rng.uniform(0.15, 0.7)) * whole_seconds)
        except subprocess.TimeoutExpired:
            process.send_signal(sig)
            process.wait()
            stops += 1
        else:
            assert process.returncode == 0
            break
    assert stops >= 1
    if not (out / "results.json").exists():
        subprocess.run(_resumable(command, out), check=True, env=env, **quiet)
    whole = json.loads((tmp_path / "whole" / "results.json").read_text())
    resumed = json.loads((out / "results.json").read_text())
    assert resumed["per_run"] == whole["per_run"]
    assert resumed["table"] == whole["table"]
