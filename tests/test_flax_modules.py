"""Flax modules hold the pure models' parameter pytrees and compute the same functions."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from asmr_jax.asmr import ASMR
from asmr_jax.ffn import FFN
from asmr_jax.flax_modules import Field, from_variables, to_variables
from asmr_jax.siren import SIREN

MODELS = [ASMR((8, 8), 3, bases=(2, 4), widths=16), SIREN((8, 8), 3, widths=(16, 16)),
          FFN.build((8, 8), 3, width=16, depth=3)]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.kind)
def test_field_equals_the_pure_model_both_ways(model):
    field = Field(model)
    variables = field.init(jax.random.key(3))
    params = from_variables(variables)
    ref = model.init(jax.random.key(0))
    assert jax.tree.structure(params) == jax.tree.structure(ref)  # the same pytree
    np.testing.assert_allclose(field.apply(variables), model.render(params), atol=1e-6)
    coords = jnp.array([[0, 0], [3, 5], [7, 7]])
    np.testing.assert_allclose(field.apply(to_variables(ref), coords), model.apply(ref, coords), atol=1e-6)


def test_field_trains_as_a_layer_of_a_larger_flax_model():
    import flax.linen as nn
    from flax.training import train_state

    class Decoder(nn.Module):  # a latent code -> shifts -> an ASMR image
        model: object

        @nn.compact
        def __call__(self, z):
            shifts = [nn.Dense(w)(z) for w in self.model.shift_widths]
            return Field(self.model)(shifts=shifts)

    model = ASMR((8, 8), 1, bases=(2, 4), widths=16)
    target = jnp.asarray(np.random.default_rng(0).uniform(size=(8, 8, 1)), jnp.float32)
    dec = Decoder(model)
    z = jnp.ones(4)
    state = train_state.TrainState.create(apply_fn=dec.apply, params=dec.init(jax.random.key(0), z)["params"],
                                          tx=optax.adam(1e-3))

    @jax.jit
    def step(state):
        loss, g = jax.value_and_grad(lambda p: jnp.mean((state.apply_fn({"params": p}, z) - target) ** 2))(
            state.params)
        return state.apply_gradients(grads=g), loss

    losses = []
    for _ in range(30):
        state, loss = step(state)
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0]
    net = state.params["Field_0"]["net"]  # the trained ASMR params, usable by the pure functions
    assert jax.tree.structure(net) == jax.tree.structure(model.init(jax.random.key(0)))
