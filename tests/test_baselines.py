"""The paper's other baselines: MFN, WIRE, KiloNeRF, LoE, Instant-NGP."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from asmr_jax import fit, macs, metrics, models
from asmr_jax.coords import grid_coords
from asmr_jax.kilonerf import KiloNeRF
from asmr_jax.loe import LoE
from asmr_jax.mfn import MFN
from asmr_jax.ngp import InstantNGP
from asmr_jax.wire import WIRE

SHAPE = (16, 12)

SMALL = {
    "fourier": MFN(SHAPE, 3, width=24, layers=3),
    "gabor": MFN(SHAPE, 3, width=24, layers=3, filter="gabor"),
    "wire": WIRE(SHAPE, 3, widths=(20, 20)),
    "kilonerf": KiloNeRF(SHAPE, 3, grid=4, widths=(8, 8)),
    "kilonerf-uneven": KiloNeRF((15, 13), 3, grid=4, widths=(8, 8)),
    "loe": LoE((16, 16), 3, widths=(16, 16), tiles=(2, 2, 4)),  # digits grid (prod(tiles) = 16)
    "loe-uneven": LoE(SHAPE, 3, widths=(16, 16), tiles=(2, 2, 4)),
    "ngp": InstantNGP(SHAPE, 3, levels=4, features=2, log2_table=6, base_resolution=2, growth=2.0, widths=(16,)),
}
# what each family needs to learn in 20 Adam steps (the papers' rates: MFN and NGP 1e-2, WIRE 5e-3)
LR = {"fourier": 1e-2, "gabor": 1e-2, "wire": 5e-3, "kilonerf": 1e-3, "kilonerf-uneven": 1e-3, "loe": 1e-3,
      "loe-uneven": 1e-3, "ngp": 1e-2}


def target(shape, channels=3):
    yy, xx = np.meshgrid(np.linspace(0, 1, shape[0]), np.linspace(0, 1, shape[1]), indexing="ij")
    return np.stack([0.5 + 0.4 * np.sin(5 * xx + 3 * c * yy) for c in range(channels)], -1).astype(np.float32)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_apply_equals_render_on_every_point_and_counts(name):
    model = SMALL[name]
    params = model.init(jax.random.key(0))
    out = model.render(params)
    assert out.shape == model.shape + (3,)
    per_point = model.apply(params, grid_coords(model.shape)).reshape(out.shape)
    np.testing.assert_allclose(np.asarray(per_point), np.asarray(out), rtol=1e-4, atol=1e-4)
    assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params)) == model.num_params()
    assert models.from_config(model.config()) == model
    cost = macs.count(model)
    assert 0 < cost.paper_macs <= model.num_params() + model.ndim * model.num_params()
    # shifts reach the output
    shifts = [jnp.full(w, 0.1) for w in model.shift_widths]
    assert not np.allclose(np.asarray(model.render(params, shifts)), np.asarray(out))


@pytest.mark.parametrize("name", sorted(SMALL))
def test_twenty_step_fit_raises_psnr(name):
    model = SMALL[name]
    signal = target(model.shape)
    key = jax.random.key(0)
    start = metrics.psnr(np.clip(np.asarray(model.render(fit.init_params(model, key, signal))), 0, 1), signal)
    res = fit.fit(model, signal, 20, lr=LR[name], key=key, progress=False, keep_best=False)
    assert res.psnr > start + 1.0, (start, res.psnr)


@pytest.mark.parametrize("name", ["gabor", "wire", "kilonerf", "loe", "ngp"])
def test_vmap_over_parameter_sets_matches_a_loop(name):
    model = SMALL[name]
    stacked = jax.vmap(model.init)(jax.random.split(jax.random.key(1), 3))
    batched = jax.jit(jax.vmap(model.render))(stacked)
    for i in range(3):
        one = jax.tree.map(lambda x, i=i: x[i], stacked)
        np.testing.assert_allclose(np.asarray(batched[i]), np.asarray(model.render(one)), rtol=1e-5, atol=1e-5)


def test_kilonerf_cells_are_independent():
    model = SMALL["kilonerf"]
    params = model.init(jax.random.key(0))
    out = np.asarray(model.render(params))
    bumped = jax.tree.map(lambda x: x.at[5].add(0.5), params)  # cell 5 = row 1, column 1 of the 4x4 grid
    diff = np.any(np.abs(np.asarray(model.render(bumped)) - out) > 0, axis=-1)
    changed = np.argwhere(diff)
    assert changed.size and changed[:, 0].min() >= 4 and changed[:, 0].max() < 8
    assert changed[:, 1].min() >= 3 and changed[:, 1].max() < 6


def test_loe_selects_experts_by_the_coordinates_mixed_radix_digits():
    model = SMALL["loe"]  # tiles (2, 2, 4) on 16 samples: x = 8 * d0 + 4 * d1 + d2
    x = np.array([[0, 0], [9, 0], [0, 13], [7, 15]])
    for layer, digits in enumerate([x // 8, x // 4 % 2, x % 4]):
        want = digits[:, 0] * model.tiles[layer] + digits[:, 1]
        np.testing.assert_array_equal(np.asarray(model.expert_index(x, layer)), want)
    # the product of the tiles is the signal size, the paper's rule: LoE-4 on Cameraman
    paper = LoE((512, 512), 1, widths=(31,) * 3, tiles=(4, 8, 8, 2))
    assert math.prod(paper.tiles) == 512 and abs(paper.num_params() - 126_000) < 5_000


def test_hash_grid_without_collisions_equals_a_dense_grid_lookup():
    from scipy.ndimage import map_coordinates

    model = InstantNGP((20, 20), 1, levels=3, features=2, log2_table=12, base_resolution=3, growth=2.0,
                       widths=(8,))
    assert model.table_sizes == tuple((n + 1) ** 2 for n in model.resolutions)  # all dense
    params = model.init(jax.random.key(0))
    params["tables"] = [jax.random.normal(k, t.shape) for k, t in
                        zip(jax.random.split(jax.random.key(1), 3), params["tables"])]
    u = np.random.default_rng(0).uniform(0, 1, (50, 2)).astype(np.float32)
    u[0], u[1] = 0.0, 1.0
    enc = np.asarray(model.encode(params, jnp.asarray(u)))
    for level, n in enumerate(model.resolutions):
        grid = np.asarray(params["tables"][level]).reshape(n + 1, n + 1, 2)
        for f in range(2):
            want = map_coordinates(grid[..., f], (u * n).T, order=1)
            np.testing.assert_allclose(enc[:, 2 * level + f], want, rtol=1e-5, atol=1e-6)


def test_hash_index_is_the_papers_spatial_hash():
    model = InstantNGP((64, 64), 1, levels=2, log2_table=6, base_resolution=20, growth=2.0, widths=(8,))
    assert model.table_sizes == (64, 64)  # both levels hashed
    v = np.random.default_rng(0).integers(0, 41, (100, 2))
    got = np.asarray(model.vertex_index(jnp.asarray(v), 1))
    want = [((int(a) * 1) ^ (int(b) * 2654435761 % 2**32)) % 2**32 % 64 for a, b in v]
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("kind", ["mfn", "wire", "kilonerf", "loe", "ngp"])
def test_cli_fits_every_baseline(kind, tmp_path, capsys):
    from asmr_jax.data import write_png
    from meta.commands import main

    write_png(tmp_path / "t.png", target((16, 16)))
    argv = ["fit", str(tmp_path / "t.png"), "--model", kind, "--width", "16", "--depth", "3", "--steps", "5",
            "--lr", "1e-3", "--out", str(tmp_path / "ckpt")]
    assert main(argv) == 0, capsys.readouterr()
    out = capsys.readouterr().out
    assert kind in out and (tmp_path / "ckpt").exists()
