"""Not a timing: how sensitive MAML's first outer step is, from a run's multi-task
pre-training, to the device split and to a rounding-sized change of its start.

A run of the main job on one device and one on two differ in float32 rounding only
(a mean over 6 tasks taken as two means of 3), yet their MAML meta-losses are far
apart after one outer step. This takes the multi-task result of `RUN` (a finished
`metapinn reproduce` folder) and makes that first step three ways: on one device, on
two (the task batch split 3 + 3), and on one device from the start with every
parameter multiplied by `1 + 1e-7 z`, `z` standard normal. For each it prints the
update's distance from the one-device update, relative to that update's norm, and the
share of the parameters whose update changed sign.

    python benchmarks/maml_first_step.py RUN
"""

import argparse
import os


os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
)

import jax  # noqa: E402


jax.config.update("jax_enable_x64", True)

import jax.random as jr  # noqa: E402
import numpy as np  # noqa: E402

import metapinn as mp  # noqa: E402
from metapinn._experiment._config import load_config  # noqa: E402
from metapinn._experiment._folder import RunFolder  # noqa: E402
from metapinn._experiment._problem import (  # noqa: E402
    build_problem,
    initialisation,
    point_sampler,
)
from metapinn._experiment._training import starting_point  # noqa: E402


def _flat(tree) -> np.ndarray:
    leaves = jax.tree_util.tree_leaves(tree)
    return np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in leaves])


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("run", help="a finished `metapinn reproduce` folder with MAML in it")
    args = parser.parse_args()
    config = load_config(os.path.join(args.run, "config.json"))
    problem = build_problem(config)
    sampler = point_sampler(config, problem)
    method = config.method("maml")
    params, static, key = initialisation(config, 0, method.conditioned)
    learner = method.meta_learner(params)
    start = starting_point(config, RunFolder(args.run), method.name, 0, params)
    optimizer = method.outer_optimizer()

    def first_step(p, mesh):
        result = mp.meta_train(
            learner, p, static, problem.loss(method.conditioned), problem.train_tasks,
            None if sampler is not None else problem.points, steps=1, optimizer=optimizer,
            key=key, tasks_per_step=config.tasks_per_step, sample_points=sampler, mesh=mesh,
            tasks_at_once=method.tasks_at_once(config), progress=False,
        )  # fmt: skip
        return _flat(result.params) - _flat(learner.init_meta_params(p))

    def perturb(x):
        return x * (1 + 1e-7 * jr.normal(jr.key(1), x.shape, x.dtype))

    base = first_step(start, None)
    print(f"one-device update: rms {np.sqrt(np.mean(base**2)):.3e} over {base.size} parameters")
    for name, update in [
        ("two devices", first_step(start, mp.task_mesh(2))),
        ("one device, start x (1 + 1e-7 z)", first_step(jax.tree.map(perturb, start), None)),
    ]:
        gap = np.linalg.norm(update - base) / np.linalg.norm(base)
        flipped = np.mean(np.sign(update) != np.sign(base))
        print(f"{name}: relative distance {gap:.3e}, signs changed {flipped:.2%}")


if __name__ == "__main__":
    main()
