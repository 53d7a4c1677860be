import json
import os

import numpy as np
import pytest
from PIL import Image

from meta import commands as cli


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
    # render the checkpoint
    assert cli.main(["render", str(out / "checkpoint"), "--out", str(tmp_path / "r.png")]) == 0
    assert Image.open(tmp_path / "r.png").size == (32, 32)
    # beyond the fitted grid: the advice names --bases, and --bases renders the denser grid
    assert cli.main(["render", str(out / "checkpoint"), "--out", str(tmp_path / "big.png"), "--shape", "64,64"]) == 2
    assert "--bases" in capsys.readouterr().err
    assert cli.main(["render", str(out / "checkpoint"), "--out", str(tmp_path / "big.png"), "--bases", "4,16"]) == 0
    big = np.asarray(Image.open(tmp_path / "big.png"), np.float32)
    assert big.shape[:2] == (64, 64)
    # the same field: where the finest coordinates coincide (the digits 0 and B - 1 of every
    # coarse cell, 8 -> 16 along each axis), the two renders agree to the 8-bit rounding
    small = np.asarray(Image.open(tmp_path / "r.png"), np.float32)
    si = np.sort(np.r_[0:32:8, 7:32:8])
    bi = np.sort(np.r_[0:64:16, 15:64:16])
    assert np.abs(big[np.ix_(bi, bi)] - small[np.ix_(si, si)]).max() <= 1.0


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
    listed = {line.split()[0] for line in out.splitlines() if line.startswith("    ") and line.strip()}
    assert {"fit", "render", "fit-many", "meta-train", "meta-encode", "meta-decode", "codec-fit", "encode",
            "decode"} <= listed


def test_building_every_help_page_imports_no_jax():
    import subprocess
    import sys

    code = ("import sys\nfrom meta.commands import build_parser\nparser = build_parser()\n"
            "for argv in (['--help'], ['fit', '--help'], ['meta-train', '--help'], ['codec-fit', '--help']):\n"
            "    try:\n        parser.parse_args(argv)\n    except SystemExit:\n        pass\n"
            "print(sorted(m for m in ('jax', 'jaxlib', 'flax', 'optax', 'orbax', 'tensorflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert "--config" in out.stdout and out.stdout.strip().splitlines()[-1] == "[]", out.stdout[-500:]


# ----------------------------------------------------------------------------- bad flags and outputs
def _fit_args(tmp_path, *extra):
    return ["fit", "camera", "--crop", "16", "--model", "siren", "--depth", "2", "--width", "8", "--steps", "2",
            "--out", str(tmp_path / "fit"), "--no-progress", *extra]


@pytest.mark.parametrize("flags, message", [
    (["--batch-size", "0"], "--batch-size must be >= 1"), (["--batch-size", "-4"], "--batch-size must be >= 1"),
    (["--crop", "0"], "--crop must be >= 1"), (["--lr", "nan"], "--lr must be a positive finite"),
    (["--w0", "nan"], "--w0 must be a positive finite"), (["--steps", "0"], "--steps must be >= 1")])
def test_fit_refuses_meaningless_flags(tmp_path, capsys, flags, message):
    from meta.commands import main

    assert main(_fit_args(tmp_path, *flags)) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "fit").exists()


def test_render_output_rules_and_overwrite_of_a_file(tmp_path, capsys):
    from meta.commands import main

    assert main(_fit_args(tmp_path)) == 0
    ckpt = str(tmp_path / "fit" / "checkpoint")
    assert main(["render", ckpt, "--out", str(tmp_path / "noext")]) == 0
    assert (tmp_path / "noext.png").is_file() and str(tmp_path / "noext.png") in capsys.readouterr().out
    before = (tmp_path / "noext.png").read_bytes()
    assert main(["render", ckpt, "--out", str(tmp_path / "noext.png")]) == 2
    assert "already exists" in capsys.readouterr().err and (tmp_path / "noext.png").read_bytes() == before
    assert main(["render", ckpt, "--out", str(tmp_path / "noext.png"), "--overwrite"]) == 0
    assert main(["render", ckpt, "--out", str(tmp_path / "x.wav")]) == 2
    # replacing a file with an output folder leaves nothing hidden behind
    (tmp_path / "file").write_text("old")
    assert main(_fit_args(tmp_path)[:-3] + ["--out", str(tmp_path / "file"), "--overwrite", "--no-progress"]) == 0
    assert (tmp_path / "file").is_dir() and not [n for n in os.listdir(tmp_path) if n.startswith(".")]


def test_fit_many_bad_steps_per_call_writes_nothing(tmp_path, capsys):
    from meta.commands import main

    argv = ["fit-many", "--dataset", "lfw", "--split", "test", "--resolution", "8", "--model", "siren",
            "--depth", "2", "--width", "8", "--steps", "2", "--limit", "4", "--chunk", "4", "--out",
            str(tmp_path / "store"), "--no-progress"]
    assert main(argv + ["--steps-per-call", "0"]) == 2
    assert "steps_per_call" in capsys.readouterr().err and not (tmp_path / "store").exists()
    assert main(argv) == 0  # the corrected rerun is not blocked
