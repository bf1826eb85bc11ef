"""Meta-training over several devices and several processes: a run split over two
host devices of one process, and the same run as a two-process `jax.distributed` job
on 127.0.0.1 (gloo collectives on CPU), give the single-device run's parameters; in
the job, process 0 alone writes the run folder, and the job resumes after a stop."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import metapinn as mp
from metapinn._cli import main
from metapinn._xla import cpu_xla_flags


TINY = [
    "train", "--method", "maml", "--inner-steps", "2", "--width", "8", "--depth", "1",
    "--n-interior", "24", "--n-initial", "8", "--n-boundary", "4", "--meta-steps", "4",
    "--checkpoint-every", "2", "--no-progress",
]  # fmt: skip
"""A W1 run at a tiny size; its 6 training tasks a step split 3 + 3 over two devices."""


def _arrays(out):
    folder = out / "train" / "maml" / "seed0"
    with np.load(folder / "checkpoint.npz") as data:
        arrays = {k: data[k] for k in data.files if k != "__meta__"}
    rows = [json.loads(r) for r in (folder / "metrics.jsonl").read_text().splitlines()]
    return arrays, rows


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_two_processes(argv):
    """`python -m metapinn._cli *argv` started as a two-process job on 127.0.0.1, one
    CPU device per process. **Returns:** the two `Popen`s."""
    port = _free_port()
    env = {**os.environ, "XLA_FLAGS": cpu_xla_flags("")}
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "metapinn._cli",
                *argv,
                "--coordinator",
                f"127.0.0.1:{port}",
                "--num-processes",
                "2",
                "--process-id",
                str(i),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for i in range(2)
    ]
    return processes


def _two_process_job(argv, timeout=300):
    """`argv` as a two-process job (see `_start_two_processes`), run to its end.
    **Returns:** the exit codes and the processes' output."""
    processes = _start_two_processes(argv)
    outputs = [p.communicate(timeout=timeout)[0] for p in processes]
    return [p.returncode for p in processes], outputs


@pytest.mark.e2e
def test_two_devices_and_two_processes_give_the_single_device_run(tmp_path, capsys):
    assert main([*TINY, "--devices", "1", "--out", str(tmp_path / "one")]) == 0
    assert main([*TINY, "--devices", "2", "--out", str(tmp_path / "two")]) == 0
    # By default the command splits over every device there is (two in the tests).
    assert main([*TINY, "--out", str(tmp_path / "default")]) == 0
    one, one_rows = _arrays(tmp_path / "one")
    two, _ = _arrays(tmp_path / "two")
    default, _ = _arrays(tmp_path / "default")
    for k in two:
        np.testing.assert_array_equal(default[k], two[k], err_msg=k)
    # The mean over 6 tasks against the mean of two means of 3: float32 rounding.
    for k in one:
        np.testing.assert_allclose(two[k], one[k], rtol=2e-5, atol=1e-7, err_msg=k)

    def job(*flags):
        return _two_process_job([*TINY, "--out", str(tmp_path / "job"), *flags])

    # Both processes stop after 3 steps, as if killed (checkpoint at step 2); then
    # the whole job resumes.
    codes, output = job("--stop-after", "3")
    assert codes == [3, 3], "\n".join(output)
    codes, output = job("--resume")
    assert codes == [0, 0], "\n".join(output)
    joint, joint_rows = _arrays(tmp_path / "job")
    # Two processes of one device each compute what one process of two devices does.
    for k in two:
        np.testing.assert_allclose(joint[k], two[k], rtol=1e-6, atol=1e-8, err_msg=k)
    # One writer, one line a step; the line of step 2 was written again on resume.
    assert [r["step"] for r in joint_rows] == [0, 1, 2, 3]
    np.testing.assert_allclose(
        [r["meta_loss"] for r in joint_rows], [r["meta_loss"] for r in one_rows], rtol=1e-4
    )


