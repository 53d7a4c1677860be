"""What every coordinate network here shares: its grid rank and its config record.

The models (:class:`~asmr_jax.siren.SIREN`, :class:`~asmr_jax.asmr.ASMR` and the
baselines) are frozen dataclasses of static facts whose first two fields are ``shape``
and ``channels``; :class:`CoordinateNetwork` gives them ``ndim``, the default
``shift_widths`` and ``config()`` (the dict ``asmr_jax.models.from_config`` rebuilds them
from), once.
"""

from __future__ import annotations

import dataclasses


class CoordinateNetwork:
    """Mixin of the model dataclasses (``shape``, ``channels`` and a class attribute ``kind``)."""

    kind = ""

    @property
    def ndim(self) -> int:
        """Number of coordinate axes (1 audio, 2 image, 3 video)."""
        return len(self.shape)

    @property
    def shift_widths(self) -> tuple[int, ...]:
        """Sizes of the per-instance shift vectors, one per hidden layer (the hidden ``widths``
        unless a model says otherwise)."""
        return self.widths

    def config(self) -> dict:
        """``{"kind": ..., field: value, ...}``: JSON-ready, rebuilt by ``asmr_jax.models.from_config``."""
        return {"kind": self.kind, **dataclasses.asdict(self)}
