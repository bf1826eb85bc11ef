"""The command line's devices and processes: XLA:CPU host devices, joining a
multi-process job, and the mesh a run splits its task batch over."""

import argparse
import os
from collections.abc import Sequence

import jax

from .._experiment import (
    ConfigError,
)
from .._meta_step import task_mesh
from .._xla import configure_cpu


def cpu_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the system has
    one, else `os.cpu_count()`): the default number of host devices."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity masks on this system (macOS, Windows)
        return os.cpu_count() or 1


def _start_jax(argv: Sequence[str]) -> str | None:
    """Set the XLA:CPU flags and join a multi-process job as the device flags in
    `argv` ask, before JAX starts its backend. **Returns:** an error message for
    inconsistent flags (reported once the command line is parsed), else `None`."""
    pre = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    pre.add_argument("--devices", type=int, default=None)
    pre.add_argument("--coordinator", default=None)
    pre.add_argument("--num-processes", type=int, default=None)
    pre.add_argument("--process-id", type=int, default=None)
    pre.add_argument("--distributed", action="store_true")
    try:
        flags, _ = pre.parse_known_args(argv)
    except argparse.ArgumentError:
        return None  # the full parser names the bad value
    joins = flags.distributed or any(
        v is not None for v in (flags.coordinator, flags.num_processes, flags.process_id)
    )
    devices = cpu_cores() if flags.devices is None else flags.devices
    try:
        # Faster XLA:CPU compiles of the meta-step (see metapinn._xla), and as many host
        # devices as asked for, by default one per core (in a multi-process job each
        # process keeps its own).
        configure_cpu(host_devices=devices if devices > 1 and not joins else None)
    except (RuntimeError, ValueError):
        pass  # JAX is already running in this Python process: keep its flags
    try:
        _join_job(flags)
    except ConfigError as e:
        return str(e)
    return None


def _join_job(args: argparse.Namespace) -> None:
    """Start `jax.distributed` if the flags ask for it (before any computation)."""
    explicit = [getattr(args, k, None) for k in ("coordinator", "num_processes", "process_id")]
    if any(v is not None for v in explicit):
        if any(v is None for v in explicit):
            raise ConfigError(
                "a multi-process job needs all of --coordinator, --num-processes and "
                "--process-id (or --distributed, from the cluster's environment)"
            )
        if not (args.num_processes >= 1 and 0 <= args.process_id < args.num_processes):
            raise ConfigError(
                f"--process-id {args.process_id} must be in 0..{args.num_processes - 1}"
            )
        jax.distributed.initialize(
            coordinator_address=args.coordinator,
            num_processes=args.num_processes,
            process_id=args.process_id,
        )
    elif getattr(args, "distributed", False):
        jax.distributed.initialize()


def _mesh(args: argparse.Namespace) -> jax.sharding.Mesh | None:
    devices = getattr(args, "devices", None)
    if jax.process_count() > 1:
        if args.out is None:  # the default folder's name holds each process's own clock
            raise ConfigError("a multi-process job needs --out DIR, the same for every process")
        return task_mesh(devices)
    if devices == 1 or (devices is None and len(jax.devices()) == 1):
        return None
    try:
        return task_mesh(devices)  # None: every device
    except ValueError as e:
        raise ConfigError(f"--devices {devices}: {e}") from None
