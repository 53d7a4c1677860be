import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asmr_jax import coords
from asmr_jax.asmr import ASMR
from asmr_jax.siren import SIREN


def _shifts(model, seed=1):
    keys = jax.random.split(jax.random.key(seed), len(model.shift_widths))
    return [0.1 * jax.random.normal(k, (w,)) for k, w in zip(keys, model.shift_widths)]


@st.composite
def asmr_models(draw):
    ndim = draw(st.integers(1, 3))
    levels = draw(st.integers(2, 4))
    bases = [[draw(st.integers(1, 4)) for _ in range(levels)] for _ in range(ndim)]
    while math.prod(math.prod(b) for b in bases) > 4096:  # a grid the per-point path renders in well under 1 s
        axis = max(bases, key=math.prod)
        axis[axis.index(max(axis))] -= 1
    shape = tuple(max(1, math.prod(b) - draw(st.integers(0, 2))) for b in bases)  # incl. non-factorable
    if math.prod(shape) < 2:
        shape = tuple(math.prod(b) for b in bases)
        bases[0][-1] = max(bases[0][-1], 2)
        shape = (math.prod(bases[0]),) + shape[1:]
    widths = tuple(draw(st.sampled_from([4, 8, 13])) for _ in range(levels - 1))  # one per hidden layer
    channels = draw(st.integers(1, 3))
    modulator = draw(st.sampled_from(["linear", "nonlinear"]))
    return ASMR(shape, channels, bases=bases, widths=widths, modulator=modulator)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=asmr_models(), with_shifts=st.booleans(), seed=st.integers(0, 100))
def test_apply_equals_render_everywhere(model, with_shifts, seed):
    def paths(key):  # the three paths in one program: one compile per example, not one per path
        params = model.init(key)
        shifts = _shifts(model, seed) if with_shifts else None
        return (model.render(params, shifts), model.apply(params, coords.grid_coords(model.shape), shifts),
                model.render(params, shifts, factorized=False))

    rendered, points, direct = jax.jit(paths)(jax.random.key(seed))
    assert rendered.shape == model.shape + (model.channels,)
    np.testing.assert_allclose(rendered, points.reshape(rendered.shape), atol=2e-5, rtol=1e-4)
    np.testing.assert_allclose(rendered, direct, atol=2e-5, rtol=1e-4)


def test_apply_on_random_subset_and_padded_grid(key):
    model = ASMR((13, 11), 3, bases=((2, 7), (3, 4)), widths=16)  # padded to 14 x 12
    params = model.init(key)
    full = model.render(params, crop=False)
    assert full.shape == (14, 12, 3)
    pts = jax.random.randint(jax.random.key(3), (50, 2), 0, jnp.array([[14, 12]]))
    np.testing.assert_allclose(model.apply(params, pts), full[pts[:, 0], pts[:, 1]], atol=2e-5)


def test_paths_agree_paper_cameraman_config(key):
    model = ASMR((512, 512), 1, bases=(4, 4, 4, 8), widths=256)
    params = model.init(key)
    r = jax.jit(model.render)(params)  # jitted: one compile per path instead of one per eager op
    pts = jax.random.randint(jax.random.key(1), (2000, 2), 0, 512)
    np.testing.assert_allclose(jax.jit(model.apply)(params, pts), r[pts[:, 0], pts[:, 1]], atol=5e-5)


def test_render_tiled_matches_render(key):
    model = ASMR((37, 50), 2, bases=((2, 4, 5), (3, 4, 5)), widths=8)
    params = model.init(key)
    np.testing.assert_allclose(model.render_tiled(params), model.render(params), atol=1e-5)


def test_render_with_denser_bases_refines_finest_level(key):
    model = ASMR((16, 16), 1, bases=(4, 4), widths=8)
    params = model.init(key)
    dense = model.render(params, bases=(4, 7))
    assert dense.shape == (28, 28, 1)
    # digits 0 and B-1 of the finest level map to the same inputs 0 and 1
    np.testing.assert_allclose(dense[::7, ::7], model.render(params)[::4, ::4], atol=1e-5)


@pytest.mark.parametrize("modulator", ["linear", "nonlinear"])
def test_gradients_of_both_paths_agree(key, modulator):
    model = ASMR((12, 10), 2, bases=((3, 4), (2, 5)), widths=8, modulator=modulator)
    params = model.init(key)
    target = jax.random.uniform(jax.random.key(2), model.shape + (2,))
    grid = coords.grid_coords(model.shape)
    g_render = jax.grad(lambda p: jnp.mean((model.render(p) - target) ** 2))(params)
    g_apply = jax.grad(lambda p: jnp.mean((model.apply(p, grid).reshape(target.shape) - target) ** 2))(params)
    for a, b in zip(jax.tree.leaves(g_render), jax.tree.leaves(g_apply)):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-3)
    assert all(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(g_render))


@pytest.mark.parametrize("model", [
    ASMR((16, 16), 3, bases=(2, 2, 4), widths=8), ASMR((20, 12), 1, levels=3, widths=(6, 5)),
    ASMR((32,), 2, bases=(4, 8), widths=8), ASMR((4, 4, 8), 1, levels=2, widths=8, modulator="nonlinear"),
    SIREN((12, 10), 3, widths=(8, 8)), SIREN((16,), 1, widths=(8,))])
