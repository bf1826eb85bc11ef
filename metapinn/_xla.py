"""XLA:CPU settings for meta-steps: faster compiles, one host device per core.

A second-order MAML step is a few hundred small XLA kernels. On CPU, most of its
compile time is LLVM code generation for them, while most of its run time is spent in
matrix products that XLA hands to its own library kernels (YNNPACK), not in generated
code. Two XLA:CPU debug options therefore cut the compile time by about 40 % without
slowing the step (measured on W1, `benchmarks/meta_step.py`):

- `--xla_cpu_use_fusion_emitters=false`: the older LLVM-IR emitters for elementwise
  fusions, which compile faster;
- `--xla_backend_optimization_level=1`: lighter LLVM optimisation of that code.

Neither changes floating-point semantics. XLA:CPU runs a single device's program
essentially on one core at this problem size, so on a multi-core machine the task axis
of a meta-step is best sharded over host devices
(`--xla_force_host_platform_device_count`, docs/design.md §7).

XLA reads `XLA_FLAGS` once, when JAX first initialises its backend, so
[`metapinn.experiment.configure_cpu`][] must run before any computation.
"""

import os


FAST_COMPILE_FLAGS = (
    "--xla_cpu_use_fusion_emitters=false",
    "--xla_backend_optimization_level=1",
)
_DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"


def _flag_name(flag: str) -> str:
    return flag.split("=", 1)[0]


def cpu_xla_flags(existing: str = "", host_devices: int | None = None) -> str:
    """`existing` XLA flags plus the fast-compile flags and, if given, the host device
    count. A flag already present in `existing` is kept as it is.

    **Arguments:**

    - `existing`: XLA flags separated by whitespace, e.g. the current `XLA_FLAGS`
      (default `""`).
    - `host_devices`: the number of host CPU devices to ask for
      (`--xla_force_host_platform_device_count`); default `None`, no count.

    **Returns:** the flags as one string separated by spaces: `existing`'s, then the
    wanted flags whose names it does not already set.

    **Raises:** `ValueError` if `host_devices` is given and is not an integer >= 1.
    """
    if host_devices is not None and (
        isinstance(host_devices, bool) or not isinstance(host_devices, int) or host_devices < 1
    ):
        raise ValueError(f"host_devices must be a positive integer, got {host_devices!r}")
    flags = existing.split()
    present = {_flag_name(f) for f in flags}
    wanted: list[str] = list(FAST_COMPILE_FLAGS)
    if host_devices is not None:
        wanted.append(f"{_DEVICE_COUNT_FLAG}={host_devices}")
    flags += [f for f in wanted if _flag_name(f) not in present]
    return " ".join(flags)


def configure_cpu(host_devices: int | None = None) -> None:
    """Set `XLA_FLAGS` for fast-compiling meta-steps on CPU (see the module notes):
    the fast-compile flags, and `host_devices` CPU devices if given (e.g.
    `os.cpu_count()`, to shard the task axis one device per core). Flags the user
    already set in `XLA_FLAGS` win.

    **Arguments:**

    - `host_devices`: the number of host CPU devices; default `None`, which leaves the
      device count as it is.

    **Returns:** `None`; it sets `os.environ["XLA_FLAGS"]` to
    [`metapinn.experiment.cpu_xla_flags`][]`(XLA_FLAGS, host_devices)`.

    **Raises:** `RuntimeError` if JAX has already initialised its backend (the flags
    would be ignored); `ValueError` if `host_devices` is given and is not a positive
    integer.
    """
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        raise RuntimeError(
            "configure_cpu must run before JAX initialises its backend (before the first "
            "computation or jax.devices() call); XLA reads XLA_FLAGS only once"
        )
    os.environ["XLA_FLAGS"] = cpu_xla_flags(os.environ.get("XLA_FLAGS", ""), host_devices)


def pin_matmul_precision() -> str:
    """Full float32 matrix products on every backend: set `jax_default_matmul_precision`
    to `"highest"` where JAX's default is a reduced-precision pass (GPU: TF32; TPU:
    bfloat16), and leave it on CPU, whose float32 products are always full precision.

    A PINN's loss holds second derivatives of the network, which TF32's 10-bit mantissa
    would round at the 1e-3 level, above the accuracy the few-shot tables resolve. The
    `metapinn` command calls this at start-up; a script on a GPU calls it once, before
    its first computation, to get the same numbers.

    It initialises JAX's backend, so [`metapinn.experiment.configure_cpu`][] must come first.

    **Returns:** the backend (`jax.default_backend()`), e.g. `"cpu"` or `"gpu"`.
    """
    import jax

    backend = jax.default_backend()
    if backend != "cpu":
        jax.config.update("jax_default_matmul_precision", "highest")
    return backend
