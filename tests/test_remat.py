"""Checkpointed inner loops (`inner_remat`): the same meta-gradients as the plain
scan, for every learner and for SGD and Adam inner loops, in float64; and memory that
grows sub-linearly in the inner length (XLA's deterministic `memory_analysis`)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
import pytest

import metapinn as mp

from .helpers import small_problem, tree_allclose


K = 7  # not a square, and not a multiple of the segment length 3: every path has a tail
REMATS = ("sqrt", 3, "binomial")


def _optimizer(inner):
    return 0.02 if inner == "sgd" else optax.adam(1e-2, eps_root=1e-12)


LEARNERS = {
    "maml": lambda inner, remat: mp.MAML(K, _optimizer(inner), inner_remat=remat),
    "fomaml": lambda inner, remat: mp.FOMAML(K, _optimizer(inner), inner_remat=remat),
    "reptile": lambda inner, remat: mp.Reptile(K, _optimizer(inner), inner_remat=remat),
    "imaml": lambda inner, remat: mp.IMAML(K, _optimizer(inner), inner_remat=remat),
    "metasgd": lambda inner, remat: mp.MetaSGD(K, 0.02, inner_remat=remat),
    "mamlpp": lambda inner, remat: mp.MAMLPlusPlus(K, 0.02, inner_remat=remat),
}
"""Each learner with a K-step inner loop (Meta-SGD and MAML++ learn their own SGD)."""


def _problem(getkey):
    params, static, loss_fn, support = small_problem(getkey(), width=6, depth=1)
    query = mp.sample_collocation(getkey(), mp.Burgers(), 20, 6, 3)
    return params, static, loss_fn, mp.BurgersTask(0.02), support, query


@eqx.filter_jit
def _gradient(learner, meta, *rest):
    return learner.meta_gradient(meta, *rest)


def _meta_gradient(learner, problem):
    params, *rest = problem
    return _gradient(learner, learner.init_meta_params(params), *rest)


def _compare(name, inner, remat, getkey):
    problem = _problem(getkey)
    plain, plain_aux = _meta_gradient(LEARNERS[name](inner, None), problem)
    checked, aux = _meta_gradient(LEARNERS[name](inner, remat), problem)
    assert tree_allclose(checked, plain, rtol=1e-10, atol=1e-13), (name, inner, remat)
    assert tree_allclose(aux, plain_aux, rtol=1e-10, atol=1e-13)


def test_remat_maml_meta_gradient_is_the_plain_one(getkey):
    """Second-order MAML through an Adam inner loop with a tail segment; every other
    learner, optimiser and schedule is the slow test below."""
    _compare("maml", "adam", "sqrt", getkey)


@pytest.mark.slow
@pytest.mark.parametrize("remat", REMATS)
@pytest.mark.parametrize("inner", ["sgd", "adam"])
@pytest.mark.parametrize("name", list(LEARNERS))
def test_remat_meta_gradient_every_combination(getkey, name, inner, remat):
    if name in ("metasgd", "mamlpp") and inner == "adam":
        pytest.skip("Meta-SGD and MAML++ learn their own SGD rule")
    _compare(name, inner, remat, getkey)


def test_remat_scan_values_and_tail():
    """Losses and the final carry of every schedule equal the plain scan's, for
    lengths below, at and beyond a segment, and for zero steps."""

    def body(c, _):
        return c * 0.9 + jnp.sin(c), c**2

    for steps in (0, 1, 3, 10):
        plain = mp.remat_scan(body, jnp.asarray(0.3), steps)
        for remat in REMATS:
            out = mp.remat_scan(body, jnp.asarray(0.3), steps, remat=remat)
            assert tree_allclose(out, plain, rtol=1e-15, atol=0), (steps, remat)


def test_bad_remat_is_named():
    body = lambda c, _: (c * 0.5, c)
    for bad in (0, -2):
        with pytest.raises(ValueError, match=f"got {bad}"):
            mp.remat_scan(body, jnp.asarray(1.0), 4, remat=bad)
    # (Under the tests' jaxtyping hook, a string outside the Literal is refused first.)
    with pytest.raises((ValueError, TypeError), match="log"):
        mp.MAML(3, 0.01, inner_remat="log")
    with pytest.raises(ValueError, match="got 0"):
        mp.MAML(3, 0.01, inner_remat=0)
    params, static, loss_fn, batch = small_problem(jax.random.key(0))
    with pytest.raises(ValueError, match="got -2"):
        mp.adapt(params, static, loss_fn, mp.BurgersTask(0.02), batch, steps=2, optimizer=0.01,
                 remat=-2)  # fmt: skip


def _temp_bytes(steps, remat, problem):
    params, static, loss_fn, support = problem
    learner = mp.MAML(steps, optax.adam(1e-3, eps_root=1e-16), inner_remat=remat)
    grad = jax.jit(learner.meta_gradient, static_argnums=(1, 2))
    lowered = grad.lower(params, static, loss_fn, mp.BurgersTask(0.02), support, support)
    return lowered.compile().memory_analysis().temp_size_in_bytes


def test_remat_memory_grows_sublinearly_in_the_inner_length(getkey):
    """Second-order MAML with an Adam inner loop: at K = 256 the plain scan's temporary
    memory is several times that at K = 16 (5.4x measured); the checkpointed loop's
    stays within 1.5x of the plain K = 16 (1.15x measured: about 2 sqrt(K) = 32 steps'
    worth of carries beside one gradient's intermediates)."""
    problem = small_problem(getkey(), width=8, depth=2, n_interior=64)
    short = _temp_bytes(16, None, problem)
    assert _temp_bytes(256, None, problem) > 4 * short
    assert _temp_bytes(256, "sqrt", problem) < 1.5 * short
