"""Spatial latents: a grid of latent vectors, each mapped to its cell's modulations.

Every path is checked against a direct per-pixel implementation: each pixel's shifts (and
scales) gathered from its cell, then the network evaluated point by point.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from asmr_jax import coords as coords_lib
from asmr_jax import sharding
from asmr_jax.asmr import ASMR
from asmr_jax.siren import SIREN
from meta import functa, optimize

SHAPE = (8, 8)
CASES = [  # (kind, bases, grid): ASMR cells of level 0 and 1 of bases (2, 2, 2); SIREN grids
    ("asmr", (2, 2, 2), 2),
    ("asmr", (2, 2, 2), 4),
    ("asmr", ((2, 2, 2), (2, 4, 1)), (4, 8)),
    ("siren", None, 2),
    ("siren", None, (4, 2)),
]


def spatial_meta(kind, bases, grid, latent_dim=None, kernel=3, **kw):
    net = ASMR(SHAPE, 3, bases=bases, widths=8) if kind == "asmr" else SIREN(SHAPE, 3, widths=(8, 8))
    cells = int(np.prod(grid)) * (1 if np.ndim(grid) else int(grid))
    return functa.MetaModel(net, latent_dim or 3 * max(cells, 1), spatial=grid, spatial_kernel=kernel, **kw)


def random_params(meta, seed=0):
    """Init, then every leaf jittered so that no zero bias hides a wrong broadcast."""
    params = meta.init(jax.random.key(seed))
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    leaves = [x + 0.05 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
    return jax.tree.unflatten(tree, leaves)


def per_pixel_render(meta, params, latent):
    """The field at every pixel, point by point: ``[*shape, C]``."""
    pts = coords_lib.grid_coords(meta.shape).reshape(-1, len(meta.shape))
    return functa.point_values(meta, params, latent, pts).reshape(meta.shape + (meta.channels,))


def per_pixel_mse(meta, params, latents, images):
    preds = jax.vmap(lambda z: per_pixel_render(meta, params, z))(latents)
    return jnp.mean((preds - images) ** 2)


def images(n, seed=0):
    return np.random.default_rng(seed).uniform(size=(n, *SHAPE, 3)).astype(np.float32)


@pytest.mark.parametrize("kind,bases,grid", CASES)
@pytest.mark.parametrize("scale", [False, True])
def test_render_equals_per_point_path(kind, bases, grid, scale):
    meta = spatial_meta(kind, bases, grid, modulate_scale=scale)
    params = random_params(meta)
    latents = 0.3 * jax.random.normal(jax.random.key(3), (2, meta.latent_dim))
    render = jax.jit(functa.render, static_argnums=0)  # one compile per shape instead of one per eager op
    reference = jax.jit(per_pixel_render, static_argnums=0)
    batched = render(meta, params, latents)  # [2, 8, 8, 3]
    for z, out in zip(latents, batched):
        want = reference(meta, params, z)
        np.testing.assert_allclose(render(meta, params, z), want, atol=5e-5, rtol=1e-4)
        np.testing.assert_allclose(out, want, atol=5e-5, rtol=1e-4)


def test_cells_are_local_with_a_1x1_map():
    """With kernel 1, changing one cell's latent changes only that cell's pixels."""
    meta = spatial_meta("asmr", (2, 2, 2), 4, kernel=1)
    params = random_params(meta)
    z = jax.random.normal(jax.random.key(0), (meta.latent_dim,))
    grid = np.array(functa.cell_latents(meta, z))
    grid[1, 2] += 1.0
    diff = np.abs(functa.render(meta, params, jnp.asarray(grid.reshape(-1))) - functa.render(meta, params, z))
    changed = diff.max(-1) > 1e-6  # [8, 8]
    want = np.zeros((8, 8), bool)
    want[2:4, 4:6] = True
    np.testing.assert_array_equal(changed, want)


@pytest.mark.parametrize("kind,bases,grid", [CASES[1], CASES[3]])
def test_inner_loop_and_outer_gradient_equal_the_per_pixel_implementation(kind, bases, grid):
    meta = spatial_meta(kind, bases, grid, inner_steps=2)
    params = random_params(meta)
    imgs = jnp.asarray(images(2))
    lr = functa.clipped_lr(params)

    def reference_fit(p):
        phi = jnp.zeros((2, meta.latent_dim))
        for _ in range(meta.inner_steps):
            g = jax.vmap(jax.grad(lambda z, im: per_pixel_mse(meta, p, z[None], im[None])))(phi, imgs)
            phi = phi - coords_lib.with_rank(lr, 2) * g
        return phi

    # jitted: one compile per function instead of one per eager op
    np.testing.assert_allclose(jax.jit(functa.inner_loop, static_argnums=0)(meta, params, imgs),
                               jax.jit(reference_fit)(params), atol=1e-5)

    def reference_outer(p):
        return per_pixel_mse(meta, p, reference_fit_with(p), imgs)

    def reference_fit_with(p):  # the same fit, rates taken from p (they are meta-learned)
        phi, rates = jnp.zeros((2, meta.latent_dim)), functa.clipped_lr(p)
        for _ in range(meta.inner_steps):
            g = jax.vmap(jax.grad(lambda z, im: per_pixel_mse(meta, p, z[None], im[None])))(phi, imgs)
            phi = phi - coords_lib.with_rank(rates, 2) * g
        return phi

    (loss, _), grads = jax.jit(jax.value_and_grad(functa.outer_loss, argnums=1, has_aux=True),
                               static_argnums=0)(meta, params, imgs)
    want_loss, want_grads = jax.jit(jax.value_and_grad(reference_outer))(params)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        w = dict(jax.tree_util.tree_leaves_with_path(want_grads))[path]
        scale = float(np.max(np.abs(w)))  # float32 second-order sums: compare relative to the leaf's size
        np.testing.assert_allclose(g, w, rtol=1e-3, atol=1e-3 * scale, err_msg=jax.tree_util.keystr(path))


def test_sharded_meta_step_equals_unsharded():
    meta = spatial_meta("asmr", (2, 2, 2), 4)
    params = meta.init(jax.random.key(0))
    opt = optimize.make_optimizer(1e-3)
    imgs = jnp.asarray(images(8))
    plain = optimize.make_meta_step(meta, opt)
    mesh = sharding.data_mesh(jax.devices()[:4])
    sharded = optimize.make_meta_step(meta, opt, mesh)
    p1, _, m1 = plain(params, opt.init(params), imgs)
    p2, _, m2 = sharded(sharding.replicate(params, mesh), sharding.replicate(opt.init(params), mesh), imgs)
    np.testing.assert_allclose(m1["loss"], m2["loss"], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_config_round_trip_and_sizes():
    meta = spatial_meta("asmr", (2, 2, 2), (4, 4), latent_dim=32)
    assert meta.spatial == (4, 4) and meta.cell_dim == 2
    assert meta.map_shape == (3, 3, 2, meta.shift_dim)
    again = functa.MetaModel.from_config(meta.config())
    assert again == meta
    params = meta.init(jax.random.key(0))
    assert sum(np.size(x) for x in jax.tree.leaves(params)) == meta.num_params()
    assert params["meta_sgd_lr"].shape == (32,)  # one rate per latent value


@pytest.mark.parametrize("kwargs,match", [
    (dict(kind="asmr", grid=3), r"latent grid of \(3, 3\) cells matches no coarse level"),
    (dict(kind="asmr", grid=8), r"no coarse level"),  # the finest level is not a coarse one
    (dict(kind="siren", grid=3), r"must divide the signal's shape \(8, 8\)"),
    (dict(kind="asmr", grid=2, latent_dim=10), r"latent_dim 10 is not a multiple of the 4 cells"),
    (dict(kind="asmr", grid=2, kernel=2), r"spatial_kernel must be an odd int"),
    (dict(kind="asmr", grid=(2, 2, 2)), r"spatial must be a positive int or 2 positive ints"),
    (dict(kind="asmr", grid=0), r"spatial must be a positive int"),
])
def test_bad_spatial_settings_are_refused(kwargs, match):
    kind = kwargs.pop("kind")
    grid = kwargs.pop("grid")
    with pytest.raises(ValueError, match=match):
        spatial_meta(kind, (2, 2, 2), grid, **kwargs)


@pytest.mark.parametrize("grid,kernel", [(None, 1), (4, 3)])
def test_hidden_latent_map_is_a_silu_mlp_after_the_cell_convolution(grid, kernel):
    """``latent_hidden``: the first layer (the grid convolution for spatial latents), SiLU,
    then per-cell affine layers; checked against loops over cells and kernel taps."""
    net = ASMR(SHAPE, 3, bases=(2, 2, 2), widths=8)
    meta = functa.MetaModel(net, 48, spatial=grid, spatial_kernel=kernel, latent_hidden=(5, 7), modulate_scale=True)
    params = random_params(meta)
    assert [np.shape(layer["w"]) for layer in params["latent_to_modulation"]["hidden"]] == meta.map_shapes[:2]
    assert sum(np.size(x) for x in jax.tree.leaves(params)) == meta.num_params()
    assert functa.MetaModel.from_config(meta.config()) == meta
    z = np.asarray(0.5 * jax.random.normal(jax.random.key(2), (48,)))
    m = jax.tree.map(np.asarray, params["latent_to_modulation"])
    (l1, l2), out = m["hidden"], m
    if grid is None:
        h = z @ l1["w"] + l1["b"]
    else:
        cells = z.reshape(grid, grid, -1)
        h = np.zeros((grid, grid, 5))
        r = kernel // 2
        for i in range(grid):
            for j in range(grid):
                h[i, j] = l1["b"]
                for a in range(kernel):
                    for b in range(kernel):
                        y, x = i + a - r, j + b - r
                        if 0 <= y < grid and 0 <= x < grid:  # SAME: zero outside the grid
                            h[i, j] += cells[y, x] @ l1["w"][a, b]
    silu = lambda v: v / (1 + np.exp(-v))  # noqa: E731
    flat = silu(silu(h) @ l2["w"] + l2["b"]) @ out["w"] + out["b"]
    shifts, scales = functa.latent_to_modulations(meta, params, jnp.asarray(z))
    w = net.shift_widths
    got = np.concatenate([np.concatenate([sc - 1.0, sh], -1) for sc, sh in zip(scales, shifts)], -1)
    assert got.shape[-1] == 2 * sum(w)
    np.testing.assert_allclose(got, flat, rtol=1e-5, atol=1e-5)
    # and the render still equals the per-point path
    z = jnp.asarray(z)
    np.testing.assert_allclose(functa.render(meta, params, z), per_pixel_render(meta, params, z), atol=5e-5, rtol=1e-4)
