"""Functa's parameterization against an independent reference, second order, memory levers,
any-dimensional signals."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from asmr_jax.asmr import ASMR
from asmr_jax.siren import SIREN
from meta import functa, inference, optimize


def reference_forward(p, latent, shape, w0, modulate_scale, modulate_shift):
    """Functa's LatentModulatedSiren written out: explicit layers, no shared code."""
    axes = [np.linspace(-1.0, 1.0, s) for s in shape]
    x = jnp.asarray(np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(shape)), jnp.float32)
    mods = latent @ p["latent_to_modulation"]["w"] + p["latent_to_modulation"]["b"]
    layers = p["model"]["layers"]
    offset = 0
    for layer in layers[:-1]:
        x = x @ layer["w"] + layer["b"][None]
        width = layer["w"].shape[1]
        if modulate_scale:
            x = x * (mods[None, offset:offset + width] + 1.0)
            offset += width
        if modulate_shift:
            x = x + mods[None, offset:offset + width]
            offset += width
        x = jnp.sin(w0 * x)
    y = x @ layers[-1]["w"] + layers[-1]["b"][None]
    return y.reshape(*shape, -1)


def reference_outer_loss(p, images, cfg):
    shape, w0 = cfg["shape"], cfg["w0"]
    total = 0.0
    for image in images:
        def loss(z, image=image):
            pred = reference_forward(p, z, shape, w0, cfg["scale"], cfg["shift"])
            return jnp.mean((pred - image) ** 2) + cfg["l2"] * jnp.sum(z**2)

        z = p["latent_init"] if "latent_init" in p else jnp.zeros(cfg["dim"])
        z = jax.lax.stop_gradient(z)
        for _ in range(cfg["k"]):
            z = z - cfg["lr_scale"] * jnp.clip(p["meta_sgd_lr"], 0, 1) * jax.grad(loss)(z)
        total = total + loss(z)
    return total / len(images)


@pytest.mark.parametrize("scale", [False, True])
def test_matches_independent_functa_reference(scale):
    shape = (6, 5)
    net = SIREN(shape, 3, widths=(12, 10))
    meta = functa.MetaModel(net, 7, inner_steps=3, lr_scale=0.7, modulate_scale=scale, latent_init_scale=0.05,
                            l2_weight=1e-3, functa_init=True)
    params = meta.init(jax.random.key(3))
    # functa's init: hidden biases 0, output bias 0.5, map bias 0, map weights ~ N(0, 1/D) truncated
    assert all(float(jnp.abs(layer["b"]).max()) == 0 for layer in params["model"]["layers"][:-1])
    np.testing.assert_array_equal(params["model"]["layers"][-1]["b"], 0.5)
    w = np.asarray(params["latent_to_modulation"]["w"])
    assert np.abs(w).max() <= 2 / np.sqrt(7) + 1e-6 and 0.6 < w.std() * np.sqrt(7) < 1.0
    images = jnp.asarray(np.random.default_rng(0).uniform(size=(2, *shape, 3)), jnp.float32)
    cfg = dict(shape=shape, w0=net.w0, scale=scale, shift=True, l2=1e-3, dim=7, k=3, lr_scale=0.7)

    ours = jax.jit(lambda p: functa.outer_loss(meta, p, images)[0])
    theirs = jax.jit(lambda p: reference_outer_loss(p, images, cfg))
    np.testing.assert_allclose(ours(params), theirs(params), rtol=1e-5)
    g_ours, g_ref = jax.jit(jax.grad(ours))(params), jax.jit(jax.grad(theirs))(params)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(g_ours), jax.tree.leaves(g_ref)):
        scale_ = float(jnp.abs(b).max()) + 1e-12
        np.testing.assert_allclose(a / scale_, b / scale_, atol=2e-5, err_msg=jax.tree_util.keystr(path))
    # the fitted latents too
    z = jax.jit(lambda p, im: functa.inner_loop(meta, p, im))(params, images[0])
    assert z.shape == (7,) and float(jnp.abs(z - params["latent_init"]).max()) > 0


def test_asmr_shifts_add_inside_w0_next_to_the_level_modulation():
    net = ASMR((8, 8), 1, bases=(2, 4), widths=6)
    meta = functa.MetaModel(net, 3)
    params = meta.init(jax.random.key(0))
    z = jnp.array([0.3, -0.2, 0.5])
    shift = z @ params["latent_to_modulation"]["w"]
    want = net.render(params["model"], [shift])  # shifts enter as they do for SIREN: unscaled, inside w0
    np.testing.assert_allclose(functa.render(meta, params, z), want, atol=1e-6)


def _tiny_meta(**kw):
    return functa.MetaModel(SIREN((4, 4), 1, widths=(5,)), 3, inner_steps=2, lr_scale=5.0, **kw)


