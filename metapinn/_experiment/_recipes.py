"""A training recipe per family: the accurate-PINN toolkit's network, loss and schedule
with which `metapinn solve` solves one family member from scratch.

A recipe is chosen on the family's *training* tasks only (never its held-out ones); its
numbers are CPU-sized (a task within 30 minutes on 2 cores), far below the GPU budgets
of the papers the parts come from. `metapinn families --recipes` prints them.
"""

import dataclasses
from typing import Any

import optax

from .._causal import CausalWeights
from .._train_pinn import GradNormBalance, warmup_exponential_decay
from ._config import ExperimentConfig
from ._workloads import workload


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How to train one PINN on one member of a family from scratch.

    **Fields:**

    - the network, as the config keys of the same names: `network`, `width`,
      `depth`, `fourier_features`, `fourier_scale`, `periodic_embedding`, `rwf`;
    - the points, drawn afresh every step: `n_interior`, `n_initial`, `n_boundary`;
    - the loss: `weights` (the initial term weights), `causal_chunks` and
      `causal_tol` (0 chunks: no causal weighting), `balance_every` (steps between
      gradient-norm balancing updates; 0: fixed weights);
    - the optimiser: Adam at `learning_rate` after `warmup` steps of linear warm-up,
      decaying by `decay_rate` every `decay_steps`, for `steps` steps;
    - `chosen`: how the recipe was chosen (on which training tasks, measured how).
    """

    network: str = "modified-mlp"
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
    balance_every: int = 500
    learning_rate: float = 1e-3
    warmup: int = 500
    decay_rate: float = 0.9
    decay_steps: int = 1000
    steps: int = 10000
    chosen: str = ""

    def config(self, family: str) -> ExperimentConfig:
        """The experiment config of this recipe's network and points on `family` (W3's
        other settings): what builds the network and draws the points."""
        return workload("W3", family).replace(
            width=self.width,
            depth=self.depth,
            network=self.network,
            fourier_features=self.fourier_features,
            fourier_scale=self.fourier_scale,
            periodic_embedding=self.periodic_embedding,
            rwf=self.rwf,
            n_interior=self.n_interior,
            n_initial=self.n_initial,
            n_boundary=self.n_boundary,
            causal_chunks=self.causal_chunks,
            causal_tol=self.causal_tol,
            loss_weights=self.weights,
        )

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
    def causal(self) -> CausalWeights | None:
        return CausalWeights(self.causal_tol, self.causal_chunks) if self.causal_chunks else None

    @property
    def balance(self) -> GradNormBalance | None:
        return GradNormBalance(self.balance_every) if self.balance_every else None

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
                + ([f"grad-norm balance every {self.balance_every}"] if self.balance_every else [])
            ),  # fmt: skip
            "optimiser": (
                f"Adam {self.learning_rate:g}, warm-up {self.warmup}, × {self.decay_rate:g} "
                f"every {self.decay_steps}, {self.steps} steps"
            ),
            "points per step": f"{self.n_interior} / {self.n_initial} / {self.n_boundary}",
        }


RECIPES: dict[str, Recipe] = {
    "burgers": Recipe(
        network="modified-mlp",
        fourier_features=64,
        fourier_scale=1.0,
        rwf=(1.0, 0.1),
        causal_chunks=16,
        steps=10000,
    ),  # fmt: skip
    "heat": Recipe(
        network="modified-mlp",
        fourier_features=64,
        fourier_scale=1.0,
        rwf=(1.0, 0.1),
        causal_chunks=0,
        steps=5000,
    ),  # fmt: skip
    "wave": Recipe(
        network="modified-mlp",
        fourier_features=64,
        fourier_scale=1.0,
        rwf=(1.0, 0.1),
        causal_chunks=16,
        steps=10000,
    ),  # fmt: skip
    "convection": Recipe(
        network="modified-mlp",
        fourier_features=64,
        fourier_scale=1.0,
        rwf=(1.0, 0.1),
        periodic_embedding=True,
        causal_chunks=32,
        steps=10000,
    ),  # fmt: skip
    "allen-cahn": Recipe(
        network="modified-mlp",
        fourier_features=64,
        fourier_scale=1.0,
        rwf=(1.0, 0.1),
        periodic_embedding=True,
        causal_chunks=32,
        weights=(1.0, 100.0, 1.0),
        steps=10000,
    ),  # fmt: skip
    "burgers-random-ic": Recipe(
        network="modified-mlp",
        fourier_features=64,
        fourier_scale=1.0,
        rwf=(1.0, 0.1),
        causal_chunks=16,
        steps=10000,
    ),  # fmt: skip
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
