"""The PDE families by name: what `metapinn families` lists."""

import dataclasses
from collections.abc import Callable
from typing import Any

from ._base import AbstractPDE
from ._burgers import Burgers, BurgersTask
from ._burgers_random_ic import BurgersRandomIC, RandomICTask
from ._convection import Convection, ConvectionTask
from ._heat import Heat, HeatTask
from ._wave import Wave, WaveTask


@dataclasses.dataclass(frozen=True)
class Family:
    """A PDE family of DESIGN.md §2 as the library knows it."""

    name: str
    """Its name on the command line."""
    design: str
    """Its label in DESIGN.md §2 (F1–F6)."""
    pde: Callable[[], AbstractPDE]
    task: Callable[..., Any]
    """The task type, e.g. `BurgersTask`."""
    parameter: str
    """What a task varies: a field of the task, or a description for a function."""
    train_range: tuple[float, float] | None
    """The training range of a scalar parameter (DESIGN.md §2); `None` for a function."""
    truth: str
    """What results are judged against."""


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "burgers", "F1", Burgers, BurgersTask, "nu", (0.005, 0.05),
            "spectral reference (diffrax), verified against Cole-Hopf",
        ),
        Family(
            "heat", "F2", Heat, HeatTask, "kappa", (0.01, 0.5),
            "exact sine series; spectral reference (diffrax)",
        ),
        Family(
            "wave", "F3", Wave, WaveTask, "c", (0.5, 2.0),
            "exact modal solution; spectral reference (diffrax)",
        ),
        Family(
            "convection", "F4", Convection, ConvectionTask, "beta", (1.0, 40.0),
            "exact u0(x - beta t); spectral reference (diffrax)",
        ),
        Family(
            "burgers-random-ic", "F6", BurgersRandomIC, RandomICTask,
            "coefficients (u0 = sum of 8 sine modes, a_k ~ N(0, 1/k^2), max|u0| <= 1), nu",
            None, "Cole-Hopf by quadrature; spectral reference (diffrax)",
        ),
    )
}  # fmt: skip
"""Every family with verified truth, by name. (F5, Allen-Cahn, is not here yet.) Only
`burgers` runs in the main job so far; the others are library-level."""


def family_table() -> str:
    """`FAMILIES` as a Markdown table."""
    rows = ["| family | DESIGN | PDE | task parameter | training range | truth |"]
    rows.append("|---|---|---|---|---|---|")
    for f in FAMILIES.values():
        span = "—" if f.train_range is None else f"[{f.train_range[0]:g}, {f.train_range[1]:g}]"
        rows.append(
            f"| {f.name} | {f.design} | {f.pde.__name__} | {f.parameter} | {span} | {f.truth} |"
        )
    return "\n".join(rows)
