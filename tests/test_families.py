"""The PDE families beyond Burgers (docs/design.md §2): each reference solver against its
exact solution, each exact solution against its PDE, initial and boundary conditions,
and bad parameters."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import metapinn as mp


FAMILIES = {
    "heat": (mp.Heat(), mp.HeatTask, (0.01, 0.1, 0.5)),
    "wave": (mp.Wave(), mp.WaveTask, (0.5, 1.2, 2.0)),
    "convection": (mp.Convection(), mp.ConvectionTask, (1.0, 10.0, 40.0)),
}
"""Each family, its task type, and parameter values across its training range."""


class ExactPINN(mp.AbstractPINN):
    """A family's exact solution as a 'network', its derivatives by nested `jax.grad`
    (independent of the hand-written jet)."""

    pde: mp.AbstractPDE
    task: eqx.Module

    def _u(self, x, t):
        return self.pde.exact_solution(self.task, x[None], t[None])[0, 0]

    def __call__(self, points):
        return jax.vmap(self._u)(points[:, 0], points[:, 1])

    def derivatives(self, points, needs=mp.BURGERS_NEEDS):
        x, t = points[:, 0], points[:, 1]
        grads = {
            "u_x": jax.grad(self._u, 0),
            "u_t": jax.grad(self._u, 1),
            "u_xx": jax.grad(jax.grad(self._u, 0), 0),
            "u_tt": jax.grad(jax.grad(self._u, 1), 1),
        }
        fields = {n: jax.vmap(grads[n])(x, t) for n in mp.check_needs(needs)}
        return mp.Derivatives(u=self(points), **fields)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_reference_solver_matches_the_exact_solution(family):
    pde, task_type, values = FAMILIES[family]
    x, t = pde.standard_grid()
    assert x[0] == pde.x_min and x[-1] == pde.x_max and x.shape == (256,) and t.shape == (101,)
    for value in values:
        task = task_type(value)
        exact = pde.exact_solution(task, x, t)
        reference = pde.reference_solution(task, x, t)
        assert exact.shape == reference.shape == (101, 256)
        assert float(mp.relative_l2_error(reference, exact)) <= 1e-6, (family, value)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_grid_that_starts_late_is_not_a_shifted_solution(family):
    """The solve starts at the family's t_min whatever the first requested time."""
    pde, task_type, values = FAMILIES[family]
    x, t = pde.standard_grid()
    task = task_type(values[1])
    late = pde.reference_solution(task, x[::8], t[50::10])
    np.testing.assert_allclose(late, pde.exact_solution(task, x[::8], t[50::10]), atol=1e-8)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_exact_solution_satisfies_its_pde_and_conditions(getkey, family):
    """On collocation points drawn as training draws them, the loss of the exact
    solution is zero to rounding: its residual, its initial errors (for the wave
    equation, the velocity too) and its boundary errors (for convection, the periodic
    jump)."""
    pde, task_type, values = FAMILIES[family]
    batch = mp.sample_collocation(getkey(), pde, 64, 16, 8)
    for value in values:
        task = task_type(value)
        terms = mp.loss_terms(ExactPINN(pde, task), pde, task, batch)
        scale = 1.0 + value**4  # u_tt grows like c^2 (n pi)^2, u_t like beta
        assert float(terms.residual) < 1e-20 * scale, (family, value, terms)
        assert float(terms.initial) < 1e-26 and float(terms.boundary) < 1e-26, terms
        # Another task's parameter does not solve this one.
        other = task_type(values[0] if value != values[0] else values[-1])
        assert float(mp.loss_terms(ExactPINN(pde, task), pde, other, batch).residual) > 1e-6


def test_convection_on_another_period():
    pde = mp.Convection(x_max=4 * np.pi)
    x, t = pde.standard_grid()
    task = mp.ConvectionTask(3.0)
    error = mp.relative_l2_error(pde.reference_solution(task, x, t), pde.exact_solution(task, x, t))
    assert float(error) <= 1e-6


@pytest.mark.parametrize("num_modes", [32, -1, True])
def test_convection_reference_names_a_bad_num_modes(num_modes):
    """u0 is sampled at 64 points: the modes kept are an integer in [0, 32)."""
    pde = mp.Convection()
    x, t = pde.standard_grid()
    with pytest.raises(
        ValueError, match=rf"integer num_modes in \[0, 32\) .* got num_modes={num_modes}"
    ):
        pde.reference_solution(mp.ConvectionTask(3.0), x, t, num_modes=num_modes)


