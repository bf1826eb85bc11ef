"""One PINN on one task: trained from scratch, or adapted from an initialisation and timed.

From scratch, with the accurate-PINN recipes' parts:
[`train_pinn`][metapinn.training.train_pinn] (points re-drawn every step, compiled
chunks), causal weighting of the residual
([`CausalWeights`][metapinn.training.CausalWeights], also a
[`metapinn.PINNLoss`][] option that every learner's loss can use), loss terms balanced
by their gradient norms ([`GradNormBalance`][metapinn.training.GradNormBalance]) or by
their neural-tangent-kernel traces ([`NTKBalance`][metapinn.training.NTKBalance]), and
Adam's warm-up with exponential decay
([`warmup_exponential_decay`][metapinn.training.warmup_exponential_decay]). A long time
interval can be marched in windows
([`train_marching`][metapinn.training.train_marching] over
[`TimeWindow`][metapinn.training.TimeWindow]s, giving a
[`MarchedPINN`][metapinn.training.MarchedPINN]), and a second-order adapter can
finish a training (`train_pinn(..., finisher=GaussNewton(), finish_steps=...)`).
What `metapinn solve` runs from scratch with each family's recipe.

From an initialisation, [`timed_adaptation`][metapinn.training.timed_adaptation] runs
any adapter on one task, timed, with the error against the reference at the steps
[`record_steps`][metapinn.training.record_steps] picks
([`TimedTrace`][metapinn.training.TimedTrace]): what the evaluation's adapter tables
and `metapinn solve --init` measure.
"""

from ._balance import (
    AbstractBalance as AbstractBalance,
    GradNormBalance as GradNormBalance,
    NTKBalance as NTKBalance,
)
from ._causal import CausalWeights as CausalWeights
from ._time_marching import (
    MarchedPINN as MarchedPINN,
    TimeWindow as TimeWindow,
    train_marching as train_marching,
    window_edges as window_edges,
)
from ._timed import (
    TimedTrace as TimedTrace,
    record_steps as record_steps,
    timed_adaptation as timed_adaptation,
)
from ._train_pinn import (
    TrainLog as TrainLog,
    train_pinn as train_pinn,
    warmup_exponential_decay as warmup_exponential_decay,
)
