import jax
import jax.numpy as jnp
import numpy as np
import pytest

from asmr_jax import macs, sine


@pytest.mark.parametrize("scale", [1.0, 30.0, 1e3, 1e4])
def test_matches_float64(scale):
    x = np.random.default_rng(0).uniform(-scale, scale, 200_000).astype(np.float32)
    s, c = jax.jit(sine.sincos)(x)
    ref = x.astype(np.float64)
    assert np.abs(np.asarray(s, np.float64) - np.sin(ref)).max() < 2e-7
    assert np.abs(np.asarray(c, np.float64) - np.cos(ref)).max() < 2e-7
    np.testing.assert_array_equal(np.asarray(jax.jit(sine.sin)(x)), np.asarray(s))


def test_special_values():
    x = jnp.array([0.0, -0.0, np.pi / 2, -np.pi, np.inf, -np.inf, np.nan], jnp.float32)
    s, c = sine.sincos(x)
    np.testing.assert_allclose(np.asarray(s[:4]), [0.0, 0.0, 1.0, 0.0], atol=1e-7)
    np.testing.assert_allclose(np.asarray(c[:4]), [1.0, 1.0, 0.0, -1.0], atol=1e-7)
    assert np.isnan(np.asarray(s[4:])).all() and np.isnan(np.asarray(c[4:])).all()


def test_other_dtypes():
    assert sine.sin(jnp.arange(3)).dtype == jnp.float32
    x = jnp.linspace(-5, 5, 11, dtype=jnp.bfloat16)  # not float32: falls back to jnp.sin
    s, c = sine.sincos(x)
    assert s.dtype == c.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(s), np.asarray(jnp.sin(x)))


def test_derivatives():
    x = jnp.linspace(-20.0, 20.0, 101)
    d1 = jax.vmap(jax.grad(sine.sin))(x)
    d2 = jax.vmap(jax.grad(jax.grad(sine.sin)))(x)
    d3 = jax.vmap(jax.grad(lambda t: sine.sincos(t)[1]))(x)
    np.testing.assert_allclose(np.asarray(d1), np.cos(np.asarray(x)), atol=2e-7)
    np.testing.assert_allclose(np.asarray(d2), -np.sin(np.asarray(x)), atol=2e-7)
    np.testing.assert_allclose(np.asarray(d3), -np.sin(np.asarray(x)), atol=2e-7)


def test_flop_constants_match_xla():
    x = jnp.ones((1000,))
    assert macs.xla_cost(sine.sin, x)["flops"] == 1000 * sine.SIN_FLOPS
    assert macs.xla_cost(lambda t: jnp.stack(sine.sincos(t)), x)["flops"] == 1000 * sine.SINCOS_FLOPS


def test_values_stay_in_range_over_the_whole_float32_range():
    mags = 10.0 ** np.arange(-3, 38.53, 0.005)
    mags = mags[mags <= np.finfo(np.float32).max]
    x = np.concatenate([mags, -mags, [np.finfo(np.float32).max, -np.finfo(np.float32).max, 0.0]]).astype(np.float32)
    assert np.all(np.isfinite(x))
    s, c = sine.sincos(jnp.asarray(x))
    assert np.all(np.isfinite(np.asarray(s))) and np.all(np.abs(np.asarray(s)) <= 1.0)
    assert np.all(np.isfinite(np.asarray(c))) and np.all(np.abs(np.asarray(c)) <= 1.0)
    assert np.all(np.abs(np.asarray(sine.sin(jnp.asarray(x)))) <= 1.0)
    # and accurate while the reduction is exact
    small = np.random.default_rng(0).uniform(-5e4, 5e4, 100_000).astype(np.float32)
    err = np.abs(np.asarray(sine.sin(jnp.asarray(small)), np.float64) - np.sin(small.astype(np.float64)))
    assert err.max() < 1e-6