def test_periodic_boundary_points_come_in_pairs(getkey):
    pde = mp.Convection()
    batch = mp.sample_collocation(getkey(), pde, 10, 5, 7)
    left, right = batch.boundary[:7], batch.boundary[7:]
    assert jnp.all(left[:, 0] == pde.x_min) and jnp.all(right[:, 0] == pde.x_max)
    assert jnp.array_equal(left[:, 1], right[:, 1])
    # A Dirichlet family's sides are drawn independently (as before).
    batch = mp.sample_collocation(getkey(), mp.Heat(), 10, 5, 7)
    assert not jnp.array_equal(batch.boundary[:7, 1], batch.boundary[7:, 1])


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: mp.HeatTask(0.0), r"heat diffusivity kappa must be finite and > 0, got 0.0"),
        (
            lambda: mp.HeatTask(jnp.asarray([0.1, -0.2])),
            r"kappa must be finite and > 0, got \[0.1, -0.2\]",
        ),
        (lambda: mp.WaveTask(-1.0), r"wave speed c must be finite and > 0, got -1.0"),
        (lambda: mp.ConvectionTask(float("nan")), r"convection speed beta must be finite"),
    ],
)
def test_bad_parameters_are_named(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_bad_parameters_under_jit_are_caught(getkey):
    pde = mp.Heat()
    pinn = mp.MLPPINN(width=4, key=getkey())
    batch = mp.sample_collocation(getkey(), pde, 8, 4, 2)

    @jax.jit
    def loss(kappa):
        return mp.pinn_loss(pinn, pde, mp.HeatTask(kappa), batch)

    assert jnp.isfinite(loss(jnp.asarray(0.1)))
    with pytest.raises(Exception, match="kappa must be finite and > 0"):
        loss(jnp.asarray(-0.1)).block_until_ready()
    assert mp.ConvectionTask(-3.0).beta == -3.0  # beta only needs to be finite


@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_pinn_trains_on_every_family(getkey, family):
    """The hand-written gradient of each family's loss matches JAX's reverse mode, and a
    few Adam steps of `adapt` lower the loss."""
    pde, task_type, values = FAMILIES[family]
    batch = mp.sample_collocation(getkey(), pde, 24, 8, 4)
    pinn = mp.MLPPINN(width=6, depth=2, key=getkey())
    layers = tuple(l.at[:, -1].set(jr.normal(getkey(), l[:, -1].shape)) for l in pinn.layers)
    pinn = eqx.tree_at(lambda m: m.layers, pinn, layers)
    task = task_type(values[1])
    loss, grads = mp.pinn_loss_and_grad(pinn, pde, task, batch)
    ref_loss, ref_grads = eqx.filter_value_and_grad(mp.pinn_loss)(pinn, pde, task, batch)
    assert loss == pytest.approx(float(ref_loss), rel=1e-12)
    assert eqx.tree_equal(grads, ref_grads, rtol=1e-9, atol=1e-12)
    params, static = eqx.partition(pinn, eqx.is_inexact_array)
    _, losses = mp.adapt(
        params, static, mp.PINNLoss(pde), task, batch, steps=50, optimizer=optax.adam(1e-2)
    )
    assert losses[-1] < 0.5 * losses[0]


def test_random_initial_conditions(getkey):
    key = getkey()
    a = mp.random_initial_conditions(key, 64)
    assert a.shape == (64, 8)
    assert jnp.array_equal(a, mp.random_initial_conditions(key, 64))
    x = jnp.linspace(-1.0, 1.0, 4097)
    u0 = jax.vmap(lambda c: mp.RandomICTask(c, 0.01).initial_condition(x))(a)
    peaks = jnp.max(jnp.abs(u0), 1)
    assert jnp.all(peaks <= 1)
    assert jnp.any(peaks > 0.999) and jnp.any(peaks < 0.99)  # scaled draws and unscaled
    # The modes fall off like 1/k: the spread of a_8 is about an eighth of a_1's.
    assert 4 < float(jnp.std(a[:, 0]) / jnp.std(a[:, 7])) < 16
    for row in a[:4]:
        mp.RandomICTask(row, 0.01)  # every draw is a valid task


@pytest.mark.parametrize("nu", [0.01, pytest.param(0.02, marks=pytest.mark.slow)])
def test_random_ic_reference_matches_cole_hopf(getkey, nu):
    pde = mp.BurgersRandomIC()
    x, t = pde.standard_grid()
    for a in mp.random_initial_conditions(getkey(), 2):
        task = mp.RandomICTask(a, nu)
        exact = pde.exact_solution(task, x, t)
        assert jnp.allclose(exact[0], task.initial_condition(x), atol=1e-14)
        assert jnp.max(jnp.abs(exact[:, [0, -1]])) < 1e-12  # u(±1, t) = 0
        reference = pde.reference_solution(task, x, t)
        assert float(mp.relative_l2_error(reference, exact)) <= 1e-6


def test_random_ic_cole_hopf_solves_burgers(getkey):
    """The quadrature's derivatives (by jax.grad) satisfy the PDE at random points."""
    a = mp.random_initial_conditions(getkey(), 1)[0]
    nu = 0.01
    nodes = mp.cole_hopf_num_nodes(nu, 1.0, a.tolist())

    def u(x, t):
        return mp.cole_hopf_solution(x, t, nu, coefficients=np.asarray(a), num_nodes=nodes)

    points = jr.uniform(getkey(), (16, 2), minval=jnp.asarray([-1.0, 0.05]), maxval=1.0)
    x, t = points[:, 0], points[:, 1]
    u_x = jax.vmap(jax.grad(u, 0))(x, t)
    residual = (
        jax.vmap(jax.grad(u, 1))(x, t)
        + jax.vmap(u)(x, t) * u_x
        - nu * jax.vmap(jax.grad(jax.grad(u, 0), 0))(x, t)
    )
    assert float(jnp.max(jnp.abs(residual))) < 1e-8 * (1 + float(jnp.max(jnp.abs(u_x))))


def test_random_ic_family_trains(getkey):
    pde = mp.BurgersRandomIC()
    task = mp.RandomICTask(mp.random_initial_conditions(getkey(), 1)[0], 0.01)
    batch = mp.sample_collocation(getkey(), pde, 24, 8, 4)
    pinn = mp.MLPPINN(width=6, depth=2, key=getkey())
    loss, grads = mp.pinn_loss_and_grad(pinn, pde, task, batch)
    ref_loss, ref_grads = eqx.filter_value_and_grad(mp.pinn_loss)(pinn, pde, task, batch)
    assert loss == pytest.approx(float(ref_loss), rel=1e-12)
    assert eqx.tree_equal(grads, ref_grads, rtol=1e-9, atol=1e-12)
    # A batch of tasks vmaps: each its own initial condition.
    tasks = mp.RandomICTask(mp.random_initial_conditions(getkey(), 3), jnp.full((3,), 0.01))
    losses = jax.vmap(lambda task: mp.pinn_loss(pinn, pde, task, batch))(tasks)
    assert losses.shape == (3,) and len(set(losses.tolist())) == 3


@pytest.mark.parametrize(
    "coefficients, nu, message",
    [
        ([1.0, 0.5], 0.01, r"max \|u0\| <= 1; coefficients \[1.0, 0.5\] give max \|u0\| = 1.299"),
        ([0.5, float("nan")], 0.01, "coefficients must be finite"),
        ([0.5], 0.0, "random-IC Burgers viscosity nu must be finite and > 0, got 0.0"),
    ],
)
def test_bad_random_ic_tasks_are_named(coefficients, nu, message):
    with pytest.raises(ValueError, match=message):
        mp.RandomICTask(jnp.asarray(coefficients), nu)


@pytest.mark.parametrize("family", [mp.Burgers, mp.BurgersRandomIC])
@pytest.mark.parametrize(
    "field, value", [("x_min", 0.0), ("x_max", 2.0), ("t_min", 0.5), ("t_max", 2.0)]
)
def test_burgers_families_reject_another_domain(family, field, value):
    """Their initial conditions, exact and reference solutions are those of
    [-1, 1] × [0, 1]: another domain would sample points where the truth is not."""
    message = rf"{family.__name__} is defined on x in \[-1, 1\], t in \[0, 1\] only"
    with pytest.raises(ValueError, match=rf"{message} .* got {field}={value}"):
        family(**{field: value})
    pde = family(x_min=-1.0, x_max=1.0, t_min=0.0, t_max=1.0)  # the one domain, spelled out
    assert (pde.x_min, pde.x_max, pde.t_min, pde.t_max) == (-1, 1, 0, 1)


def test_random_ic_reference_needs_one_concrete_task_or_a_grid_size(getkey):
    """The default grid size comes from one concrete nu: a batch or a traced task is a
    clear error; with a grid size, the reference vmaps over tasks."""
    pde = mp.BurgersRandomIC()
    x, t = jnp.linspace(-1.0, 1.0, 5), jnp.linspace(0.0, 0.5, 3)
    tasks = mp.RandomICTask(mp.random_initial_conditions(getkey(), 2), jnp.full((2,), 0.05))
    with pytest.raises(ValueError, match=r"takes one task; got nu of shape \(2,\)"):
        pde.reference_solution(tasks, x, t)
    one = jax.tree_util.tree_map(lambda leaf: leaf[0], tasks)
    with pytest.raises(ValueError, match="needs grid_size when the task's nu is traced"):
        jax.jit(lambda task: pde.reference_solution(task, x, t))(one)
    batch = jax.vmap(lambda task: pde.reference_solution(task, x, t, grid_size=48))(tasks)
    assert batch.shape == (2, 3, 5)
    assert jnp.allclose(batch[0], pde.reference_solution(one, x, t, grid_size=48), atol=1e-12)
