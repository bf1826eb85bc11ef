"""The Burgers reference solver, its exact-solution oracle, the grid helpers and the cache.

Compiles dominate the run time here, so the tests share shapes and settings where they
can: most solves use the standard grid and the default tolerances.
"""

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metapinn as mp
import metapinn._pde._burgers._reference as reference
import metapinn._pde._burgers._reference_cache as cached
from metapinn._grid import grid_points
from metapinn._pde._burgers._exact import cole_hopf_num_nodes, cole_hopf_solution
from metapinn._pde._burgers._reference import (
    SpectralBurgersSolver,
    burgers_grid_size,
    burgers_reference_solution,
)
from metapinn._pde._burgers._reference_cache import cached_burgers_reference


def _relative_l2(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


def _cole_hopf_grid(nu, x, t):
    return cole_hopf_solution(x[None, :], t[:, None], nu)


# ---------------------------------------------------------------------------------------
# Cole–Hopf.


@pytest.mark.parametrize("nu", [0.1, 0.005])  # shares compilations with the tests below
def test_cole_hopf_symmetry_boundary_and_initial_condition(nu):
    x, t = mp.Burgers().standard_grid()
    u = _cole_hopf_grid(nu, x, t)
    assert u.shape == (101, 256) and u.dtype == jnp.float64
    assert np.all(np.isfinite(u))
    # Odd in x (the grid is symmetric about 0).
    np.testing.assert_allclose(u[:, ::-1], -u, rtol=0, atol=1e-14)
    # u(±1, t) = 0.
    np.testing.assert_allclose(u[:, [0, -1]], 0.0, rtol=0, atol=1e-14)
    # t = 0 is the initial condition.
    np.testing.assert_array_equal(u[0], -jnp.sin(jnp.pi * x))


def test_cole_hopf_quadrature_converged_in_node_count():
    nu = 0.002
    x = jnp.linspace(-1.0, 1.0, 41)
    t = jnp.array([0.01, 0.2, 0.5, 1.0])
    n = cole_hopf_num_nodes(nu, 1.0)
    u = cole_hopf_solution(x[None, :], t[:, None], nu, num_nodes=n)
    finer = cole_hopf_solution(x[None, :], t[:, None], nu, num_nodes=2 * n + 1)
    np.testing.assert_allclose(u, finer, rtol=0, atol=1e-13)
    # ... and the node count does matter: far too few nodes are visibly wrong.
    coarse = cole_hopf_solution(x[None, :], t[:, None], nu, num_nodes=n // 8)
    assert float(jnp.max(jnp.abs(coarse - finer))) > 1e-6


@pytest.mark.slow
def test_cole_hopf_satisfies_burgers():
    """The residual u_t + u u_x - nu u_xx, by AD through the quadrature, vanishes: this
    checks the constants of the transformation."""
    nu = 0.02
    n = cole_hopf_num_nodes(nu, 1.0)

    def u(x, t):
        return cole_hopf_solution(x, t, nu, num_nodes=n)

    def residual(x, t):
        u_x = jax.grad(u, argnums=0)
        return jax.grad(u, argnums=1)(x, t) + u(x, t) * u_x(x, t) - nu * jax.grad(u_x)(x, t)

    x = jnp.array([-0.9, -0.5, -0.1, 0.05, 0.3, 0.77])
    t = jnp.array([0.05, 0.3, 0.5, 0.7, 0.9, 1.0])
    r = jax.vmap(residual)(x, t)
    u_x = jax.vmap(jax.grad(u))(x, t)
    assert float(jnp.max(jnp.abs(r))) < 1e-9 * float(jnp.max(jnp.abs(u_x)))


def _golden_section_max(f, lo: float, hi: float, iterations: int = 60) -> float:
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    c, d = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fc, fd = f(c), f(d)
    for _ in range(iterations):
        if fc > fd:
            hi, d, fd = d, c, fc
            c = hi - ratio * (hi - lo)
            fc = f(c)
        else:
            lo, c, fc = c, d, fd
            d = lo + ratio * (hi - lo)
            fd = f(d)
    return 0.5 * (lo + hi)


def test_cole_hopf_basdevant_maximum_slope():
    """Basdevant et al. (1986), Computers & Fluids 14:23-41: for nu = 0.01/pi the
    largest |u_x(0, t)| is 152.00516, reached at t = 1.6037/pi."""
    nu = 0.01 / math.pi
    n = cole_hopf_num_nodes(nu, 1.0)
    slope = jax.jit(
        jax.vmap(jax.grad(lambda x, t: cole_hopf_solution(x, t, nu, num_nodes=n)), (None, 0))
    )
    # A fine search over t, then golden-section refinement around its best point.
    ts = jnp.linspace(0.3, 0.8, 1001)
    values = np.abs(np.asarray(slope(0.0, ts)))
    best = int(np.argmax(values))
    step = float(ts[1] - ts[0])
    lo, hi = float(ts[best]) - step, float(ts[best]) + step

    def f(time):
        return abs(float(slope(0.0, jnp.array([time]))[0]))

    t_max = _golden_section_max(f, lo, hi)
    assert f(t_max) == pytest.approx(152.00516, rel=5e-8)
    assert t_max * math.pi == pytest.approx(1.6037, abs=5e-5)


def test_cole_hopf_bad_input():
    with pytest.raises(ValueError, match="-0.5"):
        cole_hopf_solution(0.0, 0.5, -0.5)
    with pytest.raises(ValueError, match="nan"):
        cole_hopf_solution(0.0, 0.5, float("nan"))
    with pytest.raises(ValueError, match="-0.25"):
        cole_hopf_solution(jnp.zeros(3), jnp.array([0.0, -0.25, 1.0]), 0.01)
    with pytest.raises(ValueError, match=r"\(2,\)"):
        cole_hopf_solution(0.0, 0.5, jnp.array([0.01, 0.02]))
    with pytest.raises(ValueError, match="broadcast"):
        cole_hopf_solution(jnp.zeros(3), jnp.zeros(4), 0.01)
    with pytest.raises(ValueError, match="num_nodes"):
        jax.jit(lambda nu: cole_hopf_solution(0.5, 0.5, nu))(0.01)
    with pytest.raises(ValueError, match="num_nodes"):
        cole_hopf_solution(0.5, 0.5, 0.01, num_nodes=2)
    with pytest.raises((ValueError, RuntimeError), match="nu must be finite and > 0"):
        jax.jit(lambda nu: cole_hopf_solution(0.5, 0.5, nu, num_nodes=31))(-1.0)


# ---------------------------------------------------------------------------------------
# Grid helpers.


def test_standard_grid_and_grid_points():
    x, t = mp.Burgers().standard_grid()
    assert x.shape == (256,) and t.shape == (101,)
    assert x.dtype == jnp.float64 and t.dtype == jnp.float64
    assert float(x[0]) == -1.0 and float(x[-1]) == 1.0
    assert float(t[0]) == 0.0 and float(t[-1]) == 1.0
    points = grid_points(x, t)
    assert points.shape == (101 * 256, 2)
    i, j = 37, 201
    np.testing.assert_array_equal(points[i * 256 + j], jnp.stack([x[j], t[i]]))
    # The flattening matches u[i, j] = u(x[j], t[i]).
    u = jnp.sin(x)[None, :] * jnp.exp(-t)[:, None]
    np.testing.assert_array_equal(u.reshape(-1), jnp.sin(points[:, 0]) * jnp.exp(-points[:, 1]))
    assert grid_points(x, t, dtype=jnp.float32).dtype == jnp.float32
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        grid_points(jnp.zeros((2, 3)), t)


def test_default_grid_size():
    for nu in [0.1, 0.05, 0.02, 0.01, 0.01 / math.pi, 0.005, 0.002, 0.001]:
        m = burgers_grid_size(nu)
        assert m % 2 == 0 and m >= max(32, 3.75 / nu)
        rest = m
        for p in (2, 3):
            while rest % p == 0:
                rest //= p
        assert rest == 1, m
    assert burgers_grid_size(0.005) == 768
    assert burgers_grid_size(10.0) == 32
    with pytest.raises(ValueError, match="-0.1"):
        burgers_grid_size(-0.1)


# ---------------------------------------------------------------------------------------
# The solver against Cole–Hopf.


@pytest.mark.parametrize(
    "nu",
    [
        0.1,
        0.02,
        0.005,
        pytest.param(0.002, marks=pytest.mark.slow),
        pytest.param(0.01 / math.pi, marks=pytest.mark.slow),
        pytest.param(0.001, marks=pytest.mark.slow),
    ],
)
def test_reference_matches_cole_hopf(nu):
    x, t = mp.Burgers().standard_grid()
    u = burgers_reference_solution(nu, x, t)
    assert u.shape == (101, 256) and u.dtype == jnp.float64
    assert _relative_l2(u, _cole_hopf_grid(nu, x, t)) <= 1e-6
    np.testing.assert_allclose(u[0], -jnp.sin(jnp.pi * x), rtol=0, atol=1e-14)
    np.testing.assert_allclose(u[:, [0, -1]], 0.0, rtol=0, atol=1e-13)


def test_reference_defaults_to_standard_grid():
    x, t = mp.Burgers().standard_grid()
    np.testing.assert_array_equal(
        burgers_reference_solution(0.1), burgers_reference_solution(0.1, x, t)
    )


@pytest.mark.slow
def test_reference_converges_under_refinement():
    """Without the oracle: doubling the grid changes the answer by far less than the
    accuracy claimed at the default size."""
    x = jnp.linspace(-1.0, 1.0, 33)
    t = jnp.linspace(0.0, 1.0, 5)
    coarse = burgers_reference_solution(0.02, x, t, grid_size=96)
    default = burgers_reference_solution(0.02, x, t)
    fine = burgers_reference_solution(0.02, x, t, grid_size=384)
    assert _relative_l2(default, fine) < 1e-6
    assert _relative_l2(coarse, fine) > 10 * _relative_l2(default, fine)


def test_reference_batch_matches_single_solves():
    x, t = mp.Burgers().standard_grid()
    nus = jnp.array([0.1, 0.08])
    assert burgers_grid_size(0.1) == burgers_grid_size(0.08)  # one vmapped group
    u = burgers_reference_solution(nus, x, t)
    assert u.shape == (2, 101, 256)
    np.testing.assert_allclose(u[0], burgers_reference_solution(0.1, x, t), rtol=0, atol=1e-12)
    assert _relative_l2(u[1], _cole_hopf_grid(0.08, x, t)) <= 1e-6


def test_reference_under_jit_and_vmap():
    x, t = mp.Burgers().standard_grid()
    eager = burgers_reference_solution(0.1, x, t, grid_size=48)
    solve = jax.jit(lambda nu: burgers_reference_solution(nu, x, t, grid_size=48))
    np.testing.assert_allclose(solve(0.1), eager, rtol=0, atol=1e-14)
    with pytest.raises((ValueError, RuntimeError), match="nu must be finite and > 0"):
        solve(-0.1)
    with pytest.raises(ValueError, match="grid_size must be given"):
        jax.jit(lambda nu: burgers_reference_solution(nu, x, t))(0.1)


@pytest.mark.slow
def test_reference_under_user_vmap():
    x, t = mp.Burgers().standard_grid()
    batched = jax.vmap(lambda nu: burgers_reference_solution(nu, x, t, grid_size=48))
    u = batched(jnp.array([0.1, 0.08]))
    np.testing.assert_allclose(u[0], burgers_reference_solution(0.1, x, t), rtol=0, atol=1e-12)
    np.testing.assert_allclose(
        u[1], burgers_reference_solution(0.08, x, t, grid_size=48), rtol=0, atol=1e-12
    )
    # A batch of traced viscosities inside jit: one vmapped solve with throw=False.
    solve = jax.jit(lambda nus: burgers_reference_solution(nus, x, t, grid_size=48))
    np.testing.assert_allclose(solve(jnp.array([0.1, 0.08])), u, rtol=0, atol=1e-12)
    with pytest.raises((ValueError, RuntimeError), match="nu must be finite and > 0"):
        solve(jnp.array([0.1, -0.08]))


def test_solver_module_reports_steps():
    x, t = mp.Burgers().standard_grid()
    # The jitted solve that burgers_reference_solution uses, so the compilation is shared.
    sol = reference._solve_one(SpectralBurgersSolver(48), jnp.asarray(0.1, dtype=jnp.float64), x, t)
    assert sol.u.shape == (101, 256)
    assert 0 < int(sol.num_accepted_steps) <= int(sol.num_steps) < 100_000
    np.testing.assert_allclose(
        sol.u, burgers_reference_solution(0.1, x, t, grid_size=48), atol=1e-14
    )


@pytest.mark.slow
def test_reference_single_solve_failure_is_an_error():
    x = jnp.linspace(-1.0, 1.0, 17)
    t = jnp.linspace(0.0, 0.5, 6)
    with pytest.raises(RuntimeError, match=r"nu=0\.1 \(grid_size=48"):
        burgers_reference_solution(0.1, x, t, max_steps=3)


def test_reference_batch_failure_names_the_viscosity():
    x = jnp.linspace(-1.0, 1.0, 17)
    t = jnp.linspace(0.0, 0.5, 6)
    with pytest.raises(RuntimeError, match=r"nu=0\.05 .*maximum number of solver steps"):
        burgers_reference_solution(jnp.array([0.05, 0.06]), x, t, grid_size=96, max_steps=3)


def test_reference_bad_input():
    x, t = mp.Burgers().standard_grid()
    for nu, text in [(0.0, "0.0"), (-0.01, "-0.01"), (float("nan"), "nan"), (math.inf, "inf")]:
        with pytest.raises(ValueError, match=f"nu must be finite and > 0, got nu = {text}"):
            burgers_reference_solution(nu, x, t)
    with pytest.raises(ValueError, match="-2.0"):
        burgers_reference_solution(jnp.array([0.1, -2.0]), x, t)
    with pytest.raises(ValueError, match=r"\(1, 2\)"):
        burgers_reference_solution(jnp.array([[0.1, 0.2]]), x, t)
    with pytest.raises(ValueError, match=r"x must be a non-empty 1-D array; got shape \(0,\)"):
        burgers_reference_solution(0.1, jnp.zeros((0,)), t)
    with pytest.raises(ValueError, match=r"shape \(2, 128\)"):
        burgers_reference_solution(0.1, x.reshape(2, 128), t)
    with pytest.raises(ValueError, match=r"x\[1\] = 1.5"):
        burgers_reference_solution(0.1, jnp.array([0.0, 1.5]), t)
    with pytest.raises(ValueError, match=r"strictly increasing; got x\[1\] = 0.5"):
        burgers_reference_solution(0.1, jnp.array([0.0, 0.5, 0.5]), t)
    with pytest.raises(ValueError, match=r"strictly increasing; got t\[0\] = 0.5"):
        burgers_reference_solution(0.1, x, jnp.array([0.5, 0.25]))
    with pytest.raises(ValueError, match=r"t\[1\] = 1.5"):
        burgers_reference_solution(0.1, x, jnp.array([0.0, 1.5]))
    with pytest.raises(ValueError, match=r"t\[0\] = -0.1"):
        burgers_reference_solution(0.1, x, jnp.array([-0.1, 0.5]))
    with pytest.raises(ValueError, match="grid_size must be even and >= 8, got 47"):
        SpectralBurgersSolver(47)
    with pytest.raises(ValueError, match="rtol"):
        SpectralBurgersSolver(48, rtol=-1.0)


# ---------------------------------------------------------------------------------------
# The cache.


def _npz_files(directory) -> list[str]:
    return sorted(name for name in os.listdir(directory) if name.endswith(".npz"))


def test_cache_hit_returns_identical_arrays(tmp_path, monkeypatch):
    x, t = mp.Burgers().standard_grid()
    first = cached_burgers_reference(0.1, x, t, cache_dir=tmp_path)
    assert isinstance(first, np.ndarray) and first.dtype == np.float64
    np.testing.assert_array_equal(first, np.asarray(burgers_reference_solution(0.1, x, t)))
    (name,) = _npz_files(tmp_path)
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")]

    def no_solving(*args, **kwargs):
        raise AssertionError("a cache hit must not solve")

    monkeypatch.setattr(cached, "burgers_reference_solution", no_solving)
    again = cached_burgers_reference(0.1, x, t, cache_dir=tmp_path)
    np.testing.assert_array_equal(again, first)
    # The default grid is the standard grid, with the same key.
    np.testing.assert_array_equal(cached_burgers_reference(0.1, cache_dir=tmp_path), first)
    # The environment variable sets the default folder.
    monkeypatch.setenv("METAPINN_CACHE", str(tmp_path))
    np.testing.assert_array_equal(cached_burgers_reference(0.1, x, t), first)
    assert _npz_files(tmp_path) == [name]


def test_cache_changed_setting_misses(tmp_path):
    x, t = mp.Burgers().standard_grid()
    cached_burgers_reference(0.1, x, t, cache_dir=tmp_path)
    # Other times (same shape, so no recompilation) are a different entry.
    later = cached_burgers_reference(0.1, x, t * 0.5, cache_dir=tmp_path)
    assert len(_npz_files(tmp_path)) == 2
    np.testing.assert_allclose(later, _cole_hopf_grid(0.1, x, t * 0.5), atol=1e-6)
    # Every setting that changes the numbers changes the key.
    xs, ts = np.asarray(x), np.asarray(t)
    settings = dict(grid_size=48, rtol=1e-8, atol=1e-10, t_final=1.0)
    base = cached._cache_key(0.1, xs, ts, **settings)
    assert cached._cache_key(0.1, xs, ts, **settings) == base
    assert cached._cache_key(0.1 + 1e-15, xs, ts, **settings) != base
    assert cached._cache_key(0.1, xs[:-1], ts, **settings) != base
    for name, value in [("grid_size", 64), ("rtol", 1e-9), ("atol", 1e-11), ("t_final", 2.0)]:
        assert cached._cache_key(0.1, xs, ts, **{**settings, name: value}) != base


def test_cache_batch_and_corrupt_file(tmp_path):
    x, t = mp.Burgers().standard_grid()
    nus = np.array([0.1, 0.08])
    u = cached_burgers_reference(nus, x, t, cache_dir=tmp_path)
    assert u.shape == (2, 101, 256)
    assert len(_npz_files(tmp_path)) == 2
    np.testing.assert_array_equal(u[0], cached_burgers_reference(0.1, x, t, cache_dir=tmp_path))
    # A torn or foreign file is recomputed, not trusted.
    for name in _npz_files(tmp_path):
        (tmp_path / name).write_bytes(b"not an npz file")
    np.testing.assert_array_equal(cached_burgers_reference(nus, x, t, cache_dir=tmp_path), u)


def test_cache_bad_input(tmp_path):
    with pytest.raises(ValueError, match="-1.0"):
        cached_burgers_reference(-1.0, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="concrete nu"):
        jax.jit(lambda nu: jnp.asarray(cached_burgers_reference(nu, cache_dir=tmp_path)))(0.1)
    assert _npz_files(tmp_path) == []
