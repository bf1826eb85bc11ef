"""The Burgers family (docs/design.md F1): its PDE and task (`_equation`), its spectral
reference solver (`_reference`) and its disk cache (`_reference_cache`), and its exact
Cole–Hopf solution (`_exact`)."""

from ._equation import Burgers as Burgers, BurgersTask as BurgersTask
