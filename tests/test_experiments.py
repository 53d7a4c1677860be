"""Each paper-experiment script runs end to end in smoke mode and writes its results."""

import json
import math
import os
import sys
from types import SimpleNamespace

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from asmr_jax.fit import set_output_bias  # noqa: E402
from experiments import common, figures, table3_natural, table4_audio, table5_megapixel, video  # noqa: E402

SCRIPTS = [table3_natural, table4_audio, table5_megapixel, video, figures]


def _read(out, name):
    with open(os.path.join(out, f"{name}.json")) as f:
        payload = json.load(f)
    with open(os.path.join(out, f"{name}.md")) as f:
        md = f.read()
    return payload, md


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda m: m.__name__.split(".")[-1])
def test_config_builds_and_rejects_unknown(script):
    full, smoke = script.get_config(), script.get_config("smoke")
    assert full.keys() == smoke.keys()
    assert smoke["steps"] < full["steps"]
    with pytest.raises(ValueError, match="unknown config"):
        script.get_config("huge")


ALL_SCRIPTS = sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, "experiments"))
                     if f.endswith(".py") and f not in ("common.py", "codecs.py"))  # helpers, not scripts


@pytest.mark.parametrize("name", ALL_SCRIPTS)
def test_every_script_has_a_config_and_refuses_unknown_ones(name):
    import importlib

    script = importlib.import_module(f"experiments.{name}")
    assert isinstance(script.get_config(), dict) and script.get_config()
    with pytest.raises(ValueError, match="unknown config"):
        script.get_config("no-such-config")


def test_table3_smoke(tmp_path):
    payload = table3_natural.main(["--smoke", "--out", str(tmp_path)])
    saved, md = _read(tmp_path, "table3_natural")
    assert {r["model"] for r in saved["rows"]} == {"asmr", "siren", "ffn"}
    assert all(math.isfinite(r["psnr"]) and r["render_seconds"] > 0 for r in saved["rows"])
    params = [payload["summary"][k]["params"] for k in ("asmr", "siren", "ffn")]
    assert max(params) / min(params) < 1.3  # the modulators weigh more at the smoke width 16
    assert "| ASMR |" in md and "Paper" in md
    assert saved["summary"]["asmr"]["paper_macs"] < saved["summary"]["siren"]["paper_macs"]


def test_table3_contenders_match_params_at_paper_width():
    cfg = table3_natural.get_config()
    for shape in [(512, 768), (52, 78)]:
        params = [table3_natural.build(kind, shape, cfg).num_params() for kind in cfg["models"]]
        assert max(params) / min(params) < 1.02


def test_table3_target_shape_keeps_aspect_and_never_upscales():
    assert table3_natural.target_shape((300, 451), 10**6) == (300, 451)
    h, w = table3_natural.target_shape((512, 768), 64 * 96)
    assert h * w <= 64 * 96 and abs(w / h - 1.5) < 0.05


def test_table4_smoke(tmp_path):
    table4_audio.main(["--smoke", "--out", str(tmp_path)])
    saved, md = _read(tmp_path, "table4_audio")
    labels = [r["model"] for r in saved["rows"]]
    assert labels[0] == "ASMR" and labels[1].startswith("SIREN")
    assert all(math.isfinite(r["psnr"]) for r in saved["rows"])
    assert "Paper" in md


def test_audio_siren_is_a_siren_with_a_faster_first_layer(key):
    from asmr_jax import coords
    from asmr_jax.siren import SIREN

    fast = table4_audio.AudioSIREN((40,), 1, widths=(8, 8), first_w0=3000.0)
    plain = SIREN((40,), 1, widths=(8, 8))
    params = fast.init(key)
    assert fast.num_params() == plain.num_params()
    np.testing.assert_allclose(fast.render(params), fast.apply(params, coords.grid_coords((40,))), atol=1e-5)
    # first-layer pre-activation at the last sample is 100x the plain SIREN's
    w = params["layers"][0]["w"]
    np.testing.assert_allclose(fast.normalize(np.array([[39]])) @ w, 100 * (plain.normalize(np.array([[39]])) @ w))
    params = set_output_bias(params, np.array([0.25]))
    assert float(params["layers"][-1]["b"][0]) == 0.25