def test_batched_modulations_give_one_render_each(model):
    # shifts / scales [2, 3, width] -> renders [2, 3, *shape, C], each the render of its own vectors
    params = model.init(jax.random.key(0))
    keys = jax.random.split(jax.random.key(1), 2 * len(model.widths))
    shifts = [0.2 * jax.random.normal(k, (2, 3, w)) for k, w in zip(keys, model.widths)]
    scales = [1 + 0.2 * jax.random.normal(k, (2, 3, w)) for k, w in zip(keys[len(model.widths):], model.widths)]
    variants = [{"shifts": shifts}, {"scales": scales}, {"shifts": shifts, "scales": scales}]
    if model.kind == "asmr":
        variants.append({"shifts": shifts, "factorized": False})
    def call(p, sh, sc, factorized):
        return model.render(p, sh, scales=sc, **({} if factorized else {"factorized": False}))

    one = jax.jit(call, static_argnums=3)
    for kw in variants:
        factorized = kw.get("factorized", True)
        batched = one(params, kw.get("shifts"), kw.get("scales"), factorized)
        assert batched.shape == (2, 3, *model.shape, model.channels)
        for idx in np.ndindex(2, 3):
            pick = lambda mods, i=idx: None if mods is None else [v[i] for v in mods]  # noqa: E731
            want = one(params, pick(kw.get("shifts")), pick(kw.get("scales")), factorized)
            np.testing.assert_allclose(batched[idx], want, atol=2e-5, rtol=1e-4, err_msg=str(sorted(kw)))


def test_hidden_sine_value_and_derivatives_are_the_sines():
    # angle addition for the value (cells 6 x digits 4: it saves sines), the direct form's derivative
    from asmr_jax.asmr import hidden_sine, use_angle_sum

    assert use_angle_sum(6, 4)
    ka, km, kw = jax.random.split(jax.random.key(0), 3)
    a = 0.2 * jax.random.normal(ka, (2, 3, 1, 5))
    m = 0.2 * jax.random.normal(km, (1, 1, 4, 5))
    w = jax.random.normal(kw, (2, 3, 4, 5))
    ours = lambda a, m: jnp.sum(w * hidden_sine(a, m, 30.0))  # noqa: E731
    ref = lambda a, m: jnp.sum(w * jnp.sin(30.0 * (a + m)))  # noqa: E731
    np.testing.assert_allclose(hidden_sine(a, m, 30.0), jnp.sin(30.0 * (a + m)), atol=2e-6)
    for got, want in zip(jax.grad(ours, (0, 1))(a, m), jax.grad(ref, (0, 1))(a, m)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # second order (what a meta step differentiates): the gradient of a gradient norm
    second = lambda f: jax.grad(lambda a, m: jnp.sum(jax.grad(f, 1)(a, m) ** 2), (0, 1))(a, m)  # noqa: E731
    for got, want in zip(second(ours), second(ref)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-2)


def test_jit_and_vmap_over_param_sets_match_loop():
    model = ASMR((8, 8, 4), 1, bases=((2, 4), (2, 4), (2, 2)), widths=8)
    keys = jax.random.split(jax.random.key(0), 3)
    stacked = jax.vmap(model.init)(keys)
    batched = jax.jit(jax.vmap(model.render))(stacked)
    for i, k in enumerate(keys):
        np.testing.assert_allclose(batched[i], model.render(model.init(k)), atol=1e-5)


def test_siren_init_ranges(key):
    model = SIREN((16, 16), 3, widths=(64, 64, 64), w0=30.0)
    layers = model.init(key)["layers"]
    # weights and biases share the bound (SIREN); U(-1/2, 1/2) for the 2-input first layer
    assert 0.4 < float(jnp.abs(layers[0]["w"]).max()) <= 1.0 / 2
    assert 0.4 < float(jnp.abs(layers[0]["b"]).max()) <= 1.0 / 2
    bound = math.sqrt(6.0 / 64) / 30.0
    for layer in layers[1:]:
        assert 0.75 * bound < float(jnp.abs(layer["w"]).max()) <= bound
        assert float(jnp.abs(layer["b"]).max()) <= bound
    assert float(jnp.abs(layers[1]["b"]).max()) > 0.75 * bound  # 64 draws span the range
    assert model.num_params() == sum(x.size for x in jax.tree.leaves(model.init(key)))


def test_asmr_init_and_param_count(key):
    for modulator in ("linear", "nonlinear"):
        model = ASMR((16, 16), 3, bases=(4, 4), widths=32, modulator=modulator)
        params = model.init(key)
        assert model.num_params() == sum(x.size for x in jax.tree.leaves(params))
    mod = ASMR((16, 16), 1, bases=(4, 4), widths=32).init(key)["mods"][0]["w"]
    assert float(jnp.abs(mod).max()) <= math.sqrt(1 / 2)


def test_siren_apply_equals_render(key):
    model = SIREN((9, 7), 2, widths=(16, 16))
    params = model.init(key)
    pts = coords.grid_coords(model.shape)
    np.testing.assert_allclose(model.apply(params, pts).reshape(9, 7, 2), model.render(params), atol=1e-5)


def test_bad_model_arguments():
    with pytest.raises(ValueError, match="axis 0 .* multiply to 512, need >= 600"):
        ASMR((600,), 1, bases=(4, 4, 4, 8))
    with pytest.raises(ValueError, match="3 hidden layers, got 2 widths"):
        ASMR((512,), 1, bases=(4, 4, 4, 8), widths=(8, 8))
    with pytest.raises(ValueError, match="modulator must be one of"):
        ASMR((16,), 1, bases=(4, 4), modulator="mlp")
    with pytest.raises(ValueError, match="bases or a number of levels"):
        ASMR((16,), 1)
