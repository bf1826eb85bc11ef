"""The experiment behind `metapinn reproduce`, split by concern: its configuration
(`_config`), the pipeline that trains and evaluates (`_pipeline`), and the report that
turns measurements into tables and text (`_report`)."""

from ._config import (
    EVALUATION_KEYS as EVALUATION_KEYS,
    QUICK as QUICK,
    ConfigError as ConfigError,
    ExperimentConfig as ExperimentConfig,
    load_config as load_config,
    quick as quick,
)
from ._pipeline import (
    default_out_dir as default_out_dir,
    evaluate_runs as evaluate_runs,
    reproduce as reproduce,
    train_runs as train_runs,
)
from ._report import format_summary as format_summary, to_markdown as to_markdown