def test_table4_committed_clip_is_real_speech():
    cfg = table4_audio.get_config()
    clip = table4_audio.load_clip(cfg)  # the committed WAV: no espeak needed
    assert clip.shape == (32000, 1)
    assert 0.0 <= clip.min() and clip.max() <= 1.0
    assert np.std(clip) > 0.02  # not silence
    assert os.path.getsize(cfg["wav"]) < 200_000


def test_table4_missing_espeak_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(table4_audio.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="apt-get install -y espeak-ng"):
        table4_audio.synthesize(str(tmp_path / "x.wav"))
    assert not (tmp_path / "x.wav").exists()


def test_table5_smoke(tmp_path):
    table5_megapixel.main(["--smoke", "--out", str(tmp_path)])
    saved, md = _read(tmp_path, "table5_megapixel")
    assert [f["model"] for f in saved["fits"]] == ["ASMR", "SIREN"]
    (render,) = saved["renders"]
    assert render["ran"] and render["finite"] and render["shape"] == [256, 256, 3]
    assert render["max_rss_mb"] > 0 and render["xla_gb"] > 0


def test_table5_render_refused_above_memory_limit():
    r = table5_megapixel.render_child(64, (4, 4, 4), 8, 1, max_gb=1e-6)
    assert r["ran"] is False and "limit" in r["reason"]


def test_video_smoke(tmp_path):
    video.main(["--smoke", "--out", str(tmp_path)])
    saved, _ = _read(tmp_path, "video")
    assert {(r["clip"], r["model"]) for r in saved["rows"]} == {
        ("gif", "ASMR"),
        ("gif", "SIREN"),
        ("pan", "ASMR"),
        ("pan", "SIREN"),
    }
    assert all(len(r["shape"]) == 3 for r in saved["rows"])


def test_pan_video_moves_over_the_photo():
    clip = video.pan_video("astronaut", 32, frames=3, size=8, step=2)
    assert clip.shape == (3, 8, 8, 3)
    np.testing.assert_allclose(clip[1, :-2, :-2], clip[0, 2:, 2:])  # frame t+1 is frame t shifted by `step`
    with pytest.raises(ValueError, match="pan_source"):
        video.pan_video("astronaut", 16, frames=8, size=8, step=2)


