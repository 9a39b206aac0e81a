"""The root of the config tree: ``Config(data, model, train, decode)``."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

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

    @model_validator(mode="before")
    @classmethod
    def _lm_stops_on_loss(cls, raw: Any) -> Any:
        """A language model's train.early_stopping.metric defaults to loss (the others score
        decoded outputs against references, which a language model does not have)."""
        model = raw.get("model") if isinstance(raw, dict) else None
        if not isinstance(model, dict) or model.get("type") != "lm":
            return raw
        train = raw.get("train") or {}
        stopping = train.get("early_stopping") or {} if isinstance(train, dict) else None
        if not isinstance(stopping, dict) or "metric" in stopping:
            return raw  # given (checked below), or malformed (reported by the field's check)
        return {**raw, "train": {**train, "early_stopping": {**stopping, "metric": "loss"}}}

    @model_validator(mode="after")
    def _lm_has_no_outputs_to_score(self) -> Config:
        metric = self.train.early_stopping.metric
        if self.model.type == "lm" and metric != "loss":
            raise ValueError(
                f"train.early_stopping.metric: '{metric}' scores decoded outputs against "
                "references, which a language model (model.type: lm) does not have: use loss "
                "(its dev perplexity, exp(loss), ranks checkpoints the same way)"
            )
        return self
