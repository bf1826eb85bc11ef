"""Accuracy metrics against hand-computable cases."""

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pytest

import metapinn as mp
from metapinn._grid import grid_points
from metapinn._metrics import (
    ErrorReport,
    evaluate_pinn,
    max_abs_error,
    relative_l2_error,
    rms_residual,
)
from metapinn._pinn import Derivatives


class _FormulaPINN(mp.AbstractPINN):
    """`u = a x / (1 + b t)` with its exact derivatives. For `a = b = 1` it solves
    Burgers' equation for every viscosity (`u_t + u u_x = 0` and `u_xx = 0`)."""

    a: float
    b: float

    def __call__(self, points):
        return self.derivatives(points).u

    def derivatives(self, points, needs=mp.BURGERS_NEEDS):
        del needs  # it always gives u_x, u_t, u_xx
        x, t = points[:, 0], points[:, 1]
        denominator = 1.0 + self.b * t
        u = self.a * x / denominator
        return Derivatives(
            u=u,
            u_x=self.a / denominator + 0.0 * x,
            u_t=-self.b * u / denominator,
            u_xx=jnp.zeros_like(x),
        )


def _constant_pinn(key, value: float, dtype=None) -> mp.MLPPINN:
    """An MLPPINN with every weight zero and output bias `value`: u = value exactly."""
    pinn = mp.MLPPINN(width=8, depth=2, dtype=dtype, key=key)
    layers = tuple(jnp.zeros_like(layer) for layer in pinn.layers)
    layers = (*layers[:-1], layers[-1].at[0, -1].set(value))  # the output bias
    return eqx.tree_at(lambda p: p.layers, pinn, layers)


def test_relative_l2_error_hand_cases():
    u = jnp.array([[1.0, -2.0], [0.5, 3.0]])
    assert float(relative_l2_error(2.0 * u, u)) == pytest.approx(1.0, rel=1e-15)
    assert float(relative_l2_error(u, u)) == 0.0
    assert float(relative_l2_error(jnp.zeros(2), jnp.array([3.0, 4.0]))) == 1.0
    # ||(1, 1) - (3, 4)|| / 5 = ||(-2, -3)|| / 5 = sqrt(13) / 5
    value = relative_l2_error(jnp.array([1.0, 1.0]), jnp.array([3.0, 4.0]))
    assert float(value) == pytest.approx(np.sqrt(13.0) / 5.0, rel=1e-15)
    assert value.shape == ()


def test_max_abs_error_hand_cases():
    assert float(max_abs_error(jnp.array([1.0, -2.0, 3.0]), jnp.array([1.0, 2.0, 3.5]))) == 4.0
    assert float(max_abs_error(jnp.ones((2, 3)), jnp.ones((2, 3)))) == 0.0


def test_metrics_mixed_dtypes_under_strict_promotion():
    pred = jnp.array([1.0, 2.0], dtype=jnp.float32)
    ref = jnp.array([1.0, 4.0], dtype=jnp.float64)
    assert relative_l2_error(pred, ref).dtype == jnp.float64
    assert float(max_abs_error(pred, ref)) == 2.0
    assert float(relative_l2_error(pred, np.array([1.0, 4.0]))) == pytest.approx(
        2.0 / np.sqrt(17.0), rel=1e-15
    )


def test_metrics_bad_input():
    with pytest.raises(ValueError, match=r"shape \(3,\) and u_ref of shape \(4,\)"):
        relative_l2_error(jnp.zeros(3), jnp.ones(4))
    with pytest.raises(ValueError, match=r"shape \(2, 3\) and u_ref of shape \(3, 2\)"):
        max_abs_error(jnp.zeros((2, 3)), jnp.ones((3, 2)))
    with pytest.raises(ValueError, match="empty"):
        max_abs_error(jnp.zeros(0), jnp.zeros(0))
    with pytest.raises((ValueError, RuntimeError), match="identically zero"):
        relative_l2_error(jnp.ones(3), jnp.zeros(3))


def test_rms_residual_of_an_exact_solution_is_zero():
    points = grid_points(jnp.linspace(-1.0, 1.0, 9), jnp.linspace(0.0, 1.0, 5))
    pinn = _FormulaPINN(a=1.0, b=1.0)
    for nu in (0.01, 0.1):
        value = rms_residual(pinn, mp.Burgers(), mp.BurgersTask(nu), points)
        assert float(value) == pytest.approx(0.0, abs=1e-15)


def test_rms_residual_hand_case():
    # u = x: u_t = 0, u u_x = x, u_xx = 0, so the residual is x and the RMS is
    # sqrt(mean(x^2)) = sqrt((1 + 0 + 1) / 3).
    points = jnp.array([[-1.0, 0.0], [0.0, 0.5], [1.0, 1.0]])
    value = rms_residual(_FormulaPINN(a=1.0, b=0.0), mp.Burgers(), mp.BurgersTask(0.05), points)
    assert float(value) == pytest.approx(np.sqrt(2.0 / 3.0), rel=1e-15)
    # Without the test-time type checker, check_points raises ValueError naming the shape.
    with pytest.raises((ValueError, TypeError)):
        rms_residual(_FormulaPINN(a=1.0, b=0.0), mp.Burgers(), mp.BurgersTask(0.05), points[:, 0])


def test_evaluate_pinn_with_known_output(getkey):
    x = jnp.linspace(-1.0, 1.0, 8)
    t = jnp.linspace(0.0, 1.0, 3)
    pinn = _constant_pinn(getkey(), 0.5)
    u_ref = jnp.full((3, 8), 2.0)
    report = evaluate_pinn(pinn, mp.Burgers(), mp.BurgersTask(0.01), x, t, u_ref)
    assert isinstance(report, ErrorReport)
    assert float(report.rel_l2) == pytest.approx(0.75, rel=1e-15)
    assert float(report.max_abs) == pytest.approx(1.5, rel=1e-15)
    assert float(report.rms_residual) == 0.0  # a constant solves Burgers
    with pytest.raises(ValueError, match=r"\(3, 8\); got shape \(8, 3\)"):
        evaluate_pinn(pinn, mp.Burgers(), mp.BurgersTask(0.01), x, t, u_ref.T)


def test_evaluate_pinn_float32_network_against_float64_reference(getkey):
    x = jnp.linspace(-1.0, 1.0, 8)
    t = jnp.linspace(0.0, 1.0, 3)
    pinn = _constant_pinn(getkey(), 0.5, dtype=jnp.float32)
    u_ref = 2.0 * jnp.ones((3, 8), dtype=jnp.float64)
    report = evaluate_pinn(pinn, mp.Burgers(), mp.BurgersTask(0.01), x, t, u_ref)
    assert report.rel_l2.dtype == jnp.float64
    assert float(report.rel_l2) == pytest.approx(0.75, rel=1e-7)
    # An untrained network gives finite numbers.
    random = mp.MLPPINN(width=8, depth=2, dtype=jnp.float32, key=getkey())
    report = evaluate_pinn(random, mp.Burgers(), mp.BurgersTask(0.01), x, t, u_ref)
    assert all(np.isfinite(float(v)) for v in (report.rel_l2, report.max_abs, report.rms_residual))
