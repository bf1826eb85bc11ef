"""The accurate-PINN networks: embeddings, dense layers with weight factorisation, and
the MLP, modified MLP and PirateNet built from them."""

from ._dense import RWF as RWF, Dense as Dense, check_rwf as check_rwf
from ._embedding import Embedding as Embedding
from ._networks import (
    AbstractEmbeddedPINN as AbstractEmbeddedPINN,
    EmbeddedMLP as EmbeddedMLP,
    ModifiedMLP as ModifiedMLP,
    PirateBlock as PirateBlock,
    PirateNet as PirateNet,
    fit_output_layer as fit_output_layer,
    network_parameter_count as network_parameter_count,
)
