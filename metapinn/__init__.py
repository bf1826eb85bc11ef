"""metapinn: meta-learned initialisations of physics-informed neural networks."""

import importlib.metadata as _metadata

from . import experiment as experiment, nn as nn, training as training
from ._checkpoint import (
    CheckpointMismatchError as CheckpointMismatchError,
    CorruptCheckpointError as CorruptCheckpointError,
    RunFolderError as RunFolderError,
    load_checkpoint as load_checkpoint,
    previous_checkpoint_path as previous_checkpoint_path,
    save_checkpoint as save_checkpoint,
)
from ._conditioned import (
    ConditionedLoss as ConditionedLoss,
    ConditionedPINN as ConditionedPINN,
    LogScaledFeature as LogScaledFeature,
    ScaledFeature as ScaledFeature,
)
from ._few_shot import (
    FewShotTrace as FewShotTrace,
    FieldMetrics as FieldMetrics,
    adapt_recording as adapt_recording,
    few_shot as few_shot,
    field_metrics as field_metrics,
)
from ._grid import grid_points as grid_points
from ._lock import RunFolderBusy as RunFolderBusy
from ._loss import (
    AbstractLoss as AbstractLoss,
    LossTerms as LossTerms,
    LossWeights as LossWeights,
    PINNLoss as PINNLoss,
    loss_terms as loss_terms,
    pinn_loss as pinn_loss,
    pinn_loss_and_grad as pinn_loss_and_grad,
    pinn_residuals as pinn_residuals,
)
from ._meta._adapters import (
    LBFGS as LBFGS,
    AbstractAdapter as AbstractAdapter,
    Optax as Optax,
)
from ._meta._base import (
    AbstractMetaLearner as AbstractMetaLearner,
    MetaAux as MetaAux,
    adapt as adapt,
    remat_scan as remat_scan,
)
from ._meta._gauss_newton import (
    GaussNewton as GaussNewton,
    GaussNewtonState as GaussNewtonState,
    conjugate_gradient as conjugate_gradient,
)
from ._meta._imaml import IMAML as IMAML, ProximalLoss as ProximalLoss
from ._meta._learned_rates import (
    MAMLPlusPlus as MAMLPlusPlus,
    MetaParams as MetaParams,
    MetaSGD as MetaSGD,
)
from ._meta._methods import (
    FOMAML as FOMAML,
    MAML as MAML,
    MultiTask as MultiTask,
    Reptile as Reptile,
    make_learner as make_learner,
)
from ._meta_step import (
    MetaStepInfo as MetaStepInfo,
    meta_objective as meta_objective,
    meta_step as meta_step,
    task_mesh as task_mesh,
)
from ._meta_train import (
    MetaTrainResult as MetaTrainResult,
    NonFiniteLossError as NonFiniteLossError,
    ResumeMismatchError as ResumeMismatchError,
    RunInterrupted as RunInterrupted,
    meta_train as meta_train,
)
from ._metrics import (
    ErrorReport as ErrorReport,
    evaluate_pinn as evaluate_pinn,
    max_abs_error as max_abs_error,
    relative_l2_error as relative_l2_error,
    rms_residual as rms_residual,
)
from ._metrics_file import (
    DamagedMetricsError as DamagedMetricsError,
    read_metrics as read_metrics,
)
from ._mlp import MLPPINN as MLPPINN
from ._pde._allen_cahn import AllenCahn as AllenCahn, AllenCahnTask as AllenCahnTask
from ._pde._base import AbstractPDE as AbstractPDE
from ._pde._burgers import Burgers as Burgers, BurgersTask as BurgersTask
from ._pde._burgers._exact import (
    cole_hopf_num_nodes as cole_hopf_num_nodes,
    cole_hopf_solution as cole_hopf_solution,
)
from ._pde._burgers._reference import (
    BurgersReferenceSolution as BurgersReferenceSolution,
    SpectralBurgersSolver as SpectralBurgersSolver,
    burgers_grid_size as burgers_grid_size,
    burgers_reference_solution as burgers_reference_solution,
)
from ._pde._burgers._reference_cache import cached_burgers_reference as cached_burgers_reference
from ._pde._burgers_random_ic import (
    BurgersRandomIC as BurgersRandomIC,
    RandomICTask as RandomICTask,
    random_initial_conditions as random_initial_conditions,
)
from ._pde._convection import Convection as Convection, ConvectionTask as ConvectionTask
from ._pde._heat import Heat as Heat, HeatTask as HeatTask
from ._pde._reference_cache import cached_family_reference as cached_family_reference
from ._pde._registry import FAMILIES as FAMILIES, Family as Family, family as family
from ._pde._wave import Wave as Wave, WaveTask as WaveTask
from ._pinn import (
    BURGERS_NEEDS as BURGERS_NEEDS,
    STREAMS as STREAMS,
    AbstractPINN as AbstractPINN,
    Derivatives as Derivatives,
    Needs as Needs,
    check_needs as check_needs,
)
from ._sampling import (
    CollocationBatch as CollocationBatch,
    sample_collocation as sample_collocation,
)


__version__ = _metadata.version("metapinn")
