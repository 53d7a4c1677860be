"""meta.functa: inner loop, outer step, sharding, latents for new images, checkpoints."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from asmr_jax import io, metrics, sharding
from asmr_jax.asmr import ASMR
from asmr_jax.siren import SIREN
from meta import checkpoint, functa, inference, optimize

SHAPE = (8, 8)


def tiny(kind="asmr", latent_dim=6, **kw):
    net = ASMR(SHAPE, 3, bases=(2, 4), widths=8) if kind == "asmr" else SIREN(SHAPE, 3, widths=(8,))
    return functa.MetaModel(net, latent_dim, **kw)


def init(meta, seed):
    return jax.jit(meta.init)(jax.random.key(seed))


def smooth_images(n, seed=0):
    """Smooth random RGB images [n, 8, 8, 3] on [0, 1]."""
    rng = np.random.default_rng(seed)
    y, x = np.meshgrid(np.linspace(0, 1, 8), np.linspace(0, 1, 8), indexing="ij")
    out = []
    for _ in range(n):
        a, b, c = rng.uniform(0.5, 3, size=3), rng.uniform(0, 6, size=3), rng.uniform(0.2, 0.8, size=3)
        out.append(np.stack([c[i] + 0.2 * np.sin(a[i] * x * 3 + b[i] * y) for i in range(3)], -1))
    return np.clip(np.stack(out), 0, 1).astype(np.float32)


@pytest.mark.parametrize("kind", ["asmr", "siren"])
def test_inner_loop_lowers_loss(kind):
    meta = tiny(kind)
    params = init(meta, 1)
    image = jnp.asarray(smooth_images(1)[0])
    zero = jnp.zeros(meta.latent_dim)
    mse = jax.jit(functa.image_mse, static_argnums=0)
    before = mse(meta, params, zero, image)
    phi = jax.jit(functa.inner_loop, static_argnums=(0, 3))(meta, params, image, 3)
    after = mse(meta, params, phi, image)
    assert phi.shape == (meta.latent_dim,)
    assert float(after) < float(before)


def test_zero_latent_renders_the_shared_network():
    meta = tiny()
    params = init(meta, 0)
    np.testing.assert_allclose(functa.render(meta, params, jnp.zeros(meta.latent_dim)),
                               meta.model.render(params["model"]), atol=1e-6)


def test_shifts_split_by_layer():
    net = ASMR((8, 8), 1, bases=(2, 2, 2), widths=(5, 7))
    meta = functa.MetaModel(net, 3)
    params = init(meta, 0)
    shifts = functa.latent_to_shifts(meta, params, jnp.ones(3))
    assert [s.shape for s in shifts] == [(5,), (7,)]


@pytest.mark.parametrize("kind", ["asmr", "siren"])
def test_vmap_equals_python_loop(kind):
    meta = tiny(kind)
    params = init(meta, 2)
    images = jnp.asarray(smooth_images(3))
    loss, per_image = jax.jit(functa.outer_loss, static_argnums=0)(meta, params, images)
    one = jax.jit(lambda p, im: functa.image_mse(meta, p, functa.inner_loop(meta, p, im), im))
    loop = [one(params, im) for im in images]
    np.testing.assert_allclose(per_image, np.array(loop), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(loss, np.mean(loop), rtol=1e-5)


@pytest.mark.parametrize("kind", ["asmr", "siren"])
def test_batched_step_equals_vmap_of_single_signals(kind):
    # the batch goes through the network's batched render; vmap over one signal at a time
    # renders [width] modulations: the same loss, inner gradients and second-order gradient
    meta = tiny(kind, modulate_scale=True, l2_weight=1e-3)
    params = init(meta, 5)
    images = jnp.asarray(smooth_images(3, seed=1))
    z = 0.3 * jax.random.normal(jax.random.key(1), (3, meta.latent_dim))
    batched = jax.jit(lambda p: functa.inner_grad(meta, p, z, images))(params)
    single = jax.jit(jax.vmap(lambda zi, im: functa.inner_grad(meta, params, zi, im)))(z, images)
    np.testing.assert_allclose(batched, single, rtol=1e-4, atol=1e-5)

    def vmapped(p):
        mse = jax.vmap(lambda im: functa.image_mse(meta, p, functa.inner_loop(meta, p, im), im))(images)
        return jnp.mean(mse)

    g_batched = jax.jit(jax.grad(lambda p: functa.outer_loss(meta, p, images)[0]))(params)
    g_vmapped = jax.jit(jax.grad(vmapped))(params)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(g_batched), jax.tree.leaves(g_vmapped)):
        scale = float(jnp.max(jnp.abs(b)))
        assert scale > 0, jax.tree_util.keystr(path)
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3 * scale, err_msg=jax.tree_util.keystr(path))


def test_network_without_batched_render_renders_one_latent_at_a_time():
    from asmr_jax.ngp import InstantNGP

    net = InstantNGP(SHAPE, 3, levels=2, log2_table=6, base_resolution=2, widths=(8,))
    assert not getattr(net, "batched_render", False)
    meta = functa.MetaModel(net, 4)
    params = init(meta, 6)
    z = jax.random.normal(jax.random.key(2), (2, 3, 4))
    out = jax.jit(lambda p, z: functa.render(meta, p, z))(params, z)
    assert out.shape == (2, 3, *SHAPE, 3)
    one = jax.jit(lambda p, zi: functa.render(meta, p, zi))
    for idx in np.ndindex(2, 3):
        np.testing.assert_allclose(out[idx], one(params, z[idx]), atol=1e-6)


@pytest.mark.parametrize("kind", ["asmr", "siren"])
def test_outer_gradients_finite_and_nonzero(kind):
    meta = tiny(kind)
    params = init(meta, 3)
    grads = jax.jit(jax.grad(lambda p: functa.outer_loss(meta, p, jnp.asarray(smooth_images(2)))[0]))(params)
    leaves = jax.tree_util.tree_leaves_with_path(grads)
    assert len(leaves) == len(jax.tree.leaves(params))
    for path, g in leaves:
        g = np.asarray(g)
        assert np.isfinite(g).all(), jax.tree_util.keystr(path)
        assert np.abs(g).max() > 0, f"zero gradient for {jax.tree_util.keystr(path)}"


def test_second_order_gradient_flows_through_inner_loop():
    meta = tiny()
    params = init(meta, 4)
    images = jnp.asarray(smooth_images(2))
    # meta-SGD rates only act through the inner loop: their gradient is the second-order path
    g = jax.jit(jax.grad(lambda p: functa.outer_loss(meta, p, images)[0]))(params)["meta_sgd_lr"]
    assert np.abs(np.asarray(g)).max() > 0


def test_meta_step_does_not_recompile_and_learns():
    meta = tiny()
    params = init(meta, 5)
    opt = optimize.make_optimizer(1e-3)
    state = opt.init(params)
    step = optimize.make_meta_step(meta, opt)
    images = jnp.asarray(smooth_images(4))
    plan = optimize.memory_plan(step.compile_for(params, state, images))  # compiled ahead, as meta.train does
    assert plan["peak"] > 0 and plan["temporaries"] > 0
    io.release_free_heap()
    p1, s1, m1 = step(params, state, images)  # reuses what compile_for built
    p2, s2, m2 = step(p1, s1, jnp.asarray(smooth_images(4, seed=1)))
    assert step._cache_size() == 1
    losses = [float(m1["loss"])]
    p, s = p2, s2
    for _ in range(15):
        p, s, m = step(p, s, images)
    losses.append(float(jax.jit(functa.outer_loss, static_argnums=0)(meta, p, images)[0]))
    assert losses[-1] < losses[0]
    assert step._cache_size() == 1


def test_meta_sgd_rates_stay_in_unit_interval():
    meta = tiny()
    params = init(meta, 6)
    lr0 = np.asarray(params["meta_sgd_lr"])
    assert lr0.min() >= functa.META_SGD_INIT[0] and lr0.max() <= functa.META_SGD_INIT[1]
    params["meta_sgd_lr"] = jnp.linspace(-0.5, 1.5, meta.latent_dim)
    opt = optimize.make_optimizer(0.5)
    step = optimize.make_meta_step(meta, opt)
    state = opt.init(params)
    for seed in range(3):
        params, state, _ = step(params, state, jnp.asarray(smooth_images(2, seed)))
        lr = np.asarray(params["meta_sgd_lr"])
        assert lr.min() >= 0.0 and lr.max() <= 1.0


@pytest.mark.parametrize("kind", ["asmr", "siren"])
def test_sharded_step_equals_single_device(kind):
    assert len(jax.devices()) == 8
    meta = tiny(kind)
    params = init(meta, 7)
    opt = optimize.make_optimizer(1e-3)
    state = opt.init(params)
    images = smooth_images(8)
    p1, _, m1 = optimize.make_meta_step(meta, opt)(params, state, jnp.asarray(images))
    mesh = sharding.data_mesh()
    step8 = optimize.make_meta_step(meta, opt, mesh)
    p8, _, m8 = step8(sharding.replicate(params, mesh), sharding.replicate(state, mesh),
                      sharding.shard_batch(images, mesh))
    assert len(jax.tree.leaves(p8)[0].sharding.device_set) == 8
    np.testing.assert_allclose(m8["loss"], m1["loss"], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(p8), jax.tree.leaves(p1)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_fit_and_render_latents():
    meta = tiny()
    params = init(meta, 8)
    images = smooth_images(5)
    latents, psnrs = inference.fit_latents(meta, params, images, steps=3, chunk=2)
    assert latents.shape == (5, meta.latent_dim) and psnrs.shape == (5,)
    recon = inference.render_latents(meta, params, latents, chunk=3)
    assert recon.shape == images.shape and recon.min() >= 0 and recon.max() <= 1
    for r, im, p in zip(recon, images, psnrs):
        assert abs(metrics.psnr(r, im) - p) < 1e-3
    # one image at a time gives the same latents as chunked fitting
    one, _ = inference.fit_latents(meta, params, images[3])
    np.testing.assert_allclose(one[0], latents[3], rtol=1e-5, atol=1e-6)
    # zero steps = zero latents
    z0, _ = inference.fit_latents(meta, params, images, steps=0)
    assert np.all(z0 == 0)


def test_bad_inputs():
    with pytest.raises(ValueError, match="latent_dim"):
        tiny(latent_dim=0)
    with pytest.raises(ValueError, match="inner_steps"):
        tiny(inner_steps=-1)
    with pytest.raises(ValueError, match="axis"):
        ASMR((32, 32), 3, bases=(2, 4), widths=8)  # bases multiply to 8, not 32
    meta = tiny()
    params = init(meta, 0)
    with pytest.raises(ValueError, match="expects"):
        inference.fit_latents(meta, params, np.zeros((2, 16, 16, 3), np.float32))
    nan = smooth_images(2)
    nan[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        inference.fit_latents(meta, params, nan)
    with pytest.raises(ValueError, match=r"\[n, 6\]"):
        inference.render_latents(meta, params, np.zeros((2, 5)))
    with pytest.raises(ValueError, match="lr_scale"):
        functa.MetaModel(SIREN((64,), 1, widths=(8,)), 4, lr_scale=float("nan"))
    with pytest.raises(ValueError, match="at least one"):
        functa.MetaModel(SIREN((64,), 1, widths=(8,)), 4, modulate_shift=False)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # orbax reader of the damaged file
def test_checkpoint_round_trip_and_bad_checkpoints(tmp_path):
    meta = tiny()
    params = init(meta, 9)
    path = tmp_path / "meta"
    checkpoint.export(path, meta, params)
    meta2, params2 = checkpoint.load(path)
    assert meta2 == meta
    for a, b in zip(jax.tree.leaves(params2), jax.tree.leaves(params)):
        np.testing.assert_array_equal(a, b)
    # an existing checkpoint is never replaced silently
    before = open(path / checkpoint.META_JSON).read()
    with pytest.raises(FileExistsError):
        checkpoint.export(path, meta, init(meta, 10))
    assert open(path / checkpoint.META_JSON).read() == before
    _, again = checkpoint.load(path)
    np.testing.assert_array_equal(again["meta_sgd_lr"], params["meta_sgd_lr"])

    with pytest.raises(ValueError, match="meta-learning checkpoint"):
        checkpoint.load(tmp_path / "missing")
    fit_ckpt = tmp_path / "fit"
    io.save_model(fit_ckpt, meta.model, params["model"])
    with pytest.raises(ValueError, match="single-model checkpoint"):
        checkpoint.load(fit_ckpt)
    corrupt = tmp_path / "corrupt"
    os.makedirs(corrupt)
    (corrupt / checkpoint.META_JSON).write_text("{not json")
    with pytest.raises(ValueError, match="corrupt"):
        checkpoint.load(corrupt)
    foreign = tmp_path / "foreign"
    os.makedirs(foreign)
    (foreign / checkpoint.META_JSON).write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="format"):
        checkpoint.load(foreign)
    # damaged parameter files
    broken = tmp_path / "broken"
    checkpoint.export(broken, meta, params)
    for root, _, files in os.walk(broken / "params"):
        for f in files:
            with open(os.path.join(root, f), "wb") as fh:
                fh.write(b"garbage")
    with pytest.raises(ValueError, match="cannot restore"):
        checkpoint.load(broken)
    # a checkpoint of another architecture does not load into the recorded one
    mismatch = tmp_path / "mismatch"
    checkpoint.export(mismatch, meta, params)
    other = tiny(latent_dim=7)
    checkpoint.write_meta_json(mismatch, other)
    with pytest.raises(ValueError, match="cannot restore"):
        checkpoint.load(mismatch)


def test_outer_gradient_is_clipped_to_global_norm():
    import optax

    params = {"a": jnp.zeros(2), "b": jnp.zeros(1)}
    grads = {"a": jnp.array([30.0, 0.0]), "b": jnp.array([40.0])}  # global norm 50
    for clip, scale in ((1.0, 1.0 / 50.0), (None, 1.0)):
        opt = optimize.make_optimizer(1e-3, clip=clip)
        _, state = opt.update(grads, opt.init(params), params)
        adam = [s for s in jax.tree.leaves(state, is_leaf=lambda s: isinstance(s, optax.ScaleByAdamState))
                if isinstance(s, optax.ScaleByAdamState)][0]
        np.testing.assert_allclose(adam.mu["a"], 0.1 * scale * np.array([30.0, 0.0]), rtol=1e-6)
        np.testing.assert_allclose(adam.mu["b"], 0.1 * scale * np.array([40.0]), rtol=1e-6)
    with pytest.raises(ValueError, match="clip norm"):
        optimize.make_optimizer(1e-3, clip=0.0)


def test_outer_rate_cosine_decays_from_lr_to_lr_over_100():
    params = {"a": jnp.zeros(3)}
    grads = {"a": jnp.ones(3)}  # a constant gradient: each Adam step moves by about the rate
    opt = optimize.make_optimizer(1e-2, clip=None, decay_steps=10)
    state, moves = opt.init(params), []
    for _ in range(11):
        upd, state = opt.update(grads, state, params)
        moves.append(float(-upd["a"][0]))
    np.testing.assert_allclose(moves[0], 1e-2, rtol=1e-4)
    np.testing.assert_allclose(moves[5], 1e-2 * (0.01 + 0.99 * 0.5), rtol=1e-4)  # half way down the cosine
    np.testing.assert_allclose(moves[10], 1e-4, rtol=1e-4)
    assert all(a > b for a, b in zip(moves[:10], moves[1:]))
    constant = optimize.make_optimizer(1e-2, clip=None)
    upd, _ = constant.update(grads, constant.init(params), params)
    np.testing.assert_allclose(-upd["a"], 1e-2, rtol=1e-4)
    with pytest.raises(ValueError, match="decay_steps must be >= 1.*got 0"):
        optimize.make_optimizer(1e-3, decay_steps=0)
