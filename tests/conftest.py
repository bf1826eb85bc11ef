"""Test configuration: float64, strict dtype promotion, rank promotion errors.

Set once at import, before any array exists; never toggled inside a test.
"""

import os

from metapinn._xla import cpu_xla_flags  # noqa: E402  (imports JAX, starts no backend)


# Two host devices for the sharding tests, and the fast-compile XLA:CPU flags the
# command line uses; flags already in XLA_FLAGS win.
os.environ["XLA_FLAGS"] = cpu_xla_flags(os.environ.get("XLA_FLAGS", ""), host_devices=2)

import jax  # noqa: E402
import jax.random as jr  # noqa: E402
import pytest  # noqa: E402


jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def getkey():
    """`getkey()` returns a fresh PRNG key each call, deterministic per test."""
    keys = iter(jr.split(jr.key(5678), 10_000))
    return lambda: next(keys)


@pytest.fixture(scope="module")
def reference_cache(tmp_path_factory):
    """Reference solutions cached in a folder of this test module only (a module opts in
    with `pytestmark = pytest.mark.usefixtures("reference_cache")`)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("METAPINN_CACHE", str(tmp_path_factory.mktemp("reference-cache")))
        yield
