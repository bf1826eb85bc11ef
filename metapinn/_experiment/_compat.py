"""What keeps the files of earlier versions loading, in one place.

Two kinds of files outlive the code that wrote them: a run's `config.json` (and any
config file a user keeps), and the settings each checkpoint stores, which a resumed
or evaluated run is checked against. Earlier versions wrote:

- `train_nus`, `test_nus`: Burgers' viscosities, before the families made them the
  family's `train_params`, `test_params` (also accepted as command-line flags);
- checkpoint settings without the keys added since (`family` on Burgers, `resample`
  off, `n_train_tasks` and `tasks_seed` on a scalar family, `adapt` all, `init`
  random, a constant `outer_schedule`, the `mlp` network and so none of the embedding
  settings, no causal weighting), and Burgers' training values as `train_nus`.

A setting added later is therefore stored only where it differs from what the runs
before it did.
"""

from typing import Any


NETWORK_SETTINGS = ("network", "fourier_features", "fourier_scale", "periodic_embedding", "rwf")
"""The settings of the network beyond its width and depth (added with the accurate-PINN
networks)."""

RENAMED_KEYS = {"train_nus": "train_params", "test_nus": "test_params"}
"""Config keys of earlier versions, read as their new names."""


class CompatError(ValueError):
    """A file of an earlier version cannot be read as such (an old key beside its new
    name)."""


def upgrade_config_data(data: dict[str, Any]) -> dict[str, Any]:
    """A config's plain data with the keys of earlier versions renamed.

    **Raises:** `CompatError` if an old key and its new name are both given."""
    for old, new in RENAMED_KEYS.items():
        if old in data:
            if new in data:
                raise CompatError(f"config keys {old!r} and {new!r} name the same setting")
            data = {(new if k == old else k): v for k, v in data.items()}
    return data


def old_flags(name: str) -> list[str]:
    """The earlier names of the config field `name`, for its command-line flags."""
    return [old for old, new in RENAMED_KEYS.items() if new == name]


def as_written_before(
    settings: dict[str, Any], own: dict[str, Any], *, family: str, scalar: bool, resample: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A training run's run-wide `settings` and its method's `own` settings, less what
    runs before each setting existed did not store (see the module notes), so that
    their checkpoints stay valid."""
    settings, own = dict(settings), dict(own)
    if not resample:
        settings.pop("resample")
    if family == "burgers":
        settings.pop("family")
        settings["train_nus"] = settings.pop("train_params")
    if scalar:
        settings.pop("n_train_tasks")
        settings.pop("tasks_seed")
    if settings["network"] == "mlp":  # which takes no embedding settings
        for key in NETWORK_SETTINGS:
            settings.pop(key)
    if not settings["causal_chunks"]:
        settings.pop("causal_chunks")
        settings.pop("causal_tol")
    if own.get("adapt") == "all":
        own.pop("adapt")
    if own.get("init") == "random":
        own.pop("init")
    if own["outer_schedule"] == "constant":
        own.pop("outer_schedule")
    return settings, own
