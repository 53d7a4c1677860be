"""Flax (linen) modules over the same parameter pytrees as the pure models.

:class:`Field` wraps any model of :mod:`asmr_jax.models` (ASMR, SIREN, FFN) as a
``flax.linen.Module``. Its variables hold the model's own parameter pytree, unchanged,
under ``params/net``, so the two convert both ways without copying (:func:`to_variables`,
:func:`from_variables`) and a field can be a layer of a larger Flax model (the decoder of
an autoencoder or a hypernetwork) and train with Flax's usual ``TrainState`` + optax.

>>> import jax
>>> from asmr_jax.asmr import ASMR
>>> field = Field(ASMR((32, 32), 3, levels=3, widths=32))
>>> variables = field.init(jax.random.key(0))
>>> field.apply(variables).shape                       # the whole grid (activation-sharing render)
(32, 32, 3)
>>> field.apply(variables, jax.numpy.zeros((5, 2), int)).shape   # any integer coordinates
(5, 3)
"""

from __future__ import annotations

import flax.linen as nn

COLLECTION, NAME = "params", "net"


class Field(nn.Module):
    """A coordinate network as a Flax module.

    Attributes:
      model: the frozen model dataclass (its static facts); parameters come from
        ``model.init`` and are used by ``model.render`` / ``model.apply``.

    ``__call__(coords=None, shifts=None)``: ``coords`` ``None`` renders the whole grid
    ``[*shape, C]``; integer ``coords [..., d]`` evaluate those points ``[..., C]``.
    ``shifts`` are the per-instance modulations (one ``[width_i]`` per hidden layer).
    """

    model: object

    @nn.compact
    def __call__(self, coords=None, shifts=None):
        params = self.param(NAME, lambda key: self.model.init(key))
        if coords is None:
            return self.model.render(params, shifts)
        return self.model.apply(params, coords, shifts)


def to_variables(params) -> dict:
    """The pure model's params as a :class:`Field`'s variables (same arrays)."""
    return {COLLECTION: {NAME: params}}


def from_variables(variables) -> dict:
    """A :class:`Field`'s variables as the pure model's params (same arrays)."""
    return variables[COLLECTION][NAME]
