"""The experiment behind `metapinn reproduce`, split by concern: its configuration
(`_config`), the pipeline that trains and evaluates (`_pipeline`), and the report that
turns measurements into tables and text (`_report`)."""

from ._config import (
    DEFAULT_WORKLOAD as DEFAULT_WORKLOAD,
    EVALUATION_KEYS as EVALUATION_KEYS,
    QUICK as QUICK,
    WORKLOADS as WORKLOADS,
    ConfigError as ConfigError,
    ExperimentConfig as ExperimentConfig,
    load_config as load_config,
    quick as quick,
    workload as workload,
)
from ._evaluation import evaluate_runs as evaluate_runs, reference_fields as reference_fields
from ._pipeline import default_out_dir as default_out_dir, reproduce as reproduce
from ._report import format_summary as format_summary, to_markdown as to_markdown
from ._training import train_runs as train_runs
