"""Few-shot evaluation of every initialisation of a run against the reference.

Every initialisation gets the same adaptation (the config's one schedule, on the same
fixed collocation points, read at `eval_steps`) on every held-out task. They fall in
three groups, each one jitted `few_shot` (a scan per initialisation and task): the
plain network's (random init and every plain method), the conditioned network's
(adapted with the conditioned loss: all of its parameters, its input features fixed
by the task), and the per-task baselines' (transfer and the curriculum: one
initialisation per held-out task).
Conditioned networks are then bound to their task, so every field is measured by the
same code on the plain network.
"""

import concurrent.futures
import dataclasses
import json
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from .._checkpoint import atomic_write, write_json, write_text
from .._few_shot import adapt_recording, few_shot, field_metrics, pinn_field
from .._grid import grid_points
from .._meta._learned_rates import MAMLPlusPlus, MetaSGD
from .._meta_train import load_meta_params
from .._plots import (
    plot_error_vs_seconds,
    plot_few_shot,
    plot_fields,
    plot_meta_training,
    plot_per_task,
)
from ._adapter_evaluation import ADAM, AdapterMeasures, adam_measures, time_adapters
from ._config import ConfigError, ExperimentConfig
from ._folder import RunFolder
from ._methods import RANDOM, adam, is_conditioned, label
from ._problem import (
    build_problem,
    eval_optimizer,
    experiment_tasks,
    initialisation,
)
from ._report import adapter_short, to_markdown
from ._scratch import SCRATCH_ADAPTER, SCRATCH_ROW, read_scratch
from ._summary import adapter_summary, in_range, plain_adam_summary, summarise


RESIDUAL_STRIDE = 2
"""The RMS residual is taken on every `RESIDUAL_STRIDE`-th point of the reference grid
in x and in t (128 x 51 of the 256 x 101 points): it needs second derivatives."""