@pytest.mark.slow  # three two-process jobs of up to 1000 meta-steps
def test_sigterm_to_one_process_stops_the_whole_job_at_one_step(tmp_path):
    """A pre-emption notice reaches one process of a job (SIGTERM to process 1): JAX's
    preemption service tells the other, both finish the same meta-step, process 0
    checkpoints it (none was due), both exit 3, and the resumed job ends where an
    uninterrupted one does.

    The job is long enough that the notice, which takes the service seconds to pass on,
    arrives before the last step on a fast machine too: at about 30 ms a step the job
    stopped after steps 176 and 218, and 60 steps were over before it arrived."""
    n_steps = 1000
    steps = ["--meta-steps", str(n_steps), "--checkpoint-every", str(n_steps)]
    codes, output = _two_process_job([*TINY, *steps, "--out", str(tmp_path / "whole")])
    assert codes == [0, 0], "\n".join(output)
    out = tmp_path / "job"
    processes = _start_two_processes([*TINY, *steps, "--out", str(out)])
    metrics = out / "train" / "maml" / "seed0" / "metrics.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and (
        not metrics.exists() or len(metrics.read_text().splitlines()) < 3
    ):
        time.sleep(0.02)
    processes[1].send_signal(signal.SIGTERM)
    outputs = [p.communicate(timeout=240)[0] for p in processes]
    assert [p.returncode for p in processes] == [3, 3], "\n".join(outputs)
    assert "stopped by a pre-emption notice after meta-step" in outputs[0]
    step = int(outputs[0].split("after meta-step ")[1].split()[0].rstrip(";,."))
    assert f"after meta-step {step}" in outputs[1]
    meta = mp._checkpoint.read_checkpoint_meta(metrics.parent / "checkpoint.npz")
    assert 3 <= meta["step"] == step + 1 < n_steps  # steps 0..step are done
    assert len(metrics.read_text().splitlines()) == step + 1
    codes, output = _two_process_job([*TINY, *steps, "--out", str(out), "--resume"])
    assert codes == [0, 0], "\n".join(output)
    (whole, whole_rows), (resumed, resumed_rows) = _arrays(tmp_path / "whole"), _arrays(out)
    for k in whole:
        np.testing.assert_array_equal(resumed[k], whole[k], err_msg=k)
    untimed = [[{k: v for k, v in r.items() if k != "seconds"} for r in rows]
               for rows in (resumed_rows, whole_rows)]  # fmt: skip
    assert untimed[0] == untimed[1]


def test_bad_process_flags_are_refused(tmp_path, capsys):
    for flags, match in [
        (["--coordinator", "127.0.0.1:1"], "needs all of --coordinator"),
        (["--coordinator", "127.0.0.1:1", "--num-processes", "2", "--process-id", "2"],
         "--process-id 2 must be in 0..1"),
        (["--devices", "0"], "--devices must be >= 1, got 0"),
        (["--devices", "3"], "--devices 3: devices must be an integer from 1 to 2"),
    ]:  # fmt: skip
        with pytest.raises(SystemExit) as exit_info:
            main([*TINY, *flags, "--out", str(tmp_path / "x")])
        assert exit_info.value.code == 2
        assert match in capsys.readouterr().err


_BARRIER_SCRIPT = """
import sys, time, jax
from metapinn._processes import _sync
jax.distributed.initialize(coordinator_address=sys.argv[1], num_processes=2,
                           process_id=int(sys.argv[2]))
for round in range(2):  # one name, used twice
    if jax.process_index() == 0:
        time.sleep(3)  # process 0 evaluating, for 15 waits of the others
    start = time.monotonic()
    _sync("evaluated", poll_ms=200)
    print(f"round {round}: waited {time.monotonic() - start:.2f} s", flush=True)
"""


