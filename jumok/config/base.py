"""What every config section is: a frozen pydantic model that rejects unknown keys."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Frozen(BaseModel):
    """A config section: typed, frozen, ``extra="forbid"``, defaults validated too."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)