def reference_fields(
    config: ExperimentConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The reference solutions of `config`'s held-out tasks on its family's standard
    grid (float64), from the disk cache when they are there (see
    [`metapinn.Family.reference`][]). Computing one needs `jax_enable_x64` (the
    `metapinn` command turns it on at start-up).

    **Arguments:** `config`, an [`metapinn.experiment.ExperimentConfig`][]; its `family` and its
    held-out tasks (`test_params`, or `n_test_tasks` drawn from `tasks_seed`) are used.

    **Returns:** `(x, t, points, u)`, float64 NumPy arrays, with
    `u[b, i, j] = u(x[j], t[i])` for held-out task `b`, and `points` the grid as
    `(len(t) * len(x), 2)` rows `(x, t)` in the same order.

    **Raises:** `RuntimeError` if float64 is not enabled and a reference is not in the
    cache (or a solve fails); what the family's reference solver raises otherwise.
    """
    fam = config.resolved_family
    pde = fam.pde()
    x, t = pde.standard_axes()  # float64
    _, tasks = experiment_tasks(config, "float32")
    if fam.scalar:  # the stated values, not their float32 roundings
        tasks = jax.tree_util.tree_map(lambda _: np.asarray(config.test_params), tasks)
    u = fam.reference(tasks, x, t)
    points = np.asarray(grid_points(x, t, dtype=jnp.zeros(()).dtype), dtype=np.float64)
    return x, t, points, np.asarray(u, dtype=np.float64)


def _stack(trees: list) -> Any:
    return jax.tree_util.tree_map(lambda *xs: jnp.asarray(np.stack(xs)), *trees)


def _initialisations(config: ExperimentConfig, folder: RunFolder, inits: tuple[str, ...]):
    """Every initialisation, per seed, and the diverged runs: `{init: [params per
    seed]}` (a transfer entry has a leading axis over the held-out tasks)."""
    found: dict[str, list] = {i: [] for i in inits}
    diverged = []
    for seed in config.seeds:
        random, _, _ = initialisation(config, seed)
        conditioned, _, _ = initialisation(config, seed, conditioned=True)
        for init in inits:
            spec = None if init == RANDOM else config.method(init)
            like = conditioned if spec is not None and spec.conditioned else random
            record = None if spec is None else folder.diverged(config, init, seed)
            if spec is None:
                params = random
            elif record is not None:
                # No initialisation came out of this run; the random one stands in for
                # it in the vmapped evaluation, and its numbers are dropped.
                diverged.append({"method": init, "seed": seed, **record})
                params = like
            elif spec.transfer:
                trained = {
                    i: folder.load_trained(config, init, seed, random, i)
                    for i in spec.run_tasks(config)
                }
                params = _stack([trained[i] for i in spec.source_tasks(config)])
            else:
                params = folder.load_trained(config, init, seed, like)
            if spec is not None and spec.transfer and record is not None:
                params = _stack([params] * config.n_test)
            found[init].append(params)
    return found, diverged


def _adapt_group(
    config, problem, names, found, static, loss_fn, steps, optimizer, per_task, mesh=None
):
    """One `few_shot` call for the initialisations `names` of one network; the
    traces' leading axes are `(S * len(names), N)`, seed-major."""
    stacked = [found[name][s] for s in range(len(config.seeds)) for name in names]
    return few_shot(
        _stack(stacked),
        static,
        loss_fn,
        problem.test_tasks,
        problem.points,
        steps=steps,
        optimizer=optimizer,
        per_task_inits=per_task,
        mesh=mesh,
    )


def _adapt_all(config, problem, inits, found, statics, steps, optimizer, mesh=None):
    """Every initialisation adapted to every held-out task, a scan per network.

    **Returns:** `(params, losses)`: the plain network's parameters after each of
    `steps`, axes `(I, S, N, len(steps), ...)` (conditioned networks bound to their
    task), and the PINN losses `(I, S, N, len(steps))`."""
    static, cond_static = statics

    def transfer(i: str) -> bool:
        return i != RANDOM and config.method(i).transfer

    groups = {
        "plain": [i for i in inits if not is_conditioned(i) and not transfer(i)],
        "conditioned": [i for i in inits if is_conditioned(i)],
        "transfer": [i for i in inits if transfer(i)],
    }
    n_s, n_n = len(config.seeds), config.n_test
    params_of, losses_of = {}, {}
    for group, names in groups.items():
        if not names:
            continue
        loss_fn = problem.loss(conditioned=group == "conditioned")
        own_static = cond_static if group == "conditioned" else static
        trace = _adapt_group(
            config, problem, names, found, own_static, loss_fn, steps, optimizer,
            group == "transfer", mesh,
        )  # fmt: skip
        params = trace.params
        if group == "conditioned":
            params = _bound(params, cond_static, loss_fn, problem.test_tasks, n_n)
        for j, name in enumerate(names):
            pick = np.arange(n_s) * len(names) + j  # seed-major stacking
            params_of[name] = jax.tree_util.tree_map(lambda a, p=pick: a[p], params)
            losses_of[name] = np.asarray(trace.losses)[pick]
    params = _stack([params_of[i] for i in inits])
    losses = np.stack([losses_of[i] for i in inits]).astype(np.float64)
    return params, losses


def _measure(config, problem, static, all_params, grid, u_ref):
    """Field metrics of parameters with axes `(I, S, N, K, ...)` on the reference grid.

    **Returns:** `{name: (I, S, N, K) array}` for rel-L2, max error and RMS residual."""
    shape = jax.tree_util.tree_leaves(all_params)[0].shape[:4]
    n_n = shape[2]
    flat = jax.tree_util.tree_map(lambda a: a.reshape((-1,) + a.shape[4:]), all_params)
    task_index = np.broadcast_to(np.arange(n_n)[None, None, :, None], shape)
    dtype = jnp.dtype(config.dtype)
    metrics = field_metrics(
        flat,
        static,
        problem.pde,
        problem.test_tasks,
        jnp.asarray(task_index.reshape(-1), dtype=jnp.int32),
        jnp.asarray(grid.reshape(-1, 2), dtype=dtype),
        jnp.asarray(u_ref.reshape(n_n, -1)),  # float64 when x64 is on
        jnp.asarray(grid[::RESIDUAL_STRIDE, ::RESIDUAL_STRIDE].reshape(-1, 2), dtype=dtype),
    )

    def arrange(a):  # (I*S*N*K,) -> (I, S, N, K), a writable copy
        return np.array(a, dtype=np.float64).reshape(shape).copy()

    return {
        "rms_residual": arrange(metrics.rms_residual),
        "rel_l2": arrange(metrics.rel_l2),
        "max_abs": arrange(metrics.max_abs),
    }


def _adapt_with_learned_rules(config, problem, folder, rules, found, diverged, statics):
    """Each learned-rule method's initialisation adapted with its own learned inner
    rule (`learned_optimizer` of its trained meta-parameters) instead of the common
    schedule, one scan per seed.

    **Returns:** `(params, losses)` with axes `(len(rules), S, N, K, ...)` and
    `(len(rules), S, N, K)`, as `_adapt_all`'s."""
    failed = {(d["method"], d["seed"]) for d in diverged}
    params_out, losses_out = [], []
    for method in rules:
        spec = config.method(method)
        static = statics[1] if spec.conditioned else statics[0]
        loss_fn = problem.loss(spec.conditioned)
        per_seed_params, per_seed_losses = [], []
        for s, seed in enumerate(config.seeds):
            like = found[method][s]
            learner = spec.meta_learner(like)
            if (method, seed) in failed:
                optimizer = adam(PLAIN_ADAM_LR)  # a stand-in: its numbers are dropped
            else:
                meta, _ = load_meta_params(
                    folder.run_dir(method, seed), learner, like, spec.outer_optimizer()
                )
                assert isinstance(learner, MetaSGD | MAMLPlusPlus), method  # learns_rule
                optimizer = learner.learned_optimizer(meta)
            trace = few_shot(
                jax.tree_util.tree_map(lambda x: x[None], like),
                static,
                loss_fn,
                problem.test_tasks,
                problem.points,
                steps=config.eval_steps,
                optimizer=optimizer,
            )
            params = trace.params
            if spec.conditioned:
                params = _bound(params, static, loss_fn, problem.test_tasks, config.n_test)
            per_seed_params.append(jax.tree_util.tree_map(lambda a: a[0], params))
            per_seed_losses.append(np.asarray(trace.losses)[0])
        params_out.append(_stack(per_seed_params))
        losses_out.append(np.stack(per_seed_losses))
    return _stack(params_out), np.stack(losses_out).astype(np.float64)


PLAIN_ADAM_LR = 1e-3
"""The W1 adaptation (plain Adam at this rate from a fresh state), also reported when
the run's schedule differs, for comparability."""


def _bound(params, static, loss_fn, tasks, n_tasks: int):
    """Conditioned parameters with axes `(M, N, K, ...)` bound to their task `n`:
    the plain network's parameters, same axes."""

    def bind(p, task):
        pinn = loss_fn.bind(eqx.combine(p, static), task)
        return eqx.filter(pinn, eqx.is_inexact_array)

    over_k = jax.vmap(bind, in_axes=(0, None))
    over_n = jax.vmap(over_k, in_axes=(0, 0))
    return eqx.filter_jit(jax.vmap(over_n, in_axes=(0, None)))(params, tasks)


def seconds_per_adaptation_step(config: ExperimentConfig, problem, static, loss_fn, params):
    """Wall-clock seconds of one step of the common adaptation schedule on one task
    (compiled first, then the best of two 100-step runs): the cost that a better
    initialisation saves."""
    steps = 100
    run = eqx.filter_jit(
        lambda p: adapt_recording(
            p, static, loss_fn, jax.tree_util.tree_map(lambda x: x[0], problem.test_tasks),
            problem.points, steps=(steps,), optimizer=eval_optimizer(config),
        ).losses
    )  # fmt: skip
    jax.block_until_ready(run(params))
    best = np.inf
    for _ in range(2):
        t0 = time.perf_counter()
        jax.block_until_ready(run(params))
        best = min(best, time.perf_counter() - t0)
    return best / steps


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """What the few-shot evaluation of a run measured: arrays, nothing written.

    **Fields:**

    - `config`: the experiment.
    - `rows`: the evaluated initialisations: `"random"`, the methods, then each
      learned rule's row (`METHOD+rule`).
    - `measures`: `{"loss", "rms_residual", "rel_l2", "max_abs"}`, each
      `(row, seed, held-out task, k)` at the `eval_steps` k; NaN where not `valid`.
    - `valid`: `(row, seed)`, false where a meta-training diverged.
    - `diverged`: the diverged runs' records.
    - `plain_adam_rel_l2`: `(row, seed, held-out task)` rel-L2 after `budget` steps of
      plain Adam at 1e-3 for the rows other than the learned rules, where the run's
      schedule differs from it; else `None`.
    - `timing`: evaluation seconds, meta-training seconds per method (from the
      metrics), seconds per adaptation step.
    - `params`, `static`: the adapted plain-network parameters, axes `(row, seed,
      held-out task, k, ...)`, and the network's static part (for the plots).
    - `reference`: `(x, t, grid, u)` of [`metapinn.experiment.reference_fields`][].
    - `adapters`: `{adapter: AdapterMeasures}`, every (initialisation, adapter) pair
      at steps and seconds: `"adam"` (the common schedule, over `rows`) and each of
      `eval_adapters` (over `"random"` and the methods, each task timed alone).
    """

    config: ExperimentConfig
    rows: tuple[str, ...]
    measures: dict[str, np.ndarray]
    valid: np.ndarray
    diverged: list[dict[str, Any]]
    plain_adam_rel_l2: np.ndarray | None
    timing: dict[str, Any]
    params: Any
    static: Any
    reference: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
    adapters: dict[str, AdapterMeasures] = dataclasses.field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The results as plain data (as written to `results.json`)."""
        config = self.config
        results = summarise(
            config, self.rows, self.measures, valid=self.valid, diverged=self.diverged
        )
        if self.plain_adam_rel_l2 is not None:
            n = self.plain_adam_rel_l2.shape[0]
            results["plain_adam"] = plain_adam_summary(
                config, self.rows[:n], self.plain_adam_rel_l2, self.valid[:n], PLAIN_ADAM_LR
            )
        if set(self.adapters) - {ADAM}:  # only with an adapter to set beside Adam
            results["adapters"] = {}
            for m in self.adapters.values():
                rows = [self.rows.index(r) for r in m.rows]
                results["adapters"].update(adapter_summary(self.config, [m], self.valid[rows]))
        results["timing"] = self.timing
        return results


def evaluate(
    config: ExperimentConfig,
    out_dir: str | os.PathLike,
    *,
    log: Callable[[str], None] = print,
    reference: concurrent.futures.Future | None = None,
    mesh: Mesh | None = None,
) -> Evaluation:
    """Few-shot evaluation of the trained initialisations in `out_dir` and of the
    random ones, against the reference; writes nothing.

    Every initialisation gets the same adaptation: the config's schedule (Adam at
    `eval_lr`, after `eval_warmup` warm-up steps) on the same collocation points,
    read at `eval_steps`, on every held-out task. A meta-training run that diverged
    (see [`metapinn.experiment.train_runs`][]) has no initialisation: its seed is left out of
    that method's statistics and flagged.

    **Arguments:** as [`metapinn.experiment.evaluate_runs`][] (`mesh` included).

    **Returns:** an [`metapinn.experiment.Evaluation`][].

    **Raises:** as [`metapinn.experiment.evaluate_runs`][], less the write errors.
    """
    folder = RunFolder(out_dir)
    for method in config.methods:  # a damaged metrics file is found before any work
        for seed in config.seeds:
            for run_dir in folder.run_dirs(config, method, seed).values():
                folder.metrics(run_dir)
    t0 = time.perf_counter()
    problem = build_problem(config)
    inits = (RANDOM,) + tuple(config.methods)
    found, diverged = _initialisations(config, folder, inits)
    _, static, _ = initialisation(config, config.seeds[0])
    _, cond_static, _ = initialisation(config, config.seeds[0], conditioned=True)
    statics = (static, cond_static)
    log(
        f"adapting {len(inits)} initialisations x {len(config.seeds)} seeds on "
        f"{config.n_test} held-out tasks for {config.eval_steps[-1]} Adam steps"
    )
    all_params, losses = _adapt_all(
        config, problem, inits, found, statics, config.eval_steps, eval_optimizer(config), mesh
    )
    if reference is None:
        x, t, grid, u_ref = reference_fields(config)
    else:
        x, t, grid, u_ref = reference.result()
    grid = np.asarray(grid).reshape(len(t), len(x), 2)
    trained_inits = inits
    rules = [m for m in config.methods if config.method(m).learns_rule]
    rule_failed = []
    if rules:
        # Extra rows, never instead: each learned inner rule adapting its own init.
        log(f"adapting with the learned inner rules of {', '.join(rules)}")
        rule_params, rule_losses = _adapt_with_learned_rules(
            config, problem, folder, rules, found, diverged, statics
        )
        all_params = jax.tree_util.tree_map(
            lambda a, b: jnp.concatenate([a, b]), all_params, rule_params
        )
        losses = np.concatenate([losses, rule_losses])
        inits = inits + tuple(config.method(m).rule_row for m in rules)
        rule_failed = [
            (config.method(d["method"]).rule_row, d["seed"])
            for d in diverged
            if d["method"] in rules
        ]
    per_run = {"loss": losses, **_measure(config, problem, static, all_params, grid, u_ref)}
    n_i, n_s = len(inits), len(config.seeds)
    valid = np.ones((n_i, n_s), dtype=bool)
    failed = [(d["method"], d["seed"]) for d in diverged] + rule_failed
    for method, seed in failed:
        valid[inits.index(method), config.seeds.index(seed)] = False
    for values in per_run.values():
        values[~valid] = np.nan
    for name, values in per_run.items():
        if not np.all(np.isfinite(values[valid])):
            log(f"warning: some {name} values are not finite (an adaptation diverged)")
    eval_seconds = time.perf_counter() - t0
    step_seconds = seconds_per_adaptation_step(
        config, problem, static, problem.loss(), found[RANDOM][0]
    )
    has_conditioned = any(is_conditioned(i) for i in inits)
    cond_seconds = step_seconds
    if has_conditioned:
        conditioned, _, _ = initialisation(config, config.seeds[0], conditioned=True)
        cond_seconds = seconds_per_adaptation_step(
            config, problem, cond_static, problem.loss(conditioned=True), conditioned
        )
    adapters = {
        ADAM: adam_measures(
            inits, config.eval_steps, per_run,
            [cond_seconds if is_conditioned(i) else step_seconds for i in inits],
        )
    }  # fmt: skip
    if config.eval_adapters:
        t1 = time.perf_counter()
        n_rows = len(trained_inits)
        adapters.update(time_adapters(
            config, problem, trained_inits, found, statics, grid, u_ref, valid[:n_rows],
            log=log, mesh=mesh,
        ))  # fmt: skip
        eval_seconds += time.perf_counter() - t1
    plain = None
    if (config.eval_lr, max(config.eval_warmup, 1)) != (PLAIN_ADAM_LR, 1):
        # Every initialisation (a learned rule's row is its method's initialisation).
        plain_params, _ = _adapt_all(
            config,
            problem,
            trained_inits,
            found,
            statics,
            (config.budget,),
            adam(PLAIN_ADAM_LR),
            mesh,
        )
        plain = _measure(config, problem, static, plain_params, grid, u_ref)["rel_l2"][..., 0]
        plain[~valid[: len(trained_inits)]] = np.nan
    timing = {
        "evaluation_seconds": round(eval_seconds, 2),
        "training_seconds": folder.training_seconds(config),
        "adaptation_step_seconds": step_seconds,
    }
    if has_conditioned:
        timing["conditioned_adaptation_step_seconds"] = cond_seconds
    return Evaluation(
        config=config, rows=inits, measures=per_run, valid=valid, diverged=diverged,
        plain_adam_rel_l2=plain, timing=timing, params=all_params, static=static,
        reference=(x, t, grid, u_ref), adapters=adapters,
    )  # fmt: skip


def evaluate_runs(
    config: ExperimentConfig,
    out_dir: str | os.PathLike,
    *,
    log: Callable[[str], None] = print,
    plots: bool = True,
    reference: concurrent.futures.Future | None = None,
    mesh: Mesh | None = None,
    scratch: str | os.PathLike | Sequence[str | os.PathLike] = (),
) -> dict[str, Any]:
    """Few-shot evaluation of the trained initialisations in `out_dir` and of the
    random ones, against the reference ([`metapinn.experiment.evaluate`][]); writes
    `results.json`, `results.md` and `plots/` there.

    **Arguments:**

    - `config`: the [`metapinn.experiment.ExperimentConfig`][] the runs were trained with.
    - `out_dir`: the run folder, as [`metapinn.experiment.train_runs`][] left it.
    - `log`: where one-line messages go (keyword only; default `print`).
    - `plots`: also draw the plots into `out_dir/plots` (keyword only; default
      `True`).
    - `reference`: a `concurrent.futures.Future` of [`metapinn.experiment.reference_fields`][]
      for `config` (see [`metapinn.experiment.reproduce`][]); default `None`, computed here.
    - `mesh`: spread the independent adaptations (initialisation × seed × held-out
      task) over these devices (default `None`: this device): the Adam schedule's in
      equal shares, the timed adapters' (on accelerators) one at a time per device
      from a queue, each timed on its device. The numbers are those of one device up
      to float32 rounding. Host CPU devices gain little: one XLA:CPU program already
      keeps the cores busy (on 2 cores, 2 host devices evaluated A-burgers 1.05x as
      fast in the Adam schedule), so the timed adapters run one after another there.
    - `scratch`: files of the held-out tasks solved from scratch (`metapinn solve`'s
      `solve.json`, or a file of such rows as `benchmarks/solve_family.py` writes),
      read before any work, kept in the results as `scratch` and set against each
      initialisation's fastest adapter (see `metapinn._experiment._scratch`); default
      none, which keeps the previous results' solves where they are of the same
      held-out tasks. To add solves to finished results without adapting again, see
      [`metapinn.experiment.rewrite_report`][].

    **Returns:** the results, a dict of plain data as written to `results.json`.

    **Raises:** `FileNotFoundError` if a run is missing; [`metapinn.experiment.ConfigError`][] if
    one is unfinished or was trained with other settings, or for a `scratch` file
    that is not a solve of the run's held-out tasks or given to an evaluation
    without timed adapters (before any work);
    [`metapinn.CorruptCheckpointError`][] for a checkpoint that cannot be read;
    [`metapinn.DamagedMetricsError`][] for a damaged metrics file (before any work);
    what [`metapinn.experiment.reference_fields`][] raises (also through `reference`);
    [`metapinn.RunFolderError`][] if a result file cannot be written;
    [`metapinn.RunFolderBusy`][] if another process is writing the folder.
    """
    folder = RunFolder(out_dir)
    if not folder.path.is_dir():  # before the lock would make it
        raise FileNotFoundError(f"cannot evaluate {folder.path}: no such run folder")
    solved = read_scratch(scratch, config) if scratch else None
    if solved is not None and not config.eval_adapters:
        raise ConfigError(
            "--scratch: the solves from scratch are set against the timed adapters, and "
            "this evaluation has none (give --eval-adapters, e.g. gauss-newton)"
        )
    with folder.writing():
        if solved is None:
            solved = _kept_scratch(folder, config, log)
        evaluation = evaluate(config, folder.path, log=log, reference=reference, mesh=mesh)
        results = evaluation.summary()
        if solved is not None:
            results["scratch"] = solved
        write_json(folder.results_file, results)
        write_text(folder.report_file, to_markdown(results))
        if plots:
            _plots(evaluation, folder, results)
    return results


def _kept_scratch(
    folder: RunFolder, config: ExperimentConfig, log: Callable[[str], None]
) -> dict[str, Any] | None:
    """The solves from scratch of the folder's previous results, kept when they are
    still solves of this evaluation's held-out tasks (and it has timed adapters)."""
    try:
        previous = json.loads(folder.results_file.read_text()).get("scratch")
    except (OSError, ValueError, AttributeError):
        return None
    if not previous:
        return None
    labels = config.held_out_labels()
    tasks = previous.get("tasks") or []
    if config.eval_adapters and all(
        0 <= t["index"] < len(labels) and t["task_label"] == labels[t["index"]] for t in tasks
    ):
        log("keeping the solves from scratch of the previous results")
        return previous
    log("dropping the solves from scratch of the previous results: other held-out tasks")
    return None


