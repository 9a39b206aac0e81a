"""The root of the config tree: ``Config(data, model, train, decode)``."""

from __future__ import annotations

from pydantic import Field

from jumok.config.base import Frozen as _Frozen
from jumok.config.data import DataConfig
from jumok.config.decode import DecodeConfig
from jumok.config.model import ModelConfig
from jumok.config.train import TrainConfig


class Config(_Frozen):
    """Everything a run needs; written resolved into the run directory and every checkpoint."""

    data: DataConfig = Field(description="Data: where pairs come from and how they are read.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="The model.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Training.")
    decode: DecodeConfig = Field(default_factory=DecodeConfig, description="Decoding.")
