"""The experiment behind `metapinn reproduce`, split by concern: its configuration
(`_config`, each field carrying its roles) and named workloads (`_workloads`); its
methods as objects (`_methods`); what they are made of (`_problem`); the run folder
(`_folder`); the pipeline (`_pipeline`) that meta-trains (`_training`) and evaluates
(`_evaluation`); and the report that turns measurements into tables and text
(`_report`); and the ablation grid over learner settings (`_ablation`), each cell a
run of that pipeline (`_ablation_grid` defines the cells), with its report
(`_ablation_report`)."""

from ._ablation import run_ablation as run_ablation
from ._ablation_grid import (
    AblationGrid as AblationGrid,
    GridError as GridError,
    make_grid as make_grid,
    read_grid_file as read_grid_file,
)
from ._config import (
    ROLES as ROLES,
    ConfigError as ConfigError,
    ExperimentConfig as ExperimentConfig,
    fields_with_role as fields_with_role,
    load_config as load_config,
)
from ._evaluation import (
    Evaluation as Evaluation,
    evaluate as evaluate,
    evaluate_runs as evaluate_runs,
    reference_fields as reference_fields,
    rewrite_report as rewrite_report,
    wall_clock_figure as wall_clock_figure,
)
from ._folder import RunFolder as RunFolder
from ._methods import (
    LEARNERS as LEARNERS,
    METHOD_NAMES as METHOD_NAMES,
    LearnerKind as LearnerKind,
    Method as Method,
)
from ._pipeline import default_out_dir as default_out_dir, reproduce as reproduce
from ._report import format_summary as format_summary, to_markdown as to_markdown
from ._training import train_runs as train_runs
from ._workloads import (
    DEFAULT_WORKLOAD as DEFAULT_WORKLOAD,
    QUICK as QUICK,
    W2 as W2,
    W3 as W3,
    WORKLOADS as WORKLOADS,
    quick as quick,
    workload as workload,
)
