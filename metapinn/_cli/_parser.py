"""The command line's parser: every command, its flags, and the experiment settings
as flags (from the fields of `ExperimentConfig`)."""

import argparse
import dataclasses
import pathlib
import typing
from collections.abc import Sequence

from .._experiment import (
    DEFAULT_WORKLOAD,
    QUICK,
    WORKLOADS,
    ExperimentConfig,
    workload,
)
from .._experiment._ablation_grid import (
    GRID_KEYS,
)
from .._experiment._compat import old_flags
from .._experiment._config import field_help, fields_with_role
from .._experiment._methods import METHOD_NAMES
from .._experiment._solve import DEFAULT_STEPS, SOLVE_OPTIMIZERS


FAMILY_DEFAULT_WORKLOAD = "A"
"""The workload of `metapinn reproduce --family X` without `--workload`: the accurate
workload on that family (plain `metapinn reproduce` runs `DEFAULT_WORKLOAD`, W3 on
Burgers)."""
TRAIN_WORKLOAD = "W1"
"""The default workload of `metapinn train`: W3's meta-learners start from its
multi-task pre-training, which a one-method run does not hold."""


def folder_path(text: str) -> pathlib.Path:
    """A path argument: an empty one names no folder (it would be the current one)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path names no file or folder; give one")
    return pathlib.Path(text)


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
    if distributed:
        what = (
            "split each meta-step's task batch over N devices (on CPU: N host devices; "
            "a batch that N does not divide runs on one; 1: no splitting)"
        )
        default = "every local device, on CPU one per core; in a multi-process job, every "
        default += "device of every process"

    else:
        what = (
            "spread the evaluation's independent adaptations (initialisation x seed x "
            "held-out task) over N devices (on CPU: N host devices, the common Adam "
            "schedule only; they share the cores one device already keeps busy, so "
            "the gain is small and the timed adapters run one at a time)"
        )
        default = "1, one at a time on one device, as reproduce evaluates"
    group.add_argument(
        "--devices", type=int, default=None, metavar="N", help=f"{what} (default: {default})"
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


def _add_run_flags(
    parser: argparse.ArgumentParser,
    what: str,
    default_workload: str,
    family_workload: str | None = None,
) -> None:
    parser.set_defaults(default_workload=default_workload, family_workload=family_workload)
    default = default_workload
    if family_workload is not None:
        default += f"; with --family, {family_workload} on that family"
    parser.add_argument(
        "--workload",
        default=None,
        choices=sorted(WORKLOADS),
        help="the named workload whose settings are the defaults, overridden by flags "
        f"(docs/design.md §3; default: {default}, or the resumed run's)",
    )
    parser.add_argument(
        "--config",
        type=folder_path,
        default=None,
        metavar="FILE",
        help="JSON file of settings; missing keys take the built-in W1 defaults (default: none)",
    )
    parser.add_argument(
        "--out",
        type=folder_path,
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
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="metapinn",
        description="Meta-learned PINN initialisations for families of PDEs (Burgers by "
        "default; `metapinn families` lists them): meta-train initialisations (multi-task "
        "pre-training, Reptile, MAML, Meta-SGD, MAML++, iMAML, on the plain or the "
        "parameter-conditioned network; transfer from the nearest training task, a "
        "curriculum along the training tasks), then "
        "measure few-shot adaptation on held-out tasks against a reference solution.",
    )
    parser.add_argument("--version", action="version", version=f"metapinn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    every = [f.name for f in dataclasses.fields(ExperimentConfig)]

    p = sub.add_parser(
        "reproduce",
        help="meta-train all methods for all seeds, evaluate, write tables and plots",
        description=f"The whole experiment (workload {DEFAULT_WORKLOAD} by default; with "
        f"--family, workload {FAMILY_DEFAULT_WORKLOAD} on that family): "
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
    _add_run_flags(p, "", DEFAULT_WORKLOAD, FAMILY_DEFAULT_WORKLOAD)
    _add_device_flags(p, distributed=True)
    _add_config_flags(
        p, every, workload(DEFAULT_WORKLOAD),
        f"experiment settings (override --config; defaults are workload {DEFAULT_WORKLOAD}'s, "
        f"with --family workload {FAMILY_DEFAULT_WORKLOAD}'s on that family)",
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
    p.add_argument("run", type=folder_path, metavar="RUN", help="the run folder")
    p.add_argument("--no-plots", action="store_true", help="skip the plots (default: drawn)")
    p.add_argument(
        "--scratch",
        nargs="+",
        type=folder_path,
        default=None,
        metavar="FILE",
        help="the held-out tasks solved from scratch: metapinn solve's solve.json files, "
        "or a file of them as benchmarks/solve_family.py writes; each initialisation "
        "with its fastest adapter is set against them in seconds to each target and "
        "tasks to pay off training (default: none; a new evaluation keeps the previous "
        "results' solves where they are of the same held-out tasks)",
    )
    p.add_argument(
        "--report-only",
        action="store_true",
        help="adapt nothing: write results.md and the wall-clock plot again from RUN's "
        "results.json, with --scratch after adding those solves to it (default: off)",
    )
    _add_device_flags(p, distributed=False)
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
        type=folder_path,
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
        help="the adapter: adam (the run's adaptation schedule from --init; from scratch the "
        "family's recipe, metapinn families --recipes), lbfgs, or gauss-newton "
        "(Levenberg-Marquardt from the run's eval_damping with its eval_cg_steps CG "
        "iterations a step) (default: adam)",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="adapter steps (default: from scratch with adam the recipe's; else "
        + ", ".join(f"{k} {v}" for k, v in DEFAULT_STEPS.items())
        + ")",
    )
    p.add_argument("--seed", type=int, default=0, help="the initialisation's seed (default: 0)")
    p.add_argument("--out", type=folder_path, required=True, help="output folder")
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
    p.add_argument(
        "--recipes",
        action="store_true",
        help="print each family's training recipe instead (what metapinn solve uses from scratch)",
    )

    p = sub.add_parser(
        "show",
        help="print a run's results (or its training progress)",
        description="Print RUN/results.md; for an unfinished run, how far each training got.",
    )
    p.add_argument("run", type=folder_path, metavar="RUN", help="the run folder")
    return parser
