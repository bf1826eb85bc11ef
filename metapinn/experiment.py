"""The experiment layer, as `eqx.nn` is Equinox's layers: what `metapinn reproduce`,
`train`, `evaluate`, `ablate` and `solve` are made of, for scripts that run them.

- Settings: [`ExperimentConfig`][metapinn.experiment.ExperimentConfig] (each field
  carries its roles, [`fields_with_role`][metapinn.experiment.fields_with_role]), the
  named workloads ([`workload`][metapinn.experiment.workload]), and the methods as
  objects ([`Method`][metapinn.experiment.Method], from
  [`ExperimentConfig.method`][metapinn.experiment.ExperimentConfig.method]).
- The run folder: [`RunFolder`][metapinn.experiment.RunFolder], its layout, stored
  settings, markers, metrics and lock.
- The pipeline: [`train_runs`][metapinn.experiment.train_runs],
  [`evaluate`][metapinn.experiment.evaluate] (arrays, nothing written),
  [`evaluate_runs`][metapinn.experiment.evaluate_runs] (and written),
  [`reproduce`][metapinn.experiment.reproduce] (both), the ablation grid and
  [`solve`][metapinn.experiment.solve], with each family's
  [`Recipe`][metapinn.experiment.Recipe] for solving from scratch.
- The report's plots, and the XLA settings the command line starts with.

```python
import metapinn as mp

config = mp.experiment.workload("W1", seeds=(0,), methods=("reptile",))
mp.experiment.train_runs(config, "runs/mine")
evaluation = mp.experiment.evaluate(config, "runs/mine")
print(evaluation.measures["rel_l2"].shape)  # (row, seed, held-out task, k)
```
"""

from ._experiment import (
    DEFAULT_WORKLOAD as DEFAULT_WORKLOAD,
    LEARNERS as LEARNERS,
    METHOD_NAMES as METHOD_NAMES,
    QUICK as QUICK,
    ROLES as ROLES,
    WORKLOADS as WORKLOADS,
    AblationGrid as AblationGrid,
    ConfigError as ConfigError,
    Evaluation as Evaluation,
    ExperimentConfig as ExperimentConfig,
    GridError as GridError,
    LearnerKind as LearnerKind,
    Method as Method,
    RunFolder as RunFolder,
    evaluate as evaluate,
    evaluate_runs as evaluate_runs,
    fields_with_role as fields_with_role,
    format_summary as format_summary,
    load_config as load_config,
    make_grid as make_grid,
    quick as quick,
    read_grid_file as read_grid_file,
    reference_fields as reference_fields,
    reproduce as reproduce,
    rewrite_report as rewrite_report,
    run_ablation as run_ablation,
    to_markdown as to_markdown,
    train_runs as train_runs,
    wall_clock_figure as wall_clock_figure,
    workload as workload,
)
from ._experiment._recipes import RECIPES as RECIPES, Recipe as Recipe, recipe as recipe
from ._experiment._solve import solve as solve
from ._plots import (
    plot_ablation as plot_ablation,
    plot_error_vs_seconds as plot_error_vs_seconds,
    plot_few_shot as plot_few_shot,
    plot_fields as plot_fields,
    plot_meta_training as plot_meta_training,
    plot_per_task as plot_per_task,
)
from ._xla import (
    configure_cpu as configure_cpu,
    cpu_xla_flags as cpu_xla_flags,
    pin_matmul_precision as pin_matmul_precision,
)
