"""The `metapinn` command: reproduce, train, evaluate, show.

Settings come, in increasing precedence, from a named workload (`--workload`, W3 by
default) or a JSON config file (`--config`, whose missing keys take the built-in W1
defaults), the `--quick` preset, and flags. The resulting configuration is
stored with the run (`config.json` in its folder).
"""

import argparse
import dataclasses
import os
import pathlib
import sys
import typing
from collections.abc import Sequence

import jax

from ._checkpoint import CorruptCheckpointError, RunFolderError, read_checkpoint_meta
from ._experiment import (
    DEFAULT_WORKLOAD,
    QUICK,
    WORKLOADS,
    ConfigError,
    ExperimentConfig,
    default_out_dir,
    evaluate_runs,
    format_summary,
    load_config,
    quick,
    reproduce,
    train_runs,
    workload,
)
from ._experiment._ablation import check_grid_folder, run_ablation
from ._experiment._ablation_grid import (
    GRID_KEYS,
    make_grid,
    parse_vary,
    read_grid_file,
    stored_grid,
)
from ._experiment._ablation_report import format_ablation
from ._experiment._compat import old_flags
from ._experiment._config import _parse_override, field_help, fields_with_role
from ._experiment._folder import RunFolder
from ._experiment._methods import METHOD_NAMES
from ._experiment._solve import DEFAULT_STEPS, SOLVE_OPTIMIZERS, solve
from ._experiment._workloads import QUICK_SUFFIX
from ._lock import RunFolderBusy
from ._meta_step import task_mesh
from ._meta_train import CHECKPOINT, DamagedMetricsError, NonFiniteLossError, RunInterrupted
from ._pde._registry import family as get_family, family_table
from ._xla import configure_cpu, pin_matmul_precision


TRAIN_WORKLOAD = "W1"
"""The default workload of `metapinn train`: W3's meta-learners start from its
multi-task pre-training, which a one-method run does not hold."""


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_config_flags(
    parser: argparse.ArgumentParser, names: Sequence[str], defaults: ExperimentConfig, title: str
) -> None:
    group = parser.add_argument_group(title)
    for f in dataclasses.fields(ExperimentConfig):
        if f.name not in names:
            continue
        default = getattr(defaults, f.name)
        kwargs: dict = {"default": None, "dest": f.name}
        if f.type is bool:
            kwargs.update(action=argparse.BooleanOptionalAction)
            shown = "on" if default else "off"
        elif typing.get_origin(f.type) is tuple:
            (item, _) = typing.get_args(f.type)
            kwargs.update(nargs="+", type=item, metavar=item.__name__.upper())
            shown = " ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in default)
        else:
            kind = typing.cast(type, f.type)
            kwargs.update(type=kind, metavar=kind.__name__.upper())
            shown = str(default)
        flags = [_flag(f.name)] + [_flag(old) for old in old_flags(f.name)]
        group.add_argument(*flags, help=f"{field_help(f.name)} (default: {shown})", **kwargs)


def _add_device_flags(parser: argparse.ArgumentParser, distributed: bool) -> None:
    group = parser.add_argument_group("devices and processes")
    group.add_argument(
        "--devices",
        type=int,
        default=None,
        metavar="N",
        help="split each meta-step's task batch over N devices (on CPU: N host devices; "
        "a batch that N does not divide runs on one; 1: no splitting) (default: every "
        "local device, on CPU one per core; in a multi-process job, every device of "
        "every process)",
    )
    if not distributed:
        return
    group.add_argument(
        "--coordinator",
        default=None,
        metavar="HOST:PORT",
        help="join a multi-process job (jax.distributed) coordinated by process 0 at "
        "HOST:PORT, with --num-processes and --process-id: every process trains its share "
        "of each task batch, process 0 writes the run folder and evaluates (default: one "
        "process)",
    )
    group.add_argument(
        "--num-processes",
        type=int,
        default=None,
        metavar="N",
        help="processes in the job (default: none, one process)",
    )
    group.add_argument(
        "--process-id",
        type=int,
        default=None,
        metavar="I",
        help="this process, 0 to N-1 (default: none, one process)",
    )
    group.add_argument(
        "--distributed",
        action="store_true",
        help="join a multi-process job described by the cluster's environment (SLURM, "
        "...), as jax.distributed.initialize() detects it (default: off)",
    )


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