def test_figures_smoke(tmp_path):
    figures.main(["--smoke", "--out", str(tmp_path)])
    saved, _ = _read(tmp_path, "figures")
    for png in ("fig2_mac_params.png", "fig3_mac_psnr.png"):
        with open(tmp_path / png, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    by = {(p["kind"], p["width"], p["depth"]): p for p in saved["fig2"]}
    # Figure 2's claims: SIREN's MACs grow with depth, ASMR's stay two orders lower
    assert by[("siren", 256, 7)]["paper_macs"] > 2 * by[("siren", 256, 3)]["paper_macs"]
    assert all(by[("asmr", 256, d)]["paper_macs"] < by[("siren", 256, d)]["paper_macs"] / 25 for d in range(3, 8))
    assert abs(by[("asmr", 256, 4)]["paper_macs"] - 1353.75) < 1e-6  # the paper's Cameraman ASMR-4


def test_figure_bases_multiply_to_the_size():
    for depth in range(2, 8):
        b = figures.figure_bases(512, depth)
        assert len(b) == depth and math.prod(b) == 512 and b[-1] == 8
    with pytest.raises(ValueError, match="multiple"):
        figures.figure_bases(100, 3, finest=8)


def test_write_results_is_atomic_and_json_safe(tmp_path):
    common.write_results(str(tmp_path), "x", {"a": np.float32(1.5), "b": float("nan"), "c": (1, 2)}, "# t")
    payload, md = _read(tmp_path, "x")
    assert payload["a"] == 1.5 and payload["b"] is None and payload["c"] == [1, 2]
    assert md == "# t\n"
    assert sorted(os.listdir(tmp_path)) == ["x.json", "x.md"]
    with pytest.raises(ValueError, match="--steps"):
        common.positive_int(0, "--steps")


def test_table2_smoke(tmp_path):
    from experiments import table2_cameraman

    assert table2_cameraman.main(["--smoke", "--out", str(tmp_path), "--seeds", "0,1", "--long-models",
                                  "ASMR-4"]) == 0
    saved, md = _read(tmp_path, "table2_cameraman_smoke")
    names = [r["name"] for r in saved["rows"]]
    assert sorted(set(names)) == ["ASMR-3", "ASMR-4", "SIREN-3", "SIREN-4"]
    long_rows = [r for r in saved["rows"] if r["steps"] == saved["long_steps"]]
    assert sorted((r["name"], r["seed"]) for r in long_rows) == [("ASMR-4", 0), ("ASMR-4", 1)]
    assert all(math.isfinite(r["psnr"]) and 1 <= r["best_step"] <= r["steps"] for r in saved["rows"])
    assert saved["render_ratios"]["smoke"]["ratio"] > 0 and saved["step_ratio"] > 0
    assert "median" in md and "ratio" in md


def test_sine_benchmark_smoke(tmp_path):
    from experiments import sine_benchmark

    assert sine_benchmark.main(["--smoke", "--out", str(tmp_path)]) == 0
    saved, md = _read(tmp_path, "sine_benchmark_smoke")
    assert [r["impl"] for r in saved["impls"]] == ["xla", "poly"]
    assert saved["max_render_diff"] < 1e-4  # the two sines give the same render
    for r in saved["impls"]:
        assert r["sin_1m_ms"] > 0 and r["small"]["ratio"] > 0 and math.isfinite(r["asmr_psnr"])
    assert "speed-up" in md


@pytest.mark.parametrize("impls", [pytest.param("poly", id="poly"),
                                   pytest.param("poly,xla", id="both", marks=pytest.mark.slow)])
def test_accelerator_check_smoke(tmp_path, impls):
    from experiments import accelerator_check

    assert accelerator_check.main(["--smoke", "--out", str(tmp_path), "--impls", impls]) == 0
    saved = json.loads((tmp_path / "accelerator_check_cpu_smoke.json").read_text())
    assert [r["impl"] for r in saved["impls"]] == impls.split(",")
    for r in saved["impls"]:
        for key, _ in accelerator_check.PARTS:
            assert r[f"asmr_{key}"] > 0 and r[f"siren_{key}"] > 0
    md = (tmp_path / "accelerator_check_cpu_smoke.md").read_text()
    assert "meta step ms" in md and ("poly/xla time ratio" in md) == ("xla" in impls)


def test_sine_choice_is_per_backend(monkeypatch):
    from asmr_jax import sine

    monkeypatch.setattr(sine, "IMPL", "auto")
    assert sine.implementation("cpu") == "poly" and sine.implementation("gpu") == "xla"
    assert sine.implementation("tpu") == "xla"
    monkeypatch.setattr(sine, "IMPL", "poly")
    assert sine.implementation("gpu") == "poly"


@pytest.mark.parametrize("rows", [pytest.param("functa", id="functa"),
                                  pytest.param(None, id="all", marks=pytest.mark.slow)])
def test_functa_comparison_smoke(tmp_path, rows):
    from experiments import functa_comparison

    argv = ["--smoke", "--out", str(tmp_path), "--workdir", str(tmp_path / "w")] + ["--rows", rows] * bool(rows)
    assert functa_comparison.main(argv) == 0
    saved = json.loads((tmp_path / "functa_comparison_smoke.json").read_text())
    settings = list(functa_comparison.ROWS) if rows is None else rows.split(",")
    assert {(r["setting"], r["model"]) for r in saved["rows"]} == {
        (s, m) for s in settings for m in ("asmr", "siren")}
    a = {r["setting"]: r for r in saved["rows"] if r["model"] == "asmr"}
    s = {r["setting"]: r for r in saved["rows"] if r["model"] == "siren"}
    for name in a:
        assert abs(a[name]["shared_params"] - s[name]["shared_params"]) / s[name]["shared_params"] < 0.05
    # a second call reuses the finished runs instead of training again
    mtime = os.path.getmtime(tmp_path / "w" / "functa-asmr-d8-s4-smoke" / "metrics.json")
    functa_comparison.main(argv)
    assert os.path.getmtime(tmp_path / "w" / "functa-asmr-d8-s4-smoke" / "metrics.json") == mtime


@pytest.mark.parametrize("only", [pytest.param("table2", id="table2"),
                                  pytest.param("table2,table4", id="table2+4", marks=pytest.mark.slow)])
def test_baselines_smoke(tmp_path, only):
    from experiments import baselines

    payload = baselines.main(["--smoke", "--out", str(tmp_path), "--only", only])
    assert {r["table"] for r in payload["rows"]} == set(only.split(","))
    if "table4" in only:
        assert {r["model"] for r in payload["rows"] if r["table"] == "table4"} == {"Instant-NGP", "KiloNeRF", "ASMR"}
    assert all(math.isfinite(r["psnr"]) for r in payload["rows"])
    saved, md = _read(str(tmp_path), "baselines")
    assert "Table 2 rows" in md and "LoE-4" in md and not (tmp_path / "baselines.partial.json").exists()
    # LoE's tiles multiply to the axis (the paper's rule); LoE-4 on 512 holds ~126K parameters
    assert math.prod(baselines.loe_tiles(512, 4)) == 512 and baselines.loe_tiles(32, 3) == (2, 4, 4)


@pytest.mark.parametrize("only", [pytest.param("asmr,ngp-features lr x10", id="two"),
                                  pytest.param(None, id="all", marks=pytest.mark.slow)])
def test_hybrid_meta_smoke_matches_shared_params(tmp_path, only):
    from experiments import hybrid_meta

    argv = ["--smoke", "--out", str(tmp_path), "--workdir", str(tmp_path / "w")] + ["--only", only] * bool(only)
    assert hybrid_meta.main(argv) == 0
    saved = json.loads((tmp_path / "hybrid_meta_smoke.json").read_text())
    rows = {r["backbone"]: r for r in saved["rows"]}
    # every backbone, trained or not, holds about the shared parameters of ASMR's functa
    named = hybrid_meta.contenders("lfw", hybrid_meta.get_config("smoke"))
    assert {"asmr", "siren", "ngp-mlp", "ngp-features lr x10"} <= {name for name, _ in named}
    assert set(rows) == ({name for name, _ in named} if only is None else set(only.split(",")))
    for r in rows.values():
        assert r["steps"] >= 1 and r["test_psnr_3"] is not None
    shared = {name: config.meta_model(1).num_params() for name, config in named}
    assert {name: shared[name] for name in rows} == {name: r["shared_params"] for name, r in rows.items()}
    assert all(abs(n - shared["asmr"]) / shared["asmr"] < 0.15 for n in shared.values())
    with pytest.raises(ValueError, match="--only 'ngp'"):
        hybrid_meta.main(argv[:-2] + ["--only", "ngp"])


def test_meta_step_profile_smoke(tmp_path):
    from experiments import meta_step_profile

    assert meta_step_profile.main(["--smoke", "--out", str(tmp_path)]) == 0
    saved, md = _read(str(tmp_path), "meta_step_profile_smoke")
    for row in saved["rows"]:
        parts = {p["part"]: p for p in row["parts"]}
        assert parts["outer loss + gradient"]["mflop"] > parts["outer loss"]["mflop"] > 0
        assert row["profile"]["top"] and 0 <= row["profile"]["dot_share"] <= 1
    assert "% of matmul" in md


@pytest.mark.parametrize("refine", [pytest.param(False, id="no-refine"),
                                    pytest.param(True, id="refine", marks=pytest.mark.slow)])
def test_rate_distortion_quick_trains_encodes_and_counts_file_bytes(tmp_path, refine):
    from experiments import rate_distortion

    args = ["--quick", "--budget-minutes", "0.02", "--models", "asmr", "--bits", "4", "--test-images", "6",
            "--codec-images", "16", "--timing-images", "1", "--workdir", str(tmp_path / "w"), "--out",
            str(tmp_path), "--eval-every", "5"]
    args += ["--refine", "3", "--rate-weights", "0.01"] if refine else ["--refine", "0"]
    assert rate_distortion.main(args) == 0
    saved = json.loads((tmp_path / "rate_distortion.json").read_text())
    rows = [r for r in saved["rows"] if r["codec"] == "asmr-functa"]
    single = next(r for r in rows if r["file"] == "single" and r["refine"] == 0)
    many = next(r for r in rows if r["file"] == "container" and r["refine"] == 0)
    # file bits = payload + the 12-byte header per single file; the container pays it once
    assert single["bpp"] == pytest.approx(single["payload_bpp"] + 8 * 12 / 1024, abs=1e-9)
    assert many["bpp"] < single["bpp"] and many["psnr"] == single["psnr"]
    assert {r["codec"] for r in saved["rows"]} >= {"jpeg 4:4:4", "jpeg 4:2:0", "webp"}
    assert single["quantizer"] == "pca" and (saved["dataset"], saved["resolution"]) == ("patches", 32)
    weighted = [r for r in rows if r["rate_weight"] == 0.01]
    if refine:
        assert {r["file"] for r in weighted} == {"single", "container"} and all(r["refine"] == 3 for r in weighted)
        assert all(np.isfinite(r["psnr"]) and r["payload_bpp"] > 0 for r in weighted)
    else:
        assert not weighted and all(r["refine"] == 0 for r in rows)
    # the report is rebuilt from the JSON alone
    (tmp_path / "rate_distortion.md").unlink()
    assert rate_distortion.main(["--report-only", "--out", str(tmp_path)]) == 0
    assert "at fixed rates" in (tmp_path / "rate_distortion.md").read_text()
    # a second call reuses the trained checkpoint (its budget ledger says done)
    ledger = next((tmp_path / "w").glob("*/budget.json"))
    before = ledger.read_text()
    assert rate_distortion.main(args + ["--train-only"]) == 0 and ledger.read_text() == before
    # the latent statistics behind the quantizer's design, on that checkpoint
    from experiments import latent_statistics

    out = tmp_path / "stats"
    assert latent_statistics.main([str(ledger.parent), "--images", "96", "--out", str(out)]) == 0
    (stats,) = json.loads((out / "latent_statistics.json").read_text())
    assert stats["latent_dim"] == 64 and stats["images"] == 96
    # Hadamard's inequality and AM >= GM: neither gain can be negative; the total sensitivity is
    # basis-independent
    assert stats["rotation_gain_bits_per_dim"] >= 0 and stats["weighting_gain_db"] >= 0
    assert min(stats["std_spread"], stats["sensitivity_spread_dim"], stats["sensitivity_spread_pc"]) >= 1
    assert stats["sensitivity_total_pc"] == pytest.approx(stats["sensitivity_total_dim"], rel=1e-3)


def test_rate_distortion_front_and_interpolation():
    from experiments.rate_distortion import front, interpolate

    rows = [{"bpp": 0.2, "psnr": 20.0}, {"bpp": 0.4, "psnr": 24.0}, {"bpp": 0.3, "psnr": 19.0},
            {"bpp": 0.8, "psnr": 23.0}]
    curve = front(rows)
    assert [r["bpp"] for r in curve] == [0.2, 0.4]  # 0.3 and 0.8 are beaten by 0.2 and 0.4
    assert interpolate(curve, 0.1) is None  # below the lowest rate
    assert interpolate(curve, np.sqrt(0.2 * 0.4)) == pytest.approx(22.0)  # linear in log bpp
    assert interpolate(curve, 1.0) == 24.0  # beyond the last point: the last point's quality


def test_meta_benchmark_smoke(tmp_path):
    from experiments import meta_benchmark

    assert meta_benchmark.main(["--smoke", "--out", str(tmp_path)]) == 0
    saved, md = _read(tmp_path, "meta_benchmark_smoke")
    assert [(r["model"], r["lever"]) for r in saved["rows"]] == [("siren", {}), ("siren", {"microbatch": 4}),
                                                                   ("asmr", {})]
    for r in saved["rows"]:
        assert r["step_seconds"] > 0 and math.isfinite(r["loss"])
        # RSS: the start, the stepping peak and the process peak are ordered
        assert 0 < r["start_rss_gib"] <= r["running_rss_gib"] <= r["peak_rss_gib"] + 1e-3
    assert "RSS while stepping" in md


def test_codec_comparison_puts_functa_rows_on_their_set_with_fixed_rate_gaps(tmp_path):
    from asmr_jax import metrics
    from experiments import codec_comparison

    rates = np.array([0.1, 0.3, 0.6, 1.2, 2.4])  # a made-up functa front on the LFW faces
    rows = []
    for bpp, psnr in zip(rates, 24.0 + 6 * np.log10(rates / 0.1)):
        common = {"codec": "asmr-functa", "images": 4, "latent_dim": 64, "bits": 8, "refine": 0, "psnr": float(psnr),
                  "ssim": 0.5}
        rows += [{**common, "file": "single", "bpp": bpp + 0.094, "payload_bpp": float(bpp)},
                 {**common, "file": "container", "bpp": float(bpp) + 0.001}]
    source = tmp_path / "rd.json"
    source.write_text(json.dumps({"dataset": "lfw", "resolution": 32, "rows": rows}))
    out = tmp_path / "out"
    assert codec_comparison.main(["--sets", "lfw", "--codecs", "webp", "--limit", "4", "--functa", str(source),
                                  "--out", str(out)]) == 0
    saved = json.loads((out / "codec_comparison.json").read_text())
    assert {r["set"] for r in saved["rows"]} == {"lfw"}
    assert {r["accounting"] for r in saved["rows"] if r["codec"] == "asmr-functa"} == {"file", "payload", "container"}
    (bd,) = [r for r in saved["bd"] if r["accounting"] == "payload"]
    assert (bd["codec"], bd["reference"], bd["set"]) == ("asmr-functa", "webp", "lfw")
    webp = codec_comparison.front([r for r in saved["rows"] if r["codec"] == "webp" and r["accounting"] == "payload"])
    for rate, gap in bd["gap_db_at_bpp"].items():  # the gap is the two interpolants' difference, where both reach
        ref = metrics.psnr_at([r["bpp"] for r in webp], [r["psnr"] for r in webp], float(rate))
        ours = metrics.psnr_at(rates, 24.0 + 6 * np.log10(rates / 0.1), float(rate))
        assert gap is None if None in (ref, ours) else gap == pytest.approx(ours - ref, abs=1e-9)
    assert any(g is not None for g in bd["gap_db_at_bpp"].values())
    md = (out / "codec_comparison.md").read_text()
    assert "### lfw" in md and "at fixed rates" in md and "0.3-1 bpp" in md
    # a result measured on other images, or at another size, is refused, naming it
    for bad in ({"dataset": "patches"}, {"dataset": "lfw", "resolution": 25}):
        source.write_text(json.dumps({**bad, "rows": rows}))
        with pytest.raises(SystemExit) as e:
            codec_comparison.main(["--sets", "lfw", "--codecs", "webp", "--limit", "4", "--functa", str(source),
                                   "--out", str(tmp_path / "refused")])
        assert e.value.code == 2 and not (tmp_path / "refused").exists()


def test_quality_ceiling_variants_configs_and_merge():
    from experiments import quality_ceiling as q

    v = q.parse_variant("asmr:256:4:1:augment=True+width=192")
    assert v == {"backbone": "asmr", "latent": 256, "spatial": 4, "kernel": 1,
                 "fields": {"augment": "True", "width": "192"}}
    assert q.parse_variant("siren:64:global")["spatial"] is None
    assert q.config_spec(v, "cpu", "lfw", 25) == ("cpu:spatial=4,spatial_kernel=1,dataset=lfw,resolution=25,"
                                                  "augment=True,width=192")
    assert q.config_spec(q.parse_variant("asmr:256:global"), "cpu") == "cpu"
    for bad in ("asmr:256", "mlp:256:global", "asmr:x:global", "asmr:256:4:1:width"):
        with pytest.raises(ValueError, match="variant"):
            q.parse_variant(bad)
    # a variant measured again replaces its row; another dataset, rate or budget is another row
    row = {"backbone": "asmr", "latent": 256, "spatial": 4, "kernel": 1, "fields": {}, "budget_minutes": 2.0,
           "lr": 3e-4, "psnr_k3": 1.0}
    old = [row, {**row, "dataset": "lfw"}, {**row, "lr": 1e-4}, {**row, "fixed_steps": 4000}]
    merged = q.merge(old, [{**row, "psnr_k3": 2.0}])
    assert sorted(r["psnr_k3"] for r in merged) == [1.0, 1.0, 1.0, 2.0] and len(merged) == 4
    assert q._other({"fields": {"w0": "60"}, "fixed_steps": 4000}) == "w0=60 4000 steps fixed"
    # each dataset keeps its own picture; the command names every variant of the run
    assert q.picture_name("patches") == "quality_ceiling.png" and q.picture_name("lfw") == "quality_ceiling_lfw.png"
    assert q.picture_name("patches", 20) == "quality_ceiling_20min.png"
    assert q.picture_name("lfw", 0.5) == "quality_ceiling_lfw_0.5min.png"
    args = SimpleNamespace(lr=1e-4, dataset="lfw", resolution=25, minutes=2.0)
    assert q.command(args, ["asmr:64:global", "siren:50:5:1"]) == (
        "python -m experiments.quality_ceiling --variants asmr:64:global,siren:50:5:1 --minutes 2 --lr 0.0001 "
        "--dataset lfw --resolution 25")
    assert q.command(SimpleNamespace(**{**vars(args), "steps": 4000}), ["asmr:64:global"]) == (
        "python -m experiments.quality_ceiling --variants asmr:64:global --minutes 2 --steps 4000 --lr 0.0001 "
        "--dataset lfw --resolution 25")
    # a run of other variants never overwrites a picture another command made
    args = SimpleNamespace(lr=3e-4, dataset="patches", resolution=32, minutes=2.0, variants=["asmr:64:global"],
                           picture=None)
    mine = q.command(args, args.variants)
    assert q.choose_picture(args, {}) == q.choose_picture(args, {"quality_ceiling.png": mine}) == "quality_ceiling.png"
    other = q.choose_picture(args, {"quality_ceiling.png": mine + ",asmr:64:4:1"})
    assert other.startswith("quality_ceiling_") and other.endswith(".png") and other != "quality_ceiling.png"
    assert q.choose_picture(SimpleNamespace(**{**vars(args), "picture": "mine"}), {}) == "mine.png"


def test_command_line_names_the_module_and_its_arguments(monkeypatch):
    from experiments import common

    assert common.command_line("experiments.x", ["--smoke", "--out", "d"]) == "python -m experiments.x --smoke --out d"
    monkeypatch.setattr("sys.argv", ["x.py", "--spatial"])
    assert common.command_line("experiments.meta_benchmark") == "python -m experiments.meta_benchmark --spatial"
    assert common.command_line("experiments.x", []) == "python -m experiments.x"


def test_codec_speed_times_a_spatial_checkpoint(tmp_path):
    import jax

    from asmr_jax.asmr import ASMR
    from experiments import codec_speed
    from meta import checkpoint, functa

    net = ASMR((32, 32), 3, bases=((2, 4, 4), (2, 4, 4)), widths=16)
    meta = functa.MetaModel(net, latent_dim=16, spatial=2, spatial_kernel=1)
    ckpt = checkpoint.export(tmp_path / "ckpt", meta, meta.init(jax.random.key(0)))
    argv = ["--checkpoints", ckpt, "--bits", "6", "--images", "2", "--codec-images", "16", "--refine", "2",
            "--out", str(tmp_path)]
    assert codec_speed.main(argv) == 0
    saved, md = _read(tmp_path, "codec_speed")
    assert [(r["refine"], r["spatial"], r["latent"], r["images"]) for r in saved["rows"]] == [
        (0, [2, 2], 16, 2), (2, [2, 2], 16, 2)]
    assert all(r["encode_ms"] > 0 and r["decode_ms"] > 0 for r in saved["rows"])
    parts = saved["rows"][0]["parts_ms"]  # the codec's steps, and the rotation as the reference loop
    assert set(parts) == {"quantize", "dequantize", "range encode", "range decode", "quantize, index-order loop",
                          "dequantize, index-order loop"} and all(v > 0 for v in parts.values())
    assert saved["command"].startswith("python -m experiments.codec_speed --checkpoints") and "2x2" in md
    assert "index-order loop ms" in md
    with pytest.raises(ValueError, match="--images"):
        codec_speed.main(["--checkpoints", ckpt, "--images", "0", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="nothing to time"):
        codec_speed.main(["--out", str(tmp_path)])
