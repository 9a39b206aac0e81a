"""The one typed config tree: ``Config(data, model, train, decode)``.

Every field is typed, has a default and a one-line description; the reference page
``docs/config.md`` is generated from these classes (``python -m jumok.app.docgen``) and a test fails
when it is stale. Configs are frozen pydantic models with ``extra="forbid"``, so unknown keys,
wrong types and bad choices are rejected with the key path. :func:`load_config` adds the file name
and a "did you mean" to those errors.

Defaults keep the lecture's model (SUMMARY.md points 2-7): a one-layer LSTM encoder that keeps
every hidden state ``hs``, a one-layer LSTM decoder started from the encoder's last state, dot
attention at every output step, and an output layer over ``[context; h]``.
"""

from jumok.config.data import DataConfig, GenerateConfig, TokenizerConfig
from jumok.config.decode import DecodeConfig
from jumok.config.loading import (
    apply_overrides,
    config_from_yaml,
    config_to_yaml,
    format_validation_error,
    load_config,
    parse_yaml,
    validate,
)
from jumok.config.model import DecoderConfig, DropoutConfig, EncoderConfig, ModelConfig
from jumok.config.train import EarlyStoppingConfig, ScheduleConfig, TrainConfig
from jumok.config.tree import Config

__all__ = [
    "Config",
    "DataConfig",
    "DecodeConfig",
    "DecoderConfig",
    "DropoutConfig",
    "EarlyStoppingConfig",
    "EncoderConfig",
    "GenerateConfig",
    "ModelConfig",
    "ScheduleConfig",
    "TokenizerConfig",
    "TrainConfig",
    "apply_overrides",
    "config_from_yaml",
    "config_to_yaml",
    "format_validation_error",
    "load_config",
    "parse_yaml",
    "validate",
]