def _add_run_flags(parser: argparse.ArgumentParser, what: str, default_workload: str) -> None:
    parser.set_defaults(default_workload=default_workload)
    parser.add_argument(
        "--workload",
        default=None,
        choices=sorted(WORKLOADS),
        help="the named workload whose settings are the defaults, overridden by flags "
        f"(docs/design.md §3; default: {default_workload}, or the resumed run's)",
    )
    parser.add_argument(
        "--config",
        type=pathlib.Path,
        default=None,
        metavar="FILE",
        help="JSON file of settings; missing keys take the built-in W1 defaults (default: none)",
    )
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        default=None,
        metavar="DIR",
        help=f"output folder of the run (default: runs/<name>{what}-<date-time>)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the interrupted run in --out from its last checkpoints (default: off)",
    )
    parser.add_argument(
        "--previous-checkpoint",
        action="store_true",
        help="with --resume: a run whose checkpoint is damaged continues from the one kept "
        "before it (default: off, such a run is an error naming the file)",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="hide the progress bars (default: shown)"
    )
    parser.add_argument(
        "--stop-after",
        type=int,
        default=None,
        metavar="N",
        help="stop after N meta-steps of this invocation, as if killed; for testing "
        "--resume (default: run to the end)",
    )


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="metapinn",
        description="Meta-learned PINN initialisations for families of PDEs (Burgers by "
        "default; `metapinn families` lists them): meta-train initialisations (multi-task "
        "pre-training, Reptile, MAML, Meta-SGD, MAML++, iMAML, on the plain or the "
        "parameter-conditioned network; transfer from the nearest training task), then "
        "measure few-shot adaptation on held-out tasks against a reference solution.",
    )
    parser.add_argument("--version", action="version", version=f"metapinn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    every = [f.name for f in dataclasses.fields(ExperimentConfig)]

    p = sub.add_parser(
        "reproduce",
        help="meta-train all methods for all seeds, evaluate, write tables and plots",
        description=f"The whole experiment (workload {DEFAULT_WORKLOAD} by default): "
        "meta-training of every "
        "method for every seed, few-shot evaluation against the reference, results table "
        "(printed, results.json, results.md) and plots, all in one output folder.",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run of the same pipeline, not meaningful numbers: "
        + ", ".join(f"{k}={v}" for k, v in QUICK.items())
        + " (default: off)",
    )
    p.add_argument("--no-plots", action="store_true", help="skip the plots (default: drawn)")
    _add_run_flags(p, "", DEFAULT_WORKLOAD)
    _add_device_flags(p, distributed=True)
    _add_config_flags(
        p, every, workload(DEFAULT_WORKLOAD),
        f"experiment settings (override --config; defaults are workload {DEFAULT_WORKLOAD}'s)",
    )  # fmt: skip

    p = sub.add_parser(
        "train",
        help="meta-train one method for one seed",
        description=f"Meta-train one method for one seed (workload {TRAIN_WORKLOAD} by "
        "default), from the random initialisation of that seed unless --init says otherwise. "
        "Evaluate the result with `metapinn evaluate DIR`.",
    )
    p.add_argument(
        "--method",
        default=None,
        help="the method: " + ", ".join(METHOD_NAMES) + " (default: maml, or the resumed run's)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed of the initialisation (default: 0, or the resumed run's)",
    )
    _add_run_flags(p, "-<method>", TRAIN_WORKLOAD)
    _add_device_flags(p, distributed=True)
    _add_config_flags(
        p, [n for n in every if n not in ("methods", "seeds")], workload(TRAIN_WORKLOAD),
        f"experiment settings (override --config; defaults are workload {TRAIN_WORKLOAD}'s)",
    )  # fmt: skip

    p = sub.add_parser(
        "evaluate",
        help="few-shot evaluation of the initialisations trained in a run folder",
        description="Adapt each initialisation trained in RUN (and the random one of each "
        "seed) to the held-out tasks; write results.json, results.md and plots into "
        "RUN and print the table. Evaluation settings may be changed here.",
    )
    p.add_argument("run", type=pathlib.Path, metavar="RUN", help="the run folder")
    p.add_argument("--no-plots", action="store_true", help="skip the plots (default: drawn)")
    _add_config_flags(
        p, fields_with_role("evaluation"), workload(DEFAULT_WORKLOAD),
        f"evaluation settings (default: the run's own; shown: workload {DEFAULT_WORKLOAD}'s)",
    )  # fmt: skip

    p = sub.add_parser(
        "ablate",
        help="run a grid of experiments over learner settings and tabulate them",
        description="An ablation grid: every combination of the values of the varied "
        "settings (the method, K, the inner optimiser and rate, ...) is a cell, a run "
        "folder of its own trained and evaluated by the pipeline of `metapinn reproduce` on "
        "the same seeds, points and held-out tasks. One table over the cells (rel-L2 at "
        "the budget, steps to each target, meta-step time, XLA memory) is printed and "
        "written as ablation.json, ablation.md and ablation.csv, with plots against the "
        "numeric setting. Finished cells are reused on --resume.",
    )
    p.add_argument(
        "grid",
        type=pathlib.Path,
        nargs="?",
        default=None,
        metavar="GRID",
        help="JSON (or .toml) grid file with keys workload, family, settings (changes to "
        "the workload) and vary ({key: [values]}) (default: none; --vary gives the axes)",
    )
    p.add_argument(
        "--vary",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="an axis of the grid, replacing the file's for that key; KEY one of "
        + ", ".join(GRID_KEYS)
        + " (repeatable; default: the file's axes)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="shrink every cell to a smoke run (as reproduce --quick) (default: off)",
    )
    p.add_argument(
        "--finished-only",
        action="store_true",
        help="tabulate the cells of the grid in --out finished so far; train nothing "
        "(default: off)",
    )
    p.add_argument("--no-plots", action="store_true", help="skip the plots (default: drawn)")
    _add_run_flags(p, "", DEFAULT_WORKLOAD)
    _add_device_flags(p, distributed=True)
    p.set_defaults(config=None)
    _add_config_flags(
        p, [n for n in every if n != "methods"], workload(DEFAULT_WORKLOAD),
        f"settings of every cell (override the grid file's; defaults are workload "
        f"{DEFAULT_WORKLOAD}'s)",
    )  # fmt: skip

    p = sub.add_parser(
        "solve",
        help="solve one family member: adapt a trained initialisation, or from scratch",
        description="Solve one member of a family: adapt METHOD's initialisation from the "
        "finished run RUN (--init RUN:METHOD; a conditioned one is adapted as the "
        "evaluation adapts it and measured bound to the task), or a random one from "
        "scratch (W3's network on the family), with one "
        "optimiser, timed, against the family's reference. Writes OUT/solve.json (family, "
        "task, optimizer, steps, seconds, rel_l2, the error curve) and OUT/solve.png.",
    )
    p.add_argument(
        "--family",
        required=True,
        help="the family: a name of `metapinn families`, or MODULE:ATTR for a family of your own",
    )
    p.add_argument(
        "--task",
        required=True,
        metavar="VALUE",
        help="the task: the family's parameter value, or for burgers-random-ic the index "
        "of a held-out initial condition",
    )
    p.add_argument(
        "--init",
        default=None,
        metavar="RUN:METHOD",
        help="start from METHOD's initialisation in the finished run folder RUN "
        "(default: a random initialisation, solved from scratch)",
    )
    p.add_argument(
        "--optimizer",
        default="adam",
        choices=SOLVE_OPTIMIZERS,
        help="the adapter (default: adam: the run's adaptation schedule from --init, "
        "warm-up and cosine decay from 1e-2 from scratch)",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="adapter steps (default: "
        + ", ".join(f"{k} {v}" for k, v in DEFAULT_STEPS.items())
        + ")",
    )
    p.add_argument("--seed", type=int, default=0, help="the initialisation's seed (default: 0)")
    p.add_argument("--out", type=pathlib.Path, required=True, help="output folder")
    p.add_argument("--no-plots", action="store_true", help="skip solve.png (default: drawn)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    p = sub.add_parser(
        "families",
        help="list the PDE families the library has, with their parameter and truth",
        description="The PDE families (docs/design.md §2) with verified truth: each one's task "
        "parameter, training range and what results are judged against. Run one with "
        "metapinn reproduce --family NAME.",
    )
    p.add_argument(
        "--family",
        default=None,
        metavar="MODULE:ATTR",
        help="list this family instead: a standard one's name, or MODULE:ATTR naming a "
        "metapinn.Family in your own module or .py file (default: every standard family)",
    )

    p = sub.add_parser(
        "show",
        help="print a run's results (or its training progress)",
        description="Print RUN/results.md; for an unfinished run, how far each training got.",
    )
    p.add_argument("run", type=pathlib.Path, metavar="RUN", help="the run folder")
    return parser


def _overrides(args: argparse.Namespace) -> dict:
    names = {f.name for f in dataclasses.fields(ExperimentConfig)}
    return {k: v for k, v in vars(args).items() if k in names and v is not None}


def _stored_config(folder: pathlib.Path) -> ExperimentConfig:
    return RunFolder(folder).read_config()


def _config_for_run(args: argparse.Namespace, extra: dict) -> ExperimentConfig:
    # The run folder itself is checked by the library (`check_run_folder`).
    if args.resume and args.out is None:
        raise ConfigError("--resume needs --out DIR, the folder of the run to continue")
    stored = args.resume and RunFolder(args.out).holds_run()
    if args.workload is not None and (args.config is not None or stored):
        base = "--config" if args.config is not None else "the resumed run's config.json"
        raise ConfigError(f"--workload and {base} both give the settings; drop --workload")
    if args.config is not None:
        config = load_config(args.config)
    elif stored:
        config = _stored_config(args.out)
    else:
        config = workload(args.workload or args.default_workload, family=args.family)
    if getattr(args, "quick", False):
        config = quick(config)
    changes = dict(extra)
    changes.update(_overrides(args))
    name = changes.get("name", config.name)
    if getattr(args, "quick", False) and not stored and not name.endswith(QUICK_SUFFIX):
        # Named as a quick run, so that its results are titled so (a resumed run keeps
        # the name it has).
        changes["name"] = name + QUICK_SUFFIX
    # A flag for a per-method key sets it for every method: it replaces the values the
    # workload (or config file) gives single methods, unless --overrides replaces those.
    flagged = set(changes) & set(fields_with_role("method"))
    if flagged and "overrides" not in changes:
        kept = [o for o in config.overrides if _parse_override(o)[1] not in flagged]
        if len(kept) != len(config.overrides):
            changes["overrides"] = kept
    return config.replace(**changes) if changes else config


def _cmd_reproduce(args: argparse.Namespace) -> int:
    config = _config_for_run(args, {})
    out = args.out or default_out_dir(config)  # a quick run's name says so
    results = reproduce(
        config,
        out,
        resume=args.resume,
        progress=not args.no_progress,
        stop_after=args.stop_after,
        plots=not args.no_plots,
        previous_checkpoint=args.previous_checkpoint,
        mesh=_mesh(args),
    )
    if results is None:
        print(f"process {jax.process_index()}: trained; process 0 has evaluated and written {out}")
        return 0
    print()
    print(format_summary(results))
    written = [out / "results.md", out / "results.json"]
    written += [] if args.no_plots else [out / "plots"]
    print("\nwritten: " + ", ".join(map(str, written)))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    # Without --method/--seed, a resumed run keeps its own; a new run takes maml, 0.
    stored = None
    if args.resume and args.out is not None and RunFolder(args.out).holds_run():
        stored = _stored_config(args.out)
    extra = {
        "methods": (args.method,) if args.method else stored.methods if stored else ("maml",),
        "seeds": (args.seed,) if args.seed is not None else stored.seeds if stored else (0,),
    }
    config = _config_for_run(args, extra)
    if len(config.methods) != 1 or len(config.seeds) != 1:
        raise ConfigError(
            f"metapinn train runs one method for one seed; the configuration has methods="
            f"{list(config.methods)} and seeds={list(config.seeds)}: use --method and --seed, "
            "or metapinn reproduce"
        )
    (method,), (seed,) = config.methods, config.seeds
    out = args.out or default_out_dir(config, f"-{method}")
    print(f"run folder: {out}", flush=True)
    train_runs(
        config, out, resume=args.resume, progress=not args.no_progress,
        stop_after=args.stop_after, previous_checkpoint=args.previous_checkpoint,
        mesh=_mesh(args),
    )  # fmt: skip
    print(f"trained initialisation: {out / 'train' / method / f'seed{seed}'}")
    print(f"evaluate it with: metapinn evaluate {out}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    config = _stored_config(args.run)
    changes = _overrides(args)
    if changes:
        config = config.replace(**changes)
    results = evaluate_runs(config, args.run, plots=not args.no_plots)
    print()
    print(format_summary(results))
    print(f"\nwritten: {args.run / 'results.md'}, {args.run / 'results.json'}")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    results = args.run / "results.md"
    if results.exists():
        print(results.read_text(), end="")
        return 0
    folder = RunFolder(args.run)
    config = folder.read_config()
    print(f"{args.run}: no results yet. Training progress:")
    for method in config.methods:
        steps = config.method(method).meta_steps
        for seed in config.seeds:
            for task, f in folder.run_dirs(config, method, seed).items():
                what = "" if task is None else f" task {task}"
                state = "0"
                if (f / CHECKPOINT).exists():
                    try:
                        state = str(read_checkpoint_meta(f / CHECKPOINT)["step"])
                    except CorruptCheckpointError:
                        state = "damaged checkpoint (see --previous-checkpoint), ?"
                print(f"  {method}{what} seed {seed}: {state}/{steps} meta-steps checkpointed")
    return 0


def _cmd_ablate(args: argparse.Namespace) -> int:
    if args.config is not None:
        raise ConfigError("metapinn ablate takes its settings from GRID and flags, not --config")
    if (args.resume or args.finished_only) and args.out is None:
        raise ConfigError("--resume and --finished-only need --out DIR, the grid folder")
    if args.out is not None:
        check_grid_folder(args.out, args.resume, train=not args.finished_only)
    stored = args.out / "grid.json" if args.out is not None else None
    settings = _overrides(args)
    reading = args.resume or args.finished_only
    if reading and stored is not None and stored.exists() and args.grid is None and not args.vary:
        if settings or args.workload or args.quick:
            raise ConfigError("to continue the stored grid, give no settings (or give the grid)")
        grid = stored_grid(stored)
    else:
        data = read_grid_file(args.grid) if args.grid is not None else None
        family = settings.pop("family", None)
        grid = make_grid(
            data,
            workload_name=args.workload,
            family=family,
            settings=settings,
            vary=[parse_vary(item) for item in args.vary],
            quick=args.quick,
        )
    out = args.out or default_out_dir(grid.base, "-ablate")
    results = run_ablation(
        grid,
        out,
        resume=args.resume,
        progress=not args.no_progress,
        stop_after=args.stop_after,
        plots=not args.no_plots,
        command=" ".join(["metapinn", *args.argv]),
        previous_checkpoint=args.previous_checkpoint,
        train=not args.finished_only,
        mesh=_mesh(args),
    )
    if results is None:  # another process than 0 of a multi-process job
        return 0
    print()
    print(format_ablation(results))
    written = [out / f"ablation.{ext}" for ext in ("md", "json", "csv")]
    print("\nwritten: " + ", ".join(map(str, written)))
    return 0


def _cmd_solve(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    steps = DEFAULT_STEPS.get(args.optimizer) if args.steps is None else args.steps
    with tqdm(total=steps, desc=f"{args.optimizer}", disable=args.no_progress) as bar:
        result = solve(
            args.family, args.task, args.out, init=args.init, optimizer=args.optimizer,
            steps=args.steps, seed=args.seed, progress=bar.update, plot=not args.no_plots,
        )  # fmt: skip
    print(
        f"{result['family']} {result['task_label']}: rel-L2 {result['rel_l2']:.3g} after "
        f"{result['steps']} {result['optimizer']} steps, {result['seconds']:.2f} s "
        f"(compile {result['compile_seconds']:.1f} s); written to {args.out / 'solve.json'}"
    )
    return 0


def _cmd_families(args: argparse.Namespace) -> int:
    if args.family is None:
        print(family_table())
        return 0
    try:
        print(family_table([get_family(args.family)]))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return 0


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
        DamagedMetricsError,
        RunFolderBusy,
    ) as e:
        parser.exit(2, f"metapinn {args.command}: error: {e}\n")
    except RunFolderError as e:
        print(f"metapinn {args.command}: error: {e}", file=sys.stderr)
        print("continue with --resume and the same --out once it can be written", file=sys.stderr)
        return 1
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
    return 0  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
