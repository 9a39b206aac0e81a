"""What every config section is: a frozen pydantic model that rejects unknown keys and infinities."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

# A seed is 0 .. 2**32 - 1: SentencePiece's generator (train.seed) takes an unsigned 32-bit seed
# and torch's a 64-bit one, so this range leaves room for the offsets added to it (epoch, rank,
# sentence number).
MAX_SEED = 2**32 - 1
# Embedding and hidden sizes: 16384 is twice the largest recurrent layer published (8192, the LSTM
# language models of Jozefowicz et al. 2016); one LSTM layer that wide holds 8 GiB of float32
# weights.
MAX_WIDTH = 16_384


class Frozen(BaseModel):
    """A config section: typed, frozen, ``extra="forbid"``, defaults validated too.

    Every float is finite (``.inf`` and ``.nan`` in YAML, ``Infinity`` in the server's JSON are
    refused), and every size, count and seed has an upper bound in its field: a value past it
    would break arithmetic or exhaust memory long before it made a better model.
    """

    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False
    )
