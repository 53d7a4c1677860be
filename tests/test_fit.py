import jax
import numpy as np
import pytest

from asmr_jax import data, fit, models


@pytest.fixture(scope="module")
def crop():
    return data.crop(data.bundled_image("camera"), 32).data  # real pixels, [32, 32, 1]


def test_short_fit_raises_psnr(crop):
    model = models.build("asmr", (32, 32), 1, width=32, bases=(4, 8))
    before = fit.fit(model, crop, 1, progress=False, lr=1e-12)
    after = fit.fit(model, crop, 200, lr=1e-3, progress=False)
    assert after.psnr > before.psnr + 5 and after.psnr > 25
    assert after.ssim is not None and 0 < after.ssim <= 1
    assert after.history[-1][0] == 200


def test_sampled_fit_raises_psnr_and_visits_every_point(crop):
    sampler = fit.BlockSampler.for_batch((32, 30), 64)
    perms = sampler.epoch(jax.random.key(0))
    seen = np.concatenate([np.asarray(sampler.batch(perms, j)[0])[np.asarray(sampler.batch(perms, j)[1])]
                           for j in range(sampler.steps_per_epoch)])
    assert len(seen) == 32 * 30 and len({tuple(c) for c in seen}) == 32 * 30
    model = models.build("siren", (32, 32), 1, width=32, depth=3)
    res = fit.fit(model, crop, 300, lr=1e-3, batch_size=128, progress=False)
    assert res.psnr > 20


def test_fit_step_does_not_recompile(crop):
    model = models.build("asmr", (32, 32), 1, width=8, bases=(4, 8))
    tx = fit.make_optimizer(1e-3)
    params = model.init(jax.random.key(0))
    state = tx.init(params)
    target = jax.numpy.asarray(crop)
    params, state, _, best = fit.run_full_batch(model, tx, params, state, target, 3, fit.start_best(params), 0)
    size = fit.run_full_batch._cache_size()
    params, state, losses, best = fit.run_full_batch(model, tx, params, state, target + 0.0, 3, best, 3)
    assert fit.run_full_batch._cache_size() == size
    assert losses.shape == (3,)


@pytest.mark.parametrize(
    "signal, match",
    [
        (np.full((8, 8, 1), np.nan, np.float32), "non-finite"),
        (np.zeros((8, 9, 1), np.float32), "shape"),
        (np.zeros((8, 8, 3), np.float32), "shape"),
    ],
)
def test_bad_signals(signal, match):
    model = models.build("asmr", (8, 8), 1, width=8, bases=(2, 4))
    with pytest.raises(ValueError, match=match):
        fit.fit(model, signal, 2, progress=False)


def test_one_sample_signal_rejected():
    model = models.build("siren", (1,), 1, width=8, depth=2)
    with pytest.raises(ValueError, match="fewer than 2 samples"):
        fit.fit(model, np.zeros((1, 1), np.float32), 2, progress=False)


def test_init_params_centres_output_on_signal_mean(crop):
    model = models.build("asmr", (32, 32), 1, width=16, bases=(4, 8))
    params = fit.init_params(model, jax.random.key(0), crop)
    np.testing.assert_allclose(params["layers"][-1]["b"], crop.reshape(-1, 1).mean(0), rtol=1e-6)
    plain = model.init(jax.random.key(0))
    for a, b in zip(jax.tree.leaves(params["layers"][:-1]), jax.tree.leaves(plain["layers"][:-1])):
        np.testing.assert_array_equal(a, b)


def test_keep_best_returns_the_best_parameters_seen(crop):
    model = models.build("asmr", (32, 32), 1, width=16, bases=(4, 8))
    kw = dict(lr=3e-2, progress=False, chunk=25)  # a rate at which the PSNR oscillates
    last = fit.fit(model, crop, 100, keep_best=False, **kw)
    best = fit.fit(model, crop, 100, **kw)
    assert last.best_step == 100 and 1 <= best.best_step < 100
    assert best.psnr > last.psnr
    # the kept parameters are exactly those after best_step updates
    again = fit.fit(model, crop, best.best_step, keep_best=False, **kw)
    assert again.psnr == pytest.approx(best.psnr, abs=1e-3)
    assert max(p for _, p in best.history) <= best.psnr + 1e-3  # no chunk end was better


def test_a_second_fit_with_the_same_config_does_not_trace_again():
    from asmr_jax import models
    from asmr_jax.siren import SIREN

    model = SIREN((16, 16), 1, widths=(8,))
    img = np.random.default_rng(0).uniform(size=(16, 16, 1)).astype(np.float32)
    fit.fit(model, img, 10, lr=1e-3, progress=False, chunk=5)
    runs, renders = fit.run_full_batch._cache_size(), models.jitted_render(model)._cache_size()
    fit.fit(model, img * 0.5, 10, lr=1e-3, progress=False, chunk=5, key=jax.random.key(1))
    assert fit.run_full_batch._cache_size() == runs and models.jitted_render(model)._cache_size() == renders
    fit.fit(model, img, 10, lr=2e-3, progress=False, chunk=5)  # another optimizer setting: one more entry
    assert fit.run_full_batch._cache_size() == runs + 1
