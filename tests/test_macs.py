import jax
import numpy as np
import pytest

from asmr_jax import macs, models


@pytest.mark.parametrize(
    "kind, kw, params, paper_mac",
    [
        ("siren", dict(depth=4), 132_609, 132_609),
        ("siren", dict(depth=3), 66_817, 66_817),
        ("asmr", dict(bases=(4, 4, 4, 8)), 134_145, 1353.75),  # the official profiler's number
        ("asmr", dict(bases=(8, 8, 8)), 67_841, 1289.5),
    ],
)
def test_paper_counts_cameraman(kind, kw, params, paper_mac):
    model = models.build(kind, (512, 512), 1, width=256, **kw)
    cost = macs.count(model)
    assert cost.params == params == model.num_params()
    assert cost.paper_macs == pytest.approx(paper_mac)


def test_factorized_render_cost_asmr4():
    cost = macs.count(models.build("asmr", (512, 512), 1, width=256, bases=(4, 4, 4, 8)))
    # readout K*C -> 2*K*C: 1353.75 - 257 + 513
    assert cost.render_macs == pytest.approx(1609.75)
    # angle addition on levels 1-2, factorized output: 2 * 256 * (32 + 272 + 4160) / 512**2
    assert cost.transcendentals == pytest.approx(2 * 256 * (32 + 272 + 4160) / 512**2)
    siren = macs.count(models.build("siren", (512, 512), 1, width=256, depth=4))
    assert siren.transcendentals == 768
    assert 75 < (siren.render_macs + siren.transcendentals) / (cost.render_macs + cost.transcendentals) < 85


@pytest.mark.parametrize(
    "kind, shape, kw",
    [
        ("asmr", (128, 128), dict(bases=(4, 4, 8))),
        ("asmr", (64, 64), dict(bases=((4, 4, 4), (2, 4, 8)))),
        ("siren", (128, 64), dict(depth=3)),
    ],
)
def test_analytic_matches_xla(kind, shape, kw):
    model = models.build(kind, shape, 3, width=64, **kw)
    params = model.init(jax.random.key(0))
    analytic = macs.count(model)
    xla = macs.xla_render_cost(model, params)
    # XLA sees the polynomial sines as flops, and also counts elementwise adds/multiplies
    expected = analytic.render_macs + analytic.sine_flops / 2
    assert expected <= xla.render_macs * 1.01
    assert xla.render_macs <= expected * 1.15
    assert xla.transcendentals == 0  # no libm sine left in the compiled render


def test_bjontegaard_deltas_of_hand_computed_curves():
    from asmr_jax import metrics

    rates = np.array([0.1, 0.2, 0.4, 0.8])
    psnr = np.array([24.0, 27.0, 29.5, 31.0])
    # the same PSNRs at half the rate: log10 rate shifts by log10(0.5) everywhere -> -50 %
    assert metrics.bd_rate(rates, psnr, rates / 2, psnr) == pytest.approx(-50.0, abs=1e-9)
    # +1 dB at every rate -> +1 dB
    assert metrics.bd_psnr(rates, psnr, rates, psnr + 1) == pytest.approx(1.0, abs=1e-12)
    # two straight lines in log10 rate: PSNR = 10 x + c. The curve's overlap with the reference
    # is x in [log10 0.2, log10 0.8]; with c_ref = 30, c = 31: mean gap 1 dB; the rates at a
    # PSNR differ by 10^(-1/10) - 1 = -20.57 %
    x = np.log10(rates)
    ref, cur = 10 * x + 30, 10 * x[1:] + 31
    assert metrics.bd_psnr(rates, ref, rates[1:], cur) == pytest.approx(1.0, abs=1e-9)
    assert metrics.bd_rate(rates, ref, rates[1:], cur) == pytest.approx((10 ** -0.1 - 1) * 100, abs=1e-9)
    with pytest.raises(ValueError, match="do not overlap"):
        metrics.bd_psnr(rates, psnr, rates * 100, psnr)
    with pytest.raises(ValueError, match="must rise strictly"):
        metrics.bd_rate(rates, psnr[::-1], rates, psnr)
    # restricted to rates 0.2..0.4: curve 20 x + 31 against 10 x + 30 -> mean of 10 x + 1 there
    lo, hi = np.log10(0.2), np.log10(0.4)
    assert metrics.bd_psnr(rates, ref, rates, 20 * x + 31, rate_range=(0.2, 0.4)) == pytest.approx(
        10 * (lo + hi) / 2 + 1, abs=1e-9)
    assert metrics.bd_psnr(rates, ref, rates, 20 * x + 31) == pytest.approx(10 * x.mean() + 1, abs=1e-9)
    with pytest.raises(ValueError, match="rate_range"):
        metrics.bd_psnr(rates, ref, rates[1:], cur, rate_range=(0.4, 0.2))
    # the curve's value at a rate, on the same interpolant; None outside its rates
    assert metrics.psnr_at(rates, ref, 0.3) == pytest.approx(10 * np.log10(0.3) + 30, abs=1e-9)
    assert metrics.psnr_at(rates, ref, 0.05) is None and metrics.psnr_at(rates, ref, 1.0) is None
