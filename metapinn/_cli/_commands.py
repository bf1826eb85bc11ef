"""What each command does, once its arguments are parsed: the settings it runs with,
the library call, and what it prints."""

import argparse
import contextlib
import dataclasses
import pathlib

import jax

from .._checkpoint import (
    CheckpointMismatchError,
    CorruptCheckpointError,
    checkpoint_step,
    read_checkpoint_meta,
)
from .._experiment import (
    ConfigError,
    ExperimentConfig,
    default_out_dir,
    evaluate_runs,
    format_summary,
    load_config,
    quick,
    reproduce,
    rewrite_report,
    train_runs,
    workload,
)
from .._experiment._ablation import check_grid_folder, run_ablation
from .._experiment._ablation_grid import (
    make_grid,
    parse_vary,
    read_grid_file,
    stored_grid,
)
from .._experiment._ablation_report import format_ablation
from .._experiment._config import _parse_override, fields_with_role
from .._experiment._folder import RunFolder
from .._experiment._solve import default_steps, solve
from .._experiment._workloads import QUICK_SUFFIX
from .._meta_train import CHECKPOINT, ResumeMismatchError
from .._metrics_file import DamagedMetricsError
from .._pde._registry import FAMILIES, family as get_family, family_table
from ._devices import _mesh


def _overrides(args: argparse.Namespace) -> dict:
    names = {f.name for f in dataclasses.fields(ExperimentConfig)}
    return {k: v for k, v in vars(args).items() if k in names and v is not None}


def _stored_config(folder: pathlib.Path) -> ExperimentConfig:
    return RunFolder(folder).read_config()


def _config_for_run(args: argparse.Namespace, extra: dict) -> ExperimentConfig:
    # The run folder itself is checked by the library (`RunFolder.check`).
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
        name = args.workload or args.default_workload
        if args.workload is None and args.family is not None and args.family_workload:
            name = args.family_workload  # reproduce --family X: workload A on X
        config = workload(name, family=args.family)
    if getattr(args, "quick", False):
        # A resumed run keeps the name it has (one made before quick runs were named
        # so would otherwise not match its stored settings).
        config = quick(config) if not stored else quick(config).replace(name=config.name)
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


STARTS_NOTHING = (
    ConfigError,
    FileNotFoundError,
    CorruptCheckpointError,
    CheckpointMismatchError,
    DamagedMetricsError,
    ResumeMismatchError,
)
"""The expected failures (a setting, a source file) after which a new run that trained
nothing is undone, so that the same command, corrected, runs again."""


@contextlib.contextmanager
def _undone_if_it_fails(args: argparse.Namespace, config: ExperimentConfig, out: pathlib.Path):
    """A new run in `out` that fails with an expected error before it has trained
    anything (a warm-start source that is not this run's network, say) leaves no
    `config.json` behind: the retry is not refused."""
    made = not out.exists()
    new = not args.resume and not RunFolder(out).holds_run()
    try:
        yield
    except STARTS_NOTHING:
        if new:
            RunFolder(out).discard_failed_start(config, made=made)
        raise


def _cmd_reproduce(args: argparse.Namespace) -> int:
    config = _config_for_run(args, {})
    out = args.out or default_out_dir(config)  # a quick run's name says so
    with _undone_if_it_fails(args, config, out):
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
    with _undone_if_it_fails(args, config, out):
        train_runs(
            config, out, resume=args.resume, progress=not args.no_progress,
            stop_after=args.stop_after, previous_checkpoint=args.previous_checkpoint,
            mesh=_mesh(args),
        )  # fmt: skip
    print(f"trained initialisation: {out / 'train' / method / f'seed{seed}'}")
    print(f"evaluate it with: metapinn evaluate {out}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    changes = _overrides(args)
    if args.report_only:
        if changes or args.devices is not None:
            given = ", ".join(["--" + k.replace("_", "-") for k in changes]
                              + (["--devices"] if args.devices is not None else []))  # fmt: skip
            raise ConfigError(f"--report-only adapts nothing, so {given} would do nothing: drop it")
        results = rewrite_report(args.run, args.scratch or (), log=lambda _: None)
        print(format_summary(results))
        print(f"\nwritten: {args.run / 'results.md'}")
        return 0
    config = _stored_config(args.run)
    if changes:
        config = config.replace(**changes)
    mesh = None if args.devices is None else _mesh(args)  # one device unless asked
    results = evaluate_runs(
        config, args.run, plots=not args.no_plots, mesh=mesh, scratch=args.scratch or ()
    )
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
                        meta = read_checkpoint_meta(f / CHECKPOINT)
                        state = str(checkpoint_step(f / CHECKPOINT, meta))
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

    steps = args.steps
    if steps is None:
        steps = default_steps(args.family, args.optimizer, args.init)
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
    from .._experiment._recipes import recipe_table

    try:
        chosen = None if args.family is None else [get_family(args.family)]
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if args.recipes:
        print(recipe_table([f.name for f in (chosen or FAMILIES.values())]))
    else:
        print(family_table(chosen))
    return 0
