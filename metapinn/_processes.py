"""What a run needs of the processes it runs in: a barrier across the processes of a
multi-process job that waits as long as process 0 needs, the stop signals (SIGTERM,
SIGINT, or a pre-emption notice to any process), and host values for a mesh that
spans processes."""

import collections
import signal
import threading
from typing import Any

import jax
import numpy as np
from jaxtyping import PyTree


Mesh = jax.sharding.Mesh


class _StopSignals:
    """SIGTERM and SIGINT while a run trains (a pre-empted job, Ctrl-C): noted, so that
    the loop checkpoints the step it is in once it is done and stops. A second SIGINT
    interrupts at once. Installed only in the main thread (Python delivers signals
    there); in a multi-process job, JAX's preemption service is asked instead, so that
    every process stops at the same step."""

    def __init__(self):
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self):
        if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._note)
        return self

    def _note(self, signum, frame):
        if self.received == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def stop(self, step: int) -> str | None:
        """The name of the signal to stop for after `step`, if any."""
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            return (
                "a pre-emption notice"
                if multihost_utils.reached_preemption_sync_point(step)
                else None
            )
        return None if self.received is None else signal.Signals(self.received).name


def _spans_processes(mesh: Mesh | None) -> bool:
    """Whether `mesh` has devices of other processes (a multi-process job)."""
    return mesh is not None and any(
        d.process_index != jax.process_index() for d in mesh.devices.flat
    )


def _on_host(tree: PyTree) -> PyTree:
    """Every JAX array leaf as a NumPy array: in a multi-process job, each process
    passes its (identical) host values, which `jit` places on the global mesh, where an
    array already committed to a local device would not go."""
    return jax.tree_util.tree_map(lambda x: np.asarray(x) if isinstance(x, jax.Array) else x, tree)


_BARRIERS: collections.Counter[str] = collections.Counter()
"""How many barriers of each name this process has passed: every process meets the
same barriers in the same order, so the count tells one use of a name from the next."""


def _sync(name: str, poll_ms: int = 60_000) -> None:
    """A barrier across the processes of a multi-process job (none in one process),
    with no limit on the wait.

    Process 0 alone evaluates a run, for as long as the workload takes, while the
    others wait for it. JAX's own waits are bounded: its exit barrier and the call
    that leaves the job give up after 5 minutes and stop every process, so a
    two-process W3 job died 5 minutes into its evaluation. This barrier is kept on
    the job's coordination service instead: each process writes a key
    `metapinn/barrier/<count>/<name>/<process>`, then reads every process's, in
    waits of `poll_ms` milliseconds repeated until it is there. A process that
    dies is still noticed: JAX's heartbeats then stop the whole job.
    """
    if jax.process_count() == 1:
        return
    from jax._src import distributed

    client = distributed.global_state.client
    if client is None:  # processes joined by other means than jax.distributed
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
        return
    _BARRIERS[name] += 1
    prefix = f"metapinn/barrier/{_BARRIERS[name]}/{name}"
    client.key_value_set(f"{prefix}/{jax.process_index()}", "here")
    for process in range(jax.process_count()):
        while True:
            try:
                client.blocking_key_value_get(f"{prefix}/{process}", poll_ms)
                break
            except jax.errors.JaxRuntimeError as error:
                if "DEADLINE_EXCEEDED" not in str(error):
                    raise
