"""The `metapinn` command: reproduce, train, evaluate, solve, ablate, families, show.

The command line is split by concern: the parser (`_parser`, the experiment settings
as flags), the devices and processes (`_devices`), and what each command does
(`_commands`); here, the entry point and its one error boundary.

Settings come, in increasing precedence, from a named workload (`--workload`, W3 by
default) or a JSON config file (`--config`, whose missing keys take the built-in W1
defaults), the `--quick` preset, and flags. The resulting configuration is
stored with the run (`config.json` in its folder).
"""

import sys
import traceback
from collections.abc import Sequence

import jax

from .._checkpoint import CheckpointMismatchError, CorruptCheckpointError, RunFolderError
from .._experiment import ConfigError
from .._experiment._folder import RunFolder
from .._lock import RunFolderBusy
from .._meta_train import NonFiniteLossError, ResumeMismatchError, RunInterrupted
from .._metrics_file import DamagedMetricsError
from .._xla import pin_matmul_precision
from ._commands import (
    _cmd_ablate,
    _cmd_evaluate,
    _cmd_families,
    _cmd_reproduce,
    _cmd_show,
    _cmd_solve,
    _cmd_train,
    _config_for_run as _config_for_run,
)
from ._devices import _start_jax
from ._parser import build_parser as build_parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `metapinn` command. **Returns:** the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # Before anything touches JAX (building the parser does: its defaults are checked
    # configurations): the XLA flags, and joining a multi-process job.
    early_error = _start_jax(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv
    devices = getattr(args, "devices", None)
    if devices is not None and devices < 1:
        parser.exit(2, f"metapinn {args.command}: error: --devices must be >= 1, got {devices}\n")
    if early_error is not None:
        parser.exit(2, f"metapinn {args.command}: error: {early_error}\n")
    pin_matmul_precision()  # full float32 products on a GPU or TPU (see metapinn._xla)
    # Float64 is needed by the reference solver (and by `--dtype float64`); training
    # stays in the configured dtype, as every array is created with it explicitly.
    # Set before any array exists, never toggled later.
    jax.config.update("jax_enable_x64", True)
    command = {
        "reproduce": _cmd_reproduce,
        "train": _cmd_train,
        "evaluate": _cmd_evaluate,
        "show": _cmd_show,
        "families": _cmd_families,
        "ablate": _cmd_ablate,
        "solve": _cmd_solve,
    }[args.command]
    try:
        return command(args)
    except (
        ConfigError,
        FileExistsError,
        FileNotFoundError,
        CorruptCheckpointError,
        CheckpointMismatchError,
        DamagedMetricsError,
        RunFolderBusy,
        ResumeMismatchError,
    ) as e:
        parser.exit(2, f"metapinn {args.command}: error: {e}\n")
    except RunFolderError as e:  # one line: what cannot be written, and what to do
        parser.exit(2, f"metapinn {args.command}: error: {e}; {_after_a_write_error(args)}\n")
    except NonFiniteLossError as e:
        print(f"metapinn {args.command}: {e}", file=sys.stderr)
        return 1
    except RunInterrupted as e:
        print(f"metapinn {args.command}: {e}", file=sys.stderr)
        print("continue with --resume and the same --out", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print(
            f"\nmetapinn {args.command}: interrupted; the last checkpoints are intact, "
            "continue with --resume and the same --out",
            file=sys.stderr,
        )
        return 130
    except Exception:
        # Every expected failure is one line above; anything else is a bug.
        traceback.print_exc()
        print(
            f"metapinn {args.command}: this is a bug in metapinn (an unexpected error); "
            "please report it with the command line and the traceback above",
            file=sys.stderr,
        )
        return 1
    return 0  # pragma: no cover


def _after_a_write_error(args) -> str:
    """What to do once a file of the command's folder can be written again: resume a
    run (or grid) that the folder holds, else run the command again as it was."""
    out = getattr(args, "out", None)
    if args.command in ("reproduce", "train") and out is not None:
        if RunFolder(out).holds_run():
            return "once it can be written, continue with --resume and the same --out"
        return "once it can be written, run the same command again (the folder holds no run yet)"
    if args.command == "ablate" and out is not None and (out / "grid.json").exists():
        return "once it can be written, continue with --resume and the same --out"
    return "once it can be written, run the same command again"
