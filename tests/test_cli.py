import json

import numpy as np
import pytest
from PIL import Image

from asmr_jax import cli


def test_fit_and_render_cli(tmp_path, capsys):
    from asmr_jax import data

    crop = data.crop(data.bundled_image("astronaut"), 32)
    src = tmp_path / "crop.png"
    Image.fromarray((crop.data * 255).round().astype(np.uint8)).save(src)
    out = tmp_path / "run"
    rc = cli.main(["fit", str(src), "--model", "asmr", "--bases", "4,8", "--width", "16", "--steps", "20",
                   "--out", str(out), "--no-progress"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "PSNR" in text and "MAC/sample" in text
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["params"] > 0 and np.isfinite(metrics["psnr"])
    assert Image.open(out / "reconstruction.png").size == (32, 32)
    # existing output is refused and left alone
    before = (out / "metrics.json").read_bytes()
    assert cli.main(["fit", str(src), "--steps", "2", "--out", str(out), "--no-progress"]) == 2
    assert (out / "metrics.json").read_bytes() == before
    assert "already exists" in capsys.readouterr().err
    # render the checkpoint, also 2x denser at the finest level
    assert cli.main(["render", str(out / "checkpoint"), "--out", str(tmp_path / "r.png")]) == 0
    assert Image.open(tmp_path / "r.png").size == (32, 32)
    assert cli.main(["render", str(out / "checkpoint"), "--bases", "4,16", "--out", str(tmp_path / "big.png")]) == 0
    assert Image.open(tmp_path / "big.png").size == (64, 64)


def test_cli_errors(tmp_path, capsys):
    assert cli.main(["fit", "camera", "--bases", "4,4", "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "multiply to 16, need >= 512" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    assert cli.main(["render", str(tmp_path), "--out", str(tmp_path / "x.png")]) == 2
    assert "not an asmr-jax model checkpoint" in capsys.readouterr().err


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for cmd in ("fit", "render"):
        assert cmd in out
