"""The accurate-PINN networks, as `eqx.nn` is Equinox's layers: the parts the field uses
to make PINNs accurate, each an Equinox module, each usable as the plain PINN
(`n_conditions=0`) and as the parameter-conditioned one.

- Networks: [`EmbeddedMLP`][metapinn.nn.EmbeddedMLP] (an MLP over an embedding; the
  Fourier-feature network), [`ModifiedMLP`][metapinn.nn.ModifiedMLP] (gated by the
  input) and [`PirateNet`][metapinn.nn.PirateNet] (adaptive residual blocks), all
  [`AbstractEmbeddedPINN`][metapinn.nn.AbstractEmbeddedPINN]s.
- Their parts: [`Embedding`][metapinn.nn.Embedding] (exact periodic embedding,
  random Fourier features) and [`Dense`][metapinn.nn.Dense] (random weight
  factorisation), and PirateNet's least-squares start,
  [`fit_output_layer`][metapinn.nn.fit_output_layer].
- The generic forward-mode derivative path,
  [`forward_derivatives`][metapinn.nn.forward_derivatives], which
  [`metapinn.AbstractPINN.derivatives`][] uses by default.

```python
import jax.random as jr
import metapinn as mp

net = mp.nn.ModifiedMLP(0, 64, 4, period=2.0, fourier_features=64, rwf=(1.0, 0.1),
                        key=jr.key(0))
loss = mp.PINNLoss(mp.AllenCahn(), causal=mp.training.CausalWeights(tol=1.0))
```
"""

from ._architectures import (
    RWF as RWF,
    AbstractEmbeddedPINN as AbstractEmbeddedPINN,
    Dense as Dense,
    EmbeddedMLP as EmbeddedMLP,
    Embedding as Embedding,
    ModifiedMLP as ModifiedMLP,
    PirateBlock as PirateBlock,
    PirateNet as PirateNet,
    fit_output_layer as fit_output_layer,
)
from ._conditioned import ConditionedNetwork as ConditionedNetwork
from ._forward_jet import ForwardMode as ForwardMode, forward_derivatives as forward_derivatives
