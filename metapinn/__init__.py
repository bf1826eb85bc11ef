"""metapinn: meta-learned initialisations of physics-informed neural networks."""

import importlib.metadata

from ._exact import cole_hopf_solution as cole_hopf_solution, default_num_nodes as default_num_nodes
from ._loss import (
    LossTerms as LossTerms,
    PINNLoss as PINNLoss,
    loss_terms as loss_terms,
    pinn_loss as pinn_loss,
)
from ._meta._base import (
    AbstractMetaLearner as AbstractMetaLearner,
    MetaAux as MetaAux,
    adapt as adapt,
)
from ._meta._methods import (
    FOMAML as FOMAML,
    MAML as MAML,
    MultiTask as MultiTask,
    Reptile as Reptile,
    make_learner as make_learner,
)
from ._metrics import (
    ErrorReport as ErrorReport,
    evaluate_pinn as evaluate_pinn,
    max_abs_error as max_abs_error,
    relative_l2_error as relative_l2_error,
    rms_residual as rms_residual,
)
from ._pde._base import AbstractPDE as AbstractPDE
from ._pde._burgers import Burgers as Burgers, BurgersTask as BurgersTask
from ._pinn import MLPPINN as MLPPINN, AbstractPINN as AbstractPINN, Derivatives as Derivatives
from ._reference import (
    ReferenceSolution as ReferenceSolution,
    SpectralBurgersSolver as SpectralBurgersSolver,
    cached_reference_solution as cached_reference_solution,
    default_grid_size as default_grid_size,
    grid_points as grid_points,
    reference_solution as reference_solution,
    standard_grid as standard_grid,
)
from ._sampling import (
    CollocationBatch as CollocationBatch,
    sample_collocation as sample_collocation,
)
from ._train import (
    MetaStepInfo as MetaStepInfo,
    meta_objective as meta_objective,
    meta_step as meta_step,
)


__version__ = importlib.metadata.version("metapinn")