def rewrite_report(
    out_dir: str | os.PathLike,
    scratch: str | os.PathLike | Sequence[str | os.PathLike] = (),
    *,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Write a run's `results.md` and `plots/wall_clock.png` again from its
    `results.json`, adapting nothing; with `scratch`, after adding those solves from
    scratch to the results (as [`metapinn.experiment.evaluate_runs`][]'s `scratch`
    would, without measuring anything again).

    **Returns:** the results as written to `results.json`.

    **Raises:** `FileNotFoundError` if the folder has no `results.json`;
    [`metapinn.experiment.ConfigError`][] for a bad `scratch` file, or one given to
    results without timed adapters; [`metapinn.RunFolderError`][] if a file cannot
    be written; [`metapinn.RunFolderBusy`][] if another process is writing the
    folder."""
    folder = RunFolder(out_dir)
    if not folder.results_file.is_file():
        raise FileNotFoundError(f"cannot rewrite the report of {folder.path}: no results.json")
    with folder.writing():
        results = json.loads(folder.results_file.read_text())
        if scratch:
            config = ExperimentConfig.from_dict(results["config"])
            if "adapters" not in results:
                raise ConfigError(
                    "--scratch: the solves from scratch are set against the timed "
                    "adapters, and these results have none"
                )
            results["scratch"] = read_scratch(scratch, config)
            write_json(folder.results_file, results)
        write_text(folder.report_file, to_markdown(results))
        if "adapters" in results:
            folder.plots_dir.mkdir(exist_ok=True)
            _save(wall_clock_figure(results), folder.plots_dir, "wall_clock")
        log(f"written: {folder.report_file}" + (f", {folder.results_file}" if scratch else ""))
    return results


def _plots(evaluation: Evaluation, folder: RunFolder, results: dict[str, Any]) -> None:
    config, inits, per_run, valid = (
        evaluation.config,
        evaluation.rows,
        evaluation.measures,
        evaluation.valid,
    )
    all_params, static = evaluation.params, evaluation.static
    x, t, grid, u_ref = evaluation.reference
    plot_dir = folder.plots_dir
    plot_dir.mkdir(exist_ok=True)
    curves = {}
    for m in config.methods:
        spec = config.method(m)
        if spec.transfer:
            continue
        curves[m] = np.stack([folder.training_curve(m, s, spec.meta_steps) for s in config.seeds])
    labels = [label(i) for i in inits]
    if curves:
        _save(plot_meta_training(curves, {m: label(m) for m in curves}), plot_dir, "meta_training")
    inside = in_range(config)  # the curves average the tasks the tables average
    in_range_runs = {name: values[:, :, inside] for name, values in per_run.items()}
    _save(plot_few_shot(config.eval_steps, in_range_runs, labels), plot_dir, "few_shot")
    if "adapters" in results:
        _save(wall_clock_figure(results), plot_dir, "wall_clock")
    _save(
        plot_per_task(config.held_out_labels(), per_run["rel_l2"], labels, config.eval_steps,
                           config.budget),
        plot_dir,
        "per_task",
    )  # fmt: skip
    # Fields for the first seed and the first held-out task, at the budget.
    kb = config.eval_steps.index(config.budget)
    dtype = jnp.dtype(config.dtype)
    points = jnp.asarray(grid.reshape(-1, 2), dtype=dtype)
    fields = {}
    for i, init in enumerate(inits):
        if not valid[i, 0]:
            continue
        p = jax.tree_util.tree_map(lambda a, i=i: a[i, 0, 0, kb], all_params)
        fields[f"{label(init)} + {config.budget} steps"] = pinn_field(p, static, points)
    if config.eval_steps[-1] != config.budget:
        p = jax.tree_util.tree_map(lambda a: a[0, 0, 0, -1], all_params)
        fields[f"{label(RANDOM)} + {config.eval_steps[-1]} steps"] = pinn_field(p, static, points)
    fields = {k: np.asarray(v, dtype=np.float64).reshape(len(t), len(x)) for k, v in fields.items()}
    _save(
        plot_fields(x, t, u_ref[0], fields, config.held_out_labels()[0], seed=config.seeds[0]),
        plot_dir,
        "fields",
    )


def wall_clock_figure(results: dict[str, Any]):
    """Error against wall-clock for each (initialisation, adapter) of a run's results
    (the plain data of `results.json`, so a committed run's figure is redrawn from its
    file), over the held-out tasks in the training range, with the solves from
    scratch where the results hold them (`scratch`): see
    [`metapinn.experiment.plot_error_vs_seconds`][].

    **Raises:** `KeyError` naming what is missing if the results have no `adapters` (a
    run without `eval_adapters`) or no per-run measurements of them (a file written
    before they were kept)."""
    if "adapters" not in results:
        raise KeyError("adapters: the run was evaluated without eval_adapters")
    inside = np.asarray(results.get("in_range") or [True] * len(results["test_tasks"]), bool)
    curves = {}
    for adapter, data in results["adapters"].items():
        if "per_run_rel_l2" not in data:
            raise KeyError(f"per_run_rel_l2: the results keep no per-run {adapter} measurements")
        rel = np.asarray(data["per_run_rel_l2"], dtype=np.float64)  # null -> NaN
        seconds = np.asarray(data["per_run_seconds"], dtype=np.float64)
        for i, row in enumerate(data["rows"]):
            curves[row["init"], adapter] = (seconds[i][:, inside], rel[i][:, inside])
    labels = {**results["labels"], **{a: adapter_short(a) for a in results["adapters"]}}
    solved = [t for t in (results.get("scratch") or {}).get("tasks", []) if inside[t["index"]]]
    if solved and len({tuple(t["steps"]) for t in solved}) == 1:
        # The solves from scratch, one per task (no seeds), on a common record grid.
        curves[SCRATCH_ROW, SCRATCH_ADAPTER] = (
            np.asarray([[t["seconds"] for t in solved]]),
            np.asarray([[t["rel_l2"] for t in solved]]),
        )
        recipe = "the family's recipe"
        if len(solved) < int(inside.sum()):
            recipe += f", {len(solved)} of the {int(inside.sum())} tasks"
        labels.update({SCRATCH_ROW: "From scratch", SCRATCH_ADAPTER: recipe})
    config = results["config"]
    title = (
        f"{config['name']}: error against wall-clock, {len(results['seeds'])} seed(s) "
        "(band: min–max)"
    )
    return plot_error_vs_seconds(curves, labels, title)


def _save(fig, folder, name: str) -> None:
    atomic_write(folder / f"{name}.png", lambda f: fig.savefig(f, format="png", dpi=110), True)