def test_second_order_differs_from_first_order_and_matches_finite_differences():
    meta = _tiny_meta()
    images = jnp.asarray(np.random.default_rng(1).uniform(size=(2, 4, 4, 1)), jnp.float32)
    with jax.enable_x64(True):
        params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), meta.init(jax.random.key(2)))
        imgs = images.astype(jnp.float64)
        loss = lambda p, fo=False: functa.outer_loss(meta, p, imgs, first_order=fo)[0]  # noqa: E731
        g2 = jax.grad(loss)(params)
        g1 = jax.grad(lambda p: loss(p, True))(params)
        w = params["model"]["layers"][0]["w"]
        direction = jax.random.normal(jax.random.key(5), w.shape, jnp.float64)
        eps = 1e-5

        def at(t):
            layers = [dict(params["model"]["layers"][0], w=w + t * direction)] + params["model"]["layers"][1:]
            return loss({**params, "model": {"layers": layers}})

        fd = (at(eps) - at(-eps)) / (2 * eps)
        exact = jnp.sum(g2["model"]["layers"][0]["w"] * direction)
        first = jnp.sum(g1["model"]["layers"][0]["w"] * direction)
        np.testing.assert_allclose(exact, fd, rtol=1e-6)
        assert abs(float(first - fd)) > 1e-3 * abs(float(fd))  # first order misses the inner-loop term


@pytest.mark.parametrize("lever", [dict(remat=True), dict(microbatch=2), dict(remat=True, microbatch=1)])
def test_remat_and_microbatch_give_the_same_step(lever):
    meta = functa.MetaModel(ASMR((8, 8), 3, bases=(2, 4), widths=8), 4)
    params = meta.init(jax.random.key(0))
    opt = optimize.make_optimizer(1e-3)
    state = opt.init(params)
    images = jnp.asarray(np.random.default_rng(0).uniform(size=(4, 8, 8, 3)), jnp.float32)
    p0, _, m0 = optimize.make_meta_step(meta, opt)(params, state, images)
    p1, _, m1 = optimize.make_meta_step(meta, opt, **lever)(params, state, images)
    np.testing.assert_allclose(m1["loss"], m0["loss"], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p0)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_remat_lowers_the_compiled_memory_plan():
    meta = functa.MetaModel(SIREN((16, 16), 3, widths=(64, 64, 64)), 16)
    opt = optimize.make_optimizer(1e-3)
    plain = optimize.memory_estimate(meta, opt, 8)
    remat = optimize.memory_estimate(meta, opt, 8, remat=True, microbatch=2)
    assert plain["peak"] > 0 and remat["temporaries"] < plain["temporaries"]


def test_noise_and_l2_are_applied():
    images = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 4, 4, 1)), jnp.float32)
    base = _tiny_meta()
    params = base.init(jax.random.key(0))
    loss = lambda m, k=None: float(functa.outer_loss(m, params, images, k)[0])  # noqa: E731
    assert loss(_tiny_meta(l2_weight=10.0)) > loss(base)
    noisy = _tiny_meta(noise_std=0.5)
    with pytest.raises(ValueError, match="key"):
        loss(noisy)
    a, b = loss(noisy, jax.random.key(1)), loss(noisy, jax.random.key(2))
    assert a != b and a == loss(noisy, jax.random.key(1))


def test_without_meta_sgd_the_inner_step_is_plain_sgd():
    meta = functa.MetaModel(SIREN((4, 4), 1, widths=(5,)), 3, inner_steps=1, lr_scale=0.1, meta_sgd=False)
    params = meta.init(jax.random.key(0))
    # network + latent map, no rates
    assert "meta_sgd_lr" not in params and meta.num_params() == (2 * 5 + 5) + (5 * 1 + 1) + (3 * 5 + 5)
    image = jnp.asarray(np.random.default_rng(0).uniform(size=(4, 4, 1)), jnp.float32)
    g = jax.grad(functa.inner_loss, argnums=2)(meta, params, jnp.zeros(3), image)
    np.testing.assert_allclose(functa.inner_loop(meta, params, image), -0.1 * g, rtol=1e-6)


@pytest.mark.parametrize("net", [ASMR((24,), 1, bases=(4, 6), widths=8), SIREN((24,), 2, widths=(8,)),
                                 ASMR((4, 6, 4), 3, bases=((2, 2), (2, 3), (2, 2)), widths=8),
                                 ASMR((6, 10), 3, levels=2, widths=8)])
def test_any_signal_shape(net):
    meta = functa.MetaModel(net, 4)
    params = meta.init(jax.random.key(0))
    signals = np.random.default_rng(0).uniform(size=(3, *net.shape, net.channels)).astype(np.float32)
    latents, psnrs = inference.fit_latents(meta, params, signals)
    assert latents.shape == (3, 4) and np.isfinite(psnrs).all()
    assert inference.render_latents(meta, params, latents).shape == signals.shape
    with pytest.raises(ValueError, match="expects"):
        inference.fit_latents(meta, params, signals[..., :1, :] if net.ndim > 1 else signals[:, :5])


def test_many_encoding_steps_compile_rolled():
    meta = functa.MetaModel(SIREN((8, 8), 1, widths=(16,)), 4)
    params = meta.init(jax.random.key(0))
    img = jnp.asarray(np.random.default_rng(0).uniform(size=(8, 8, 1)), jnp.float32)
    fn = jax.jit(lambda p, x: functa.inner_loop(meta, p, x, 400))
    text = fn.lower(params, img).as_text()
    assert text.count("while") >= 1  # a loop, not 400 unrolled copies
    assert np.isfinite(np.asarray(fn(params, img))).all()
