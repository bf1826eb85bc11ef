"""The Allen-Cahn family (docs/design.md F5): its residual and periodic boundary error on
hand-built derivatives, bad diffusivities, and its reference solver, which has no exact
solution to meet: it must agree with itself under refinement (modes and tolerances),
start from `u0`, satisfy the PDE by a finite-difference check independent of the solver,
obey the maximum principle and be periodic."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import metapinn as mp
from metapinn._pde._allen_cahn import AllenCahn, AllenCahnTask


PDE = AllenCahn()


def _relative(u, v):
    return float(mp.relative_l2_error(u, v))


def _derivatives(key, n):
    u, u_x, u_t, u_xx = jr.normal(key, (4, n))
    return mp.Derivatives(u=u, u_x=u_x, u_t=u_t, u_xx=u_xx)


def test_residual_is_the_formula(getkey):
    derivs = _derivatives(getkey(), 9)
    for epsilon in (1e-4, 3e-3):
        residual = PDE.residual(derivs, AllenCahnTask(epsilon))
        u = derivs.u
        expected = derivs.u_t - epsilon * derivs.u_xx - 5.0 * (u - u**3)
        assert jnp.allclose(residual, expected, rtol=1e-14, atol=1e-14)
    # u = 0 and u = ±1 are the reaction's equilibria: constant states solve the PDE.
    for value in (-1.0, 0.0, 1.0):
        still = mp.Derivatives(*(jnp.full((3,), v) for v in (value, 0.0, 0.0, 0.0)))
        assert jnp.all(PDE.residual(still, AllenCahnTask(1e-3)) == 0)
    x = jnp.asarray([-1.0, -0.5, 0.0, 1.0])
    assert jnp.allclose(PDE.initial_condition(x), jnp.asarray([-1.0, 0.0, 0.0, -1.0]), atol=1e-15)


def test_periodic_boundary_error_includes_the_slope_jump(getkey):
    assert PDE.periodic and PDE.jet_needs[2] == ("u_x",)
    t = jr.uniform(getkey(), (4,))
    points = jnp.concatenate(
        [jnp.stack([jnp.full((4,), -1.0), t], 1), jnp.stack([jnp.ones(4), t], 1)]
    )
    u, u_x = jr.normal(getkey(), (2, 8))
    error = PDE.boundary_error(mp.Derivatives(u=u, u_x=u_x), points, AllenCahnTask(1e-3))
    assert jnp.array_equal(error, jnp.concatenate([u[:4] - u[4:], u_x[:4] - u_x[4:]]))
    # A continuous u with a kink (u0's own, u0'(±1) = ∓2) is an error, not a solution.
    kink = mp.Derivatives(u=jnp.full((8,), -1.0), u_x=jnp.repeat(jnp.asarray([2.0, -2.0]), 4))
    assert jnp.array_equal(
        PDE.boundary_error(kink, points, AllenCahnTask(1e-3))[4:], jnp.full(4, 4.0)
    )


def test_the_loss_uses_the_slope_at_the_boundary(getkey):
    """`loss_terms` asks the jet for `u_x` at the boundary: its boundary term is the mean
    square of the jumps of `u` and of `u_x` (by `jax.grad`) across the period."""
    pinn = mp.MLPPINN(width=6, depth=2, key=getkey())
    batch = mp.sample_collocation(getkey(), PDE, 16, 8, 5)

    @eqx.filter_jit
    def boundary_terms(pinn):
        u = lambda x, t: pinn(jnp.stack([x, t])[None])[0]
        x, t = batch.boundary[:, 0], batch.boundary[:, 1]
        values, slopes = jax.vmap(u)(x, t), jax.vmap(jax.grad(u))(x, t)
        jumps = jnp.concatenate([values[:5] - values[5:], slopes[:5] - slopes[5:]])
        terms = mp.loss_terms(pinn, PDE, AllenCahnTask(1e-3), batch)
        return terms.boundary, jnp.mean(jumps**2)

    boundary, expected = boundary_terms(pinn)
    assert float(boundary) == pytest.approx(float(expected), rel=1e-12)
    assert float(boundary) > 1e-6  # (a random network is not periodic)


@pytest.mark.parametrize(
    "value, message",
    [
        (0.0, r"Allen-Cahn diffusivity epsilon must be finite and > 0, got 0.0"),
        (-1e-3, r"epsilon must be finite and > 0, got -0.001"),
        (float("nan"), r"epsilon must be finite and > 0, got nan"),
        (float("inf"), r"epsilon must be finite and > 0, got inf"),
        (jnp.asarray([1e-3, -2.0]), r"epsilon must be finite and > 0, got \[0.001, -2.0\]"),
    ],
)
def test_bad_epsilon_is_named(value, message):
    with pytest.raises(ValueError, match=message):
        AllenCahnTask(value)
    if jnp.ndim(value):
        return
    # A task built around the check still cannot reach the reference solver.
    task = eqx.tree_at(lambda task: task.epsilon, AllenCahnTask(1e-3), jnp.asarray(value))
    x, t = PDE.standard_grid()
    with pytest.raises(ValueError, match=message):
        PDE.reference_solution(task, x, t)


def test_bad_epsilon_under_jit_is_caught(getkey):
    pinn = mp.MLPPINN(width=4, key=getkey())
    batch = mp.sample_collocation(getkey(), PDE, 8, 4, 2)

    @jax.jit
    def loss(epsilon):
        return mp.pinn_loss(pinn, PDE, AllenCahnTask(epsilon), batch)

    assert jnp.isfinite(loss(jnp.asarray(1e-3)))
    for bad in (0.0, -1e-3, float("nan")):
        with pytest.raises(Exception, match="epsilon must be finite and > 0"):
            loss(jnp.asarray(bad)).block_until_ready()
    with pytest.raises(ValueError, match="a traced epsilon has no default num_modes"):
        jax.jit(lambda e: PDE.reference_solution(AllenCahnTask(e), *PDE.standard_grid()))(1e-3)


def test_default_num_modes_scales_like_one_over_root_epsilon():
    assert [PDE.default_num_modes(e) for e in (1e-4, 1e-3, 1e-2, 1.0)] == [1023, 511, 127, 31]
    for epsilon in np.geomspace(1e-4, 1e-2, 9):
        modes = PDE.default_num_modes(float(epsilon)) + 1
        assert 10 <= modes * np.sqrt(epsilon) < 20 and modes & (modes - 1) == 0
    # Modes count wavelengths: a period twice as long needs twice as many.
    assert AllenCahn(x_min=-2.0, x_max=2.0).default_num_modes(1e-4) == 2047


@pytest.mark.parametrize(
    "epsilon",
    [1e-2, pytest.param(1e-3, marks=pytest.mark.slow), pytest.param(1e-4, marks=pytest.mark.slow)],
)
def test_reference_converges_in_modes(epsilon):
    """Twice the modes change the reference by at most 1e-6 relative L2 on the standard
    grid (measured: about 1e-10) across the training range of epsilon."""
    x, t = PDE.standard_grid()
    task = AllenCahnTask(epsilon)
    u = PDE.reference_solution(task, x, t)
    assert u.shape == (101, 256) and u.dtype == jnp.float64
    finer = PDE.reference_solution(task, x, t, 2 * PDE.default_num_modes(epsilon) + 1)
    assert _relative(u, finer) <= 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("epsilon", [1e-4, 1e-3, 1e-2])
def test_reference_converges_in_tolerance_and_not_when_coarse(epsilon):
    """Tolerances a hundred times tighter change the reference by at most 1e-6 (measured:
    about 1e-10); a quarter of the default modes is visibly wrong (the check can fail)."""
    x, t = PDE.standard_grid()
    task = AllenCahnTask(epsilon)
    u = PDE.reference_solution(task, x, t)
    assert _relative(u, PDE.reference_solution(task, x, t, rtol=1e-12, atol=1e-14)) <= 1e-6
    coarse = PDE.reference_solution(task, x, t, (PDE.default_num_modes(epsilon) + 1) // 4 - 1)
    assert _relative(u, coarse) > 1e-6


def test_reference_starts_from_u0_is_periodic_and_bounded():
    x, t = PDE.standard_grid()
    u = PDE.reference_solution(AllenCahnTask(1e-2), x, t)
    assert jnp.array_equal(u[0], PDE.initial_condition(x))
    # The series is summed at x = -1 and x = 1 alike: the same value to rounding.
    assert float(jnp.max(jnp.abs(u[:, 0] - u[:, -1]))) < 1e-12
    # The maximum principle: |u0| <= 1, so |u| <= 1; the reaction pushes u to ±1.
    assert float(jnp.max(jnp.abs(u))) <= 1 + 1e-10
    assert float(u[-1].min()) < -0.99 and float(u[-1].max()) > 0.9
    # A grid that starts after t_min is still solved from u0 at t_min (a grid of the
    # same size: the same compile).
    later = PDE.reference_solution(AllenCahnTask(1e-2), x, jnp.linspace(0.5, 1.0, 101))
    assert float(jnp.max(jnp.abs(later[::2] - u[50:]))) < 1e-8


def test_reference_satisfies_the_pde():
    """On the periodic grid of 256 points (where `u_xx` of the default 127 modes is exact
    by FFT) and 101 times `1e-3` apart from t = 0.1 (a fourth-order central difference
    for `u_t`), the residual is below 1e-5 of `max |u_t|` (measured: ~1e-7); with a wrong
    epsilon, or without the reaction, it is not. (The grid's shape is the standard one:
    the same compile.)"""
    epsilon, size, h = 1e-2, 256, 1e-3
    assert 2 * PDE.default_num_modes(epsilon) < size
    x = -1.0 + 2.0 * jnp.arange(size, dtype=jnp.float64) / size
    t = 0.1 + h * jnp.arange(101, dtype=jnp.float64)
    u = PDE.reference_solution(AllenCahnTask(epsilon), x, t)
    u_t = (u[:-4] - 8 * u[1:-3] + 8 * u[3:-1] - u[4:]) / (12 * h)
    k2 = (jnp.pi * jnp.arange(size // 2 + 1, dtype=jnp.float64)) ** 2
    u_xx = jnp.fft.irfft(jnp.fft.rfft(u[2:-2]) * (-k2).astype(jnp.complex128)[None], n=size)
    derivs = mp.Derivatives(u=u[2:-2].ravel(), u_t=u_t.ravel(), u_xx=u_xx.ravel())
    scale = float(jnp.max(jnp.abs(u_t)))
    residual = PDE.residual(derivs, AllenCahnTask(epsilon))
    assert float(jnp.max(jnp.abs(residual))) < 1e-5 * scale
    wrong = PDE.residual(derivs, AllenCahnTask(2 * epsilon))
    assert float(jnp.max(jnp.abs(wrong))) > 1e-2 * scale
    assert float(jnp.max(jnp.abs(derivs.u_t - epsilon * derivs.u_xx))) > 1e-1 * scale


@pytest.mark.slow
def test_reference_vmaps_over_tasks_and_checks_them_under_jit():
    x, t = PDE.standard_grid()
    epsilons = jnp.asarray([3e-3, 1e-2])
    batched = jax.vmap(lambda e: PDE.reference_solution(AllenCahnTask(e), x, t, 255))(epsilons)
    for u, epsilon in zip(batched, epsilons, strict=True):
        alone = PDE.reference_solution(AllenCahnTask(epsilon), x, t, 255)
        assert _relative(u, alone) < 1e-9
    solve = jax.jit(lambda e: PDE.reference_solution(AllenCahnTask(e), x, t, 255))
    with pytest.raises(Exception, match="epsilon must be finite and > 0"):
        solve(jnp.asarray(-1e-3)).block_until_ready()
