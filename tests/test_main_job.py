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
    asmr, siren = res["models"]["asmr"], res["models"]["siren"]
    # equal parameter count within 2%
    assert abs(asmr["shared_params"] - siren["shared_params"]) <= 0.02 * siren["shared_params"]
    assert asmr["steps"] == siren["steps"] == 4
    assert asmr["mac_per_pixel"] < siren["mac_per_pixel"]
    out = capsys.readouterr().out
    assert "MAC/px" in out and "img/s" in out
    # an existing output folder is used, never cleared: each run gets a fresh subfolder
    assert (tmp_path / "keep.txt").read_text() == "earlier results"


def test_help(capsys):
    with pytest.raises(SystemExit) as e:
        main_job.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--quick" in out and "--out" in out and "--minutes" in out
