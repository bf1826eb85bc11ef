"""A training recipe per family: the accurate-PINN toolkit's network, loss and schedule
with which `metapinn solve` solves one family member from scratch.

A recipe is chosen on the family's *training* tasks only (never its held-out ones); its
numbers are CPU-sized (a task within 30 minutes on 2 cores), far below the GPU budgets
of the papers the parts come from. `metapinn families --recipes` prints them.
"""

import dataclasses
from typing import Any

import optax

from .._balance import AbstractBalance, GradNormBalance, NTKBalance
from .._causal import CausalWeights
from .._meta._gauss_newton import GaussNewton
from .._train_pinn import warmup_exponential_decay
from ._config import ExperimentConfig
from ._workloads import workload


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How to train one PINN on one member of a family from scratch.

    **Fields:**

    - the network, as the config keys of the same names: `network`, `width`,
      `depth`, `fourier_features`, `fourier_scale`, `periodic_embedding`, `rwf`;
    - the points, drawn afresh every step: `n_interior`, `n_initial`, `n_boundary`;
    - the loss: `weights` (the initial term weights; the boundary's 0 for a network
      whose periodic embedding makes it zero by construction), `causal_chunks` and
      `causal_tol` (0 chunks: no causal weighting), `balance_every` (steps between
      balancing updates; 0: fixed weights) and `balance_by` (`"grad-norm"`,
      [`metapinn.training.GradNormBalance`][], or `"ntk"`,
      [`metapinn.training.NTKBalance`][]);
    - the optimiser: Adam at `learning_rate` after `warmup` steps of linear warm-up,
      decaying by `decay_rate` every `decay_steps`, for `steps` steps; then
      `finish_steps` Levenberg–Marquardt steps ([`metapinn.GaussNewton`][], at most
      `finish_cg_steps` CG iterations a step) on one fixed draw of the points;
    - `windows`: the number of time windows marched through
      ([`metapinn.training.train_marching`][]), each trained as above (so `steps`
      and `finish_steps` are per window; 1: no marching);
    - `chosen`: how the recipe was chosen (on which training tasks, measured how).
    """

    network: str = "embedded-mlp"
    width: int = 64
    depth: int = 4
    fourier_features: int = 64
    fourier_scale: float = 1.0
    periodic_embedding: bool = False
    rwf: tuple[float, ...] = (1.0, 0.1)
    n_interior: int = 2000
    n_initial: int = 250
    n_boundary: int = 125
    weights: tuple[float, float, float] = (1.0, 1.0, 1.0)
    causal_chunks: int = 16
    causal_tol: float = 1.0
    balance_every: int = 1000
    balance_by: str = "grad-norm"
    learning_rate: float = 1e-3
    warmup: int = 500
    decay_rate: float = 0.9
    decay_steps: int = 250
    steps: int = 10000
    finish_steps: int = 0
    finish_cg_steps: int = 50
    windows: int = 1
    chosen: str = ""

    def config(self, family: str) -> ExperimentConfig:
        """The experiment config of this recipe's network and points on `family` (W3's
        other settings): what builds the network and draws the points."""
        return workload("W3", family).replace(
            **self.network_settings(),
            n_interior=self.n_interior,
            n_initial=self.n_initial,
            n_boundary=self.n_boundary,
        )

    def network_settings(self) -> dict[str, Any]:
        """The recipe's network, loss weights and causal weighting as the experiment
        config's settings (what workload A takes from each family's recipe)."""
        return {
            "network": self.network, "width": self.width, "depth": self.depth,
            "fourier_features": self.fourier_features, "fourier_scale": self.fourier_scale,
            "periodic_embedding": self.periodic_embedding, "rwf": self.rwf,
            "causal_chunks": self.causal_chunks, "causal_tol": self.causal_tol,
            "loss_weights": self.weights,
        }  # fmt: skip

    def optimizer(self, steps: int | None = None) -> optax.GradientTransformation:
        """Adam with the recipe's warm-up and decay (the warm-up shortened to a tenth of
        `steps` when that is fewer)."""
        steps = self.steps if steps is None else steps
        warmup = min(self.warmup, steps // 10)
        schedule = warmup_exponential_decay(
            self.learning_rate, warmup, self.decay_rate, self.decay_steps
        )
        return optax.adam(schedule)

    @property
    def finisher(self) -> GaussNewton | None:
        return GaussNewton(cg_steps=self.finish_cg_steps) if self.finish_steps else None

    @property
    def total_steps(self) -> int:
        """Every step of every window: `windows × (steps + finish_steps)`."""
        return self.windows * (self.steps + self.finish_steps)

    @property
    def causal(self) -> CausalWeights | None:
        return CausalWeights(self.causal_tol, self.causal_chunks) if self.causal_chunks else None

    @property
    def balance(self) -> AbstractBalance | None:
        """The balancing rule, or `None` for fixed weights.

        **Raises:** `ValueError` for a `balance_by` other than `"grad-norm"` or `"ntk"`."""
        if self.balance_by not in ("grad-norm", "ntk"):
            raise ValueError(f"balance_by must be 'grad-norm' or 'ntk', got {self.balance_by!r}")
        if not self.balance_every:
            return None
        kind = GradNormBalance if self.balance_by == "grad-norm" else NTKBalance
        return kind(self.balance_every)

    def row(self) -> dict[str, Any]:
        """The recipe as one row of `metapinn families --recipes`."""
        embedding = []
        if self.periodic_embedding:
            embedding.append("periodic x")
        if self.fourier_features:
            embedding.append(f"{self.fourier_features} Fourier (σ = {self.fourier_scale:g})")
        return {
            "network": f"{self.network} {self.width} × {self.depth}",
            "embedding": ", ".join(embedding) or "none",
            "RWF": "(μ, σ) = ({:g}, {:g})".format(*self.rwf) if self.rwf else "none",
            "loss": ", ".join(
                [f"weights {tuple(self.weights)}"]
                + (
                    [f"causal {self.causal_chunks} chunks, ε = {self.causal_tol:g}"]
                    if self.causal_chunks
                    else []
                )
                + (
                    [f"{self.balance_by} balance every {self.balance_every}"]
                    if self.balance_every
                    else []
                )
            ),  # fmt: skip
            "optimiser": (
                f"Adam {self.learning_rate:g}, warm-up {self.warmup}, × {self.decay_rate:g} "
                f"every {self.decay_steps}, {self.steps} steps"
                + (
                    f"; then {self.finish_steps} Levenberg–Marquardt steps"
                    if self.finish_steps
                    else ""
                )
                + (f"; in each of {self.windows} time windows" if self.windows > 1 else "")
            ),
            "points per step": f"{self.n_interior} / {self.n_initial} / {self.n_boundary}",
        }


_PERIODIC = {"periodic_embedding": True, "weights": (1.0, 1.0, 0.0)}
"""A periodic family's network embeds x exactly periodically, so its boundary term is
zero by construction and off."""

RECIPES: dict[str, Recipe] = {
    "burgers": Recipe(
        steps=8000,
        chosen="training task nu = 0.005 (the range's hardest): rel-L2 9.1e-4 after 8000 "
        "steps (decay every 1000 steps: 3.9e-3 after 4000, the error then jumping by up to "
        "10x between records as the rate stays high); the modified MLP is 3x slower a step",
    ),
    "heat": Recipe(
        causal_chunks=0,
        decay_steps=400,
        steps=12000,
        chosen="training tasks kappa = 0.5 and 0.2287 (the largest): rel-L2 2.1e-3 and "
        "1.6e-3 after 12000 steps decaying every 400; 6000 steps decaying every 200: "
        "7.6e-3 and 8.2e-3, and with 20 Levenberg-Marquardt steps after them 1.1e-2 and "
        "2.3e-3 (at 6000 steps, decay every 400: 3.0e-2 at kappa = 0.5)",
    ),
    "wave": Recipe(
        fourier_scale=2.0,
        windows=4,
        steps=2000,
        finish_steps=20,
        chosen="training task c = 2 (the range's fastest): rel-L2 1.9e-3 in 4 windows of "
        "2000 Adam + 20 Levenberg-Marquardt steps (per window 1.5e-3 to 2.1e-3); at c = 0.5 "
        "in one window, Fourier scale 2 reads 1.5e-3 where scale 1 reads 5.8e-3, without "
        "causal weighting 3.2e-3, without balancing 5.7e-3; one window of 8000 Adam steps "
        "at c = 2 read 0.36 after 4000",
    ),
    "convection": dataclasses.replace(
        Recipe(
            causal_chunks=32,
            windows=8,
            steps=2000,
            finish_steps=20,
            chosen="training task beta = 40 (the range's fastest): rel-L2 2.7e-3 in 8 windows "
            "of 2000 Adam + 20 Levenberg-Marquardt steps (per window 8.2e-4 growing to "
            "4.3e-3); 4 windows of 3000 + 30: 6.6e-3; each window from the random "
            "initialisation (warm-started from the previous window: 2.9e-2); one window of "
            "10000 Adam steps read 1.1 after 4000",
        ),
        **_PERIODIC,
    ),
    "allen-cahn": dataclasses.replace(
        Recipe(
            causal_chunks=32,
            windows=8,
            steps=2000,
            finish_steps=20,
            chosen="training task epsilon = 1e-4 (the range's sharpest): rel-L2 6.3e-3 in 8 "
            "windows of 2000 Adam + 20 Levenberg-Marquardt steps (per window 2.3e-3 growing "
            "to 9.8e-3 as the interfaces sharpen); 4 windows: 1.5e-2; one window of 10000 "
            "Adam steps read 0.54 after 6000",
        ),
        **{**_PERIODIC, "weights": (1.0, 100.0, 0.0)},
    ),
    "burgers-random-ic": Recipe(
        steps=8000,
        chosen="Burgers' schedule; training initial condition #0 with decay every 1000 steps: "
        "rel-L2 2.2e-2 after 4000 steps",
    ),
}
"""Each built-in family's recipe (a family of your own gets `Recipe()`, the defaults)."""


def recipe(family: str) -> Recipe:
    """The recipe of `family` (the default `Recipe()` for one without its own)."""
    return RECIPES.get(family, Recipe())


def recipe_table(families: list[str]) -> str:
    """The recipes of `families` as a Markdown table (`metapinn families --recipes`)."""
    rows = [{"family": name, **recipe(name).row()} for name in families]
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(r[k]) for k in head) + " |" for r in rows]
    return "\n".join(lines)