def test_the_barrier_waits_past_any_timeout_for_process_0():
    """The barrier the processes meet at (e.g. while process 0 alone evaluates; JAX's
    own waits give up after 5 minutes) outlasts many of its waits, and a second use
    of the same name is a second barrier."""
    port = _free_port()
    processes = [
        subprocess.Popen([sys.executable, "-c", _BARRIER_SCRIPT, f"127.0.0.1:{port}", str(i)],
                         env={**os.environ, "XLA_FLAGS": cpu_xla_flags("")},
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(2)
    ]  # fmt: skip
    outputs = [p.communicate(timeout=120)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    waits = [[float(w) for w in re.findall(r"waited ([0-9.]+) s", out)] for out in outputs]
    assert len(waits[0]) == len(waits[1]) == 2, outputs
    assert all(w > 2.5 for w in waits[1]), outputs  # process 1 waited for process 0 both times
    assert all(w < 1.0 for w in waits[0]), outputs  # process 0 found process 1 there


@pytest.mark.e2e
def test_the_other_processes_leave_after_process_0_has_evaluated(tmp_path):
    """Process 0 alone evaluates a `reproduce`; the others wait for it before they
    leave the job (JAX's exit barrier gives up after 5 minutes, and takes every
    process down with it): when process 1 says it is done, the results are there."""
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({
        "name": "tiny", "width": 8, "depth": 1, "n_interior": 16, "n_initial": 8,
        "n_boundary": 4, "train_params": [0.02, 0.03], "test_params": [0.04],
        "methods": ["multitask"], "meta_steps": 4, "tasks_per_step": 2, "seeds": [0],
        "eval_steps": [0, 2], "budget": 2,
    }))  # fmt: skip
    out = tmp_path / "run"
    processes = _start_two_processes(["reproduce", "--config", str(config), "--out", str(out),
                                      "--no-progress", "--no-plots"])  # fmt: skip
    assert processes[1].stdout is not None
    seen = None
    for line in processes[1].stdout:
        if line.startswith("process 1:"):
            seen = (line, (out / "results.json").exists())
    outputs = [p.communicate(timeout=300)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    assert seen is not None and seen[1], seen


def test_matmul_precision_is_pinned_off_cpu(monkeypatch):
    """Full float32 products: left as they are on CPU (always full there), set to
    "highest" on a GPU or TPU (whose default is TF32 or bfloat16 passes)."""
    import jax

    import metapinn as mp

    assert mp.experiment.pin_matmul_precision() == "cpu"
    assert jax.config.jax_default_matmul_precision is None
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    try:
        assert mp.experiment.pin_matmul_precision() == "gpu"
        assert jax.config.jax_default_matmul_precision == "highest"
    finally:
        jax.config.update("jax_default_matmul_precision", None)


@pytest.mark.slow  # two processes train and evaluate a grid of two cells and a source
def test_a_two_process_ablation_gives_the_two_device_one(tmp_path, capsys):
    grid = tmp_path / "grid.json"
    settings = {
        "width": 8, "depth": 1, "n_interior": 24, "n_initial": 8, "n_boundary": 4,
        "meta_steps": 4, "checkpoint_every": 2, "seeds": [0], "eval_steps": [0, 3],
        "budget": 3, "eps": [0.9],
        "overrides": ["maml.init=multitask", "multitask.meta_steps=3"],
    }  # fmt: skip
    grid.write_text(json.dumps(
        {"workload": "W1", "settings": settings,
         "vary": {"method": ["maml"], "inner_steps": [1, 2]}}
    ))  # fmt: skip
    ablate = ["ablate", str(grid), "--no-progress", "--no-plots"]
    assert main([*ablate, "--devices", "2", "--out", str(tmp_path / "one")]) == 0
    capsys.readouterr()

    codes, outputs = _two_process_job([*ablate, "--out", str(tmp_path / "job")], timeout=600)
    assert codes == [0, 0], "\n".join(outputs)
    # Process 0 tabulates; process 1 trained every cell with it and printed no table.
    assert "written:" in outputs[0] and "written:" not in outputs[1]
    one = json.loads((tmp_path / "one" / "ablation.json").read_text())["rows"]
    job = json.loads((tmp_path / "job" / "ablation.json").read_text())["rows"]
    assert [r["cell"] for r in job] == [r["cell"] for r in one]
    for a, b in zip(job, one, strict=True):
        for k in ("0", "3"):
            np.testing.assert_allclose(a["rel_l2"][k]["mean"], b["rel_l2"][k]["mean"], rtol=1e-5)
