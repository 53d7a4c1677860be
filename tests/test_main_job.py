"""The main job (python -m meta.main): --quick smoke run and --help."""

import json
import os

import pytest

from meta import main as main_job


def test_quick_run_writes_results(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("earlier results")
    assert main_job.main(["--quick", "--out", str(tmp_path), "--no-progress"]) == 0
    runs = [d for d in os.listdir(tmp_path) if d.startswith("run-")]
    assert len(runs) == 1
    run = tmp_path / runs[0]
    for f in ("results.json", "psnr.png", "reconstructions.png"):
        assert (run / f).is_file(), f
    res = json.loads((run / "results.json").read_text())
    models = res["models"]
    assert sorted(models) == sorted(main_job.MODELS)
    asmr, siren = models["asmr"], models["siren"]
    # equal parameter count within 2% (global latents; the spatial maps are smaller)
    assert abs(asmr["shared_params"] - siren["shared_params"]) <= 0.02 * siren["shared_params"]
    assert models["asmr-spatial"]["latent"] == "2x2" and asmr["latent"] == "global"
    for name, m in models.items():  # every model trained, and was measured on every test patch
        assert m["steps"] >= 1 and m["status"] in ("done", "time_budget"), name
        assert 0 < m["test_ssim"] <= 1 and m["test_psnr"] > 5, name
    assert asmr["mac_per_pixel"] < siren["mac_per_pixel"]
    assert res["best"]["asmr"].startswith("asmr") and res["best"]["siren"].startswith("siren")
    assert res["test_images"] == 136
    out = capsys.readouterr().out
    assert "MAC/px" in out and "img/s" in out and "SSIM" in out and "best ASMR" in out
    # an existing output folder is used, never cleared: each run gets a fresh subfolder
    assert (tmp_path / "keep.txt").read_text() == "earlier results"


def test_help(capsys):
    with pytest.raises(SystemExit) as e:
        main_job.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--quick" in out and "--out" in out and "--minutes" in out and "--grid" in out
