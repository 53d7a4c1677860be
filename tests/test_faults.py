"""Fault injection: every refusal of the ``asmr`` command is one line, and writes nothing.

Each case runs ``asmr`` in a fresh interpreter and asserts: exit status 2, exactly one line
on stderr, starting with ``asmr COMMAND: error:``, no "Traceback" anywhere in its output,
and nothing written or removed in the folder its outputs go to. Two kinds of case:

* bad numbers: every numeric flag of every subcommand at 0, negative, NaN, inf and huge
  (where the value is not a legal one), each subcommand's cases in one fresh interpreter
  (``tests/fault_driver.py``), one after another;
* damaged artifacts: each saved artifact a command reads (fit checkpoint, meta-learning
  workdir, functaset, codec, compressed file, fit-many store) truncated, byte-flipped in
  the file that is read, or deleted, on a fresh copy; the three damages of one file run in
  one fresh interpreter, and anything it prints besides the cases' results (a reader
  thread at exit) fails them.
"""

import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ROOT}
ENV["XLA_FLAGS"] = " ".join(f for f in ENV.get("XLA_FLAGS", "").split() if "device_count" not in f)  # one CPU device


def asmr(*argv):
    """Runs ``asmr argv`` in this process (building the artifacts the cases damage)."""
    from meta import commands as command

    rc = command.main([str(a) for a in argv])
    assert rc == 0, argv


def snapshot(folder) -> dict:
    """Every file under ``folder`` with its size and modification time."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            st = os.stat(os.path.join(root, name))
            out[os.path.relpath(os.path.join(root, name), folder)] = (st.st_size, st.st_mtime_ns)
    return out


def check_refusal(result: dict, command: str, what: str):
    err = result["stderr"]
    assert "Traceback" not in err + result["stdout"], f"{what}: traceback\n{err[-3000:]}"
    lines = err.strip().splitlines()
    assert result["rc"] == 2 and len(lines) == 1 and lines[0].startswith(f"asmr {command}: error: "), \
        f"{what}: rc {result['rc']}, stderr {err[-2000:]!r}"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """One of each artifact, made by the real commands (tiny models)."""
    from PIL import Image

    from asmr_jax.datasets import load_dataset

    base = tmp_path_factory.mktemp("artifacts")
    patch = load_dataset("patches", "test", 16).get(np.arange(1))[0]
    image = base / "patch.png"
    Image.fromarray(np.round(patch * 255).astype(np.uint8)).save(image)
    asmr("fit", image, "--width", 8, "--levels", 2, "--steps", 2, "--out", base / "fit", "--no-progress")
    asmr("meta-train", "--config", "cpu:smoke", "--workdir", base / "meta", "--no-progress")
    asmr("meta-encode", base / "meta", "--split", "test", "--limit", 8, "--out", base / "set.npz", "--no-progress")
    asmr("codec-fit", base / "meta", "--bits", 6, "--functaset", base / "set.npz", "--out", base / "codec.npz")
    asmr("encode", image, "--model", base / "meta", "--bits", 6, "--codec", base / "codec.npz",
         "--out", base / "patch.afz")
    asmr("fit-many", "--dataset", "patches", "--resolution", 16, "--width", 8, "--levels", 2, "--steps", 2,
         "--limit", 2, "--chunk", 2, "--out", base / "store", "--no-progress")
    return base


# ----------------------------------------------------------------------------- bad numbers
INT_BAD = ("0", "-1", "nan", "inf", str(10**30))
FLOAT_BAD = ("0", "-1", "nan", "inf", "1e30")


def numeric_cases(a, out):
    """``(command, argv prefix, flag, bad values)``; ``out`` is where outputs would go."""
    fit = ["fit", a / "patch.png", "--out", out / "fit", "--steps", "2", "--width", "8", "--no-progress"]
    many = ["fit-many", "--dataset", "patches", "--resolution", "16", "--limit", "2", "--steps", "2", "--width", "8",
            "--out", out / "store", "--no-progress"]
    train = ["meta-train", "--config", "cpu:smoke", "--workdir", out / "meta", "--no-progress"]
    enc = ["meta-encode", a / "meta", "--out", out / "set.npz", "--limit", "4", "--no-progress"]
    codec = ["codec-fit", a / "meta", "--functaset", a / "set.npz", "--out", out / "codec.npz", "--bits", "6"]
    encode = ["encode", a / "patch.png", "--model", a / "meta", "--codec", a / "codec.npz", "--out",
              out / "x.afz", "--bits", "6"]
    render = ["render", a / "fit" / "checkpoint", "--out", out / "r.png"]
    decode = ["meta-decode", a / "set.npz", "--ckpt", a / "meta", "--out", out / "dec"]
    return [
        ("fit", fit, "--steps", INT_BAD[:2] + INT_BAD[2:4]),
        ("fit", fit, "--lr", FLOAT_BAD),
        ("fit", fit, "--w0", FLOAT_BAD),
        ("fit", fit, "--width", INT_BAD + ("10000000",)),  # the last: refused by its memory, before compiling
        ("fit", fit, "--levels", INT_BAD + ("50",)),
        ("fit", fit + ["--model", "siren"], "--depth", INT_BAD),
        ("fit", fit, "--batch-size", INT_BAD[:4]),
        ("fit", fit, "--crop", INT_BAD),
        ("fit", fit, "--seed", INT_BAD[1:] + ("99999999999999999999999",)),
        ("fit", fit, "--bases", ("64,64", "0,16", "1,1")),
        ("render", render, "--shape", ("0,0", "-1,4", "nan", "64,64", "4")),
        ("render", render, "--bases", ("0,4", "4", "2,2,2,2")),
        ("fit-many", many, "--steps", INT_BAD[:4]),
        ("fit-many", many, "--lr", FLOAT_BAD[:4]),
        ("fit-many", many, "--chunk", INT_BAD[:4]),
        ("fit-many", many, "--steps-per-call", INT_BAD[:4]),
        ("fit-many", many, "--limit", INT_BAD[:4]),
        ("fit-many", many, "--resolution", INT_BAD),
        ("fit-many", many, "--target-psnr", FLOAT_BAD[1:4]),
        ("fit-many", many, "--width", INT_BAD),
        ("fit-many", many, "--seed", INT_BAD[1:]),
        ("meta-train", train, "--steps", INT_BAD[:4]),
        ("meta-train", train, "--batch-size", INT_BAD[:4]),
        ("meta-train", train, "--latent-dim", INT_BAD),
        ("meta-train", train, "--inner-steps", INT_BAD[1:]),
        ("meta-train", train, "--lr", FLOAT_BAD[:4]),
        ("meta-train", train, "--lr-scale", FLOAT_BAD[:4]),
        ("meta-train", train, "--width", INT_BAD),
        ("meta-train", train, "--levels", INT_BAD),
        ("meta-train", train, "--eval-every", INT_BAD[:4]),
        ("meta-train", train, "--checkpoint-every", INT_BAD[:4]),
        ("meta-train", train, "--microbatch", INT_BAD[:4] + ("3",)),
        ("meta-train", train, "--spatial", ("0", "-1", "3", "nan", "2,2,2")),
        ("meta-train", train, "--seed", INT_BAD[1:]),
        ("meta-encode", enc, "--steps", INT_BAD[1:]),
        ("meta-encode", enc, "--limit", INT_BAD[:4]),
        ("meta-encode", enc, "--step", INT_BAD),
        ("meta-decode", decode, "--limit", INT_BAD[:4]),
        ("codec-fit", codec, "--bits", INT_BAD),
        ("codec-fit", codec, "--clip", FLOAT_BAD[:4]),
        ("encode", encode, "--bits", INT_BAD),
        ("encode", encode, "--steps", INT_BAD[1:]),
        ("encode", encode, "--refine", INT_BAD[1:]),
    ]


def run_driver(cases):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "fault_driver.py")],
                          input=json.dumps([[str(x) for x in argv] for argv in cases]), capture_output=True,
                          text=True, env=ENV, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_bad_numbers_are_refused_in_one_line(artifacts, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    before = snapshot(artifacts)
    cases = [(cmd, prefix + [flag, value]) for cmd, prefix, flag, values in numeric_cases(artifacts, out)
             for value in values]
    results = run_driver([argv for _, argv in cases])
    failures = []
    for (cmd, argv), result in zip(cases, results):
        try:
            check_refusal(result, cmd, " ".join(map(str, argv[-2:])) + f" ({cmd})")
        except AssertionError as e:
            failures.append(str(e).splitlines()[0][:400])
    assert not failures, f"{len(failures)} of {len(cases)} cases:\n" + "\n".join(failures)
    assert snapshot(out) == {}, "a refused command wrote into its output folder"
    assert snapshot(artifacts) == before, "a refused command changed an input artifact"


# ----------------------------------------------------------------------------- damaged artifacts
def largest_file(folder):
    files = [os.path.join(r, f) for r, _, fs in os.walk(folder) for f in fs]
    return max(files, key=os.path.getsize)


def damage(path, how: str):
    if how == "delete":
        if os.path.isdir(path):
            shutil.rmtree(path)
        else:
            os.remove(path)
        return
    data = bytearray(open(path, "rb").read())
    if how == "truncate":
        data = data[: len(data) // 2]
    else:  # flip one byte in the middle
        data[len(data) // 2] ^= 0xFF
    open(path, "wb").write(bytes(data))


def artifact_cases():
    """``(id, artifact to copy, file in it to damage, command, argv)``; ``{A}`` is the damaged copy."""
    meta_files = ["meta.json", "digests.json", "LATEST_PARAMS"]
    out = []
    for f in ["model.json", "PARAMS"]:
        out.append((f"fit/{f}", "fit", f, "render", ["render", "{A}/checkpoint", "--out", "{O}/r.png"]))
    for f in meta_files:
        out.append((f"meta/{f}", "meta", f, "meta-encode",
                    ["meta-encode", "{A}", "--out", "{O}/set.npz", "--limit", "2", "--no-progress"]))
    out.append(("functaset", "set.npz", "", "meta-decode", ["meta-decode", "{A}", "--ckpt", "{M}", "--out", "{O}/d"]))
    out.append(("codec", "codec.npz", "", "encode", ["encode", "{P}", "--model", "{M}", "--codec", "{A}", "--bits",
                                                      "6", "--out", "{O}/x.afz"]))
    out.append(("afz", "patch.afz", "", "decode", ["decode", "{A}", "--model", "{M}", "--codec", "{C}", "--out",
                                                    "{O}/x.png"]))
    for f in ["store.json", "chunk_00000.npz"]:
        out.append((f"store/{f}", "store", f, "fit-many",
                    ["fit-many", "--dataset", "patches", "--resolution", "16", "--width", "8", "--levels", "2",
                     "--steps", "2", "--limit", "2", "--chunk", "2", "--out", "{A}", "--resume", "--no-progress"]))
    return [(f"{cid}-{how}", src, f, cmd, argv, how) for cid, src, f, cmd, argv in out
            for how in ("truncate", "flip", "delete")]


GROUPS = sorted({c[0].rsplit("-", 1)[0] for c in artifact_cases()})


@pytest.mark.parametrize("group", GROUPS)
def test_damaged_artifacts_are_refused_in_one_line(artifacts, tmp_path, group):
    """The three damages of one artifact file, each on its own fresh copy, run in one fresh
    interpreter; whatever that interpreter prints besides the cases' own results (reader
    threads at exit) fails the group."""
    cases, checks = [], []
    for cid, src, target, command, argv, how in [c for c in artifact_cases() if c[0].rsplit("-", 1)[0] == group]:
        case = tmp_path / how
        case.mkdir()
        copy = case / os.path.basename(src)
        (shutil.copytree if os.path.isdir(artifacts / src) else shutil.copy)(artifacts / src, copy)
        if target == "PARAMS":
            path = largest_file(copy / "checkpoint" / "params")
        elif target == "LATEST_PARAMS":
            steps = sorted(int(s) for s in os.listdir(copy / "checkpoints") if s.isdigit())
            path = largest_file(copy / "checkpoints" / str(steps[-1]) / "params")
        elif target == "model.json":
            path = copy / "checkpoint" / target
        else:
            path = copy / target if target else copy
        assert os.path.exists(path), f"{target} is not part of this artifact"
        damage(path, how)
        out = case / "out"
        out.mkdir()
        fill = {"{A}": str(copy), "{O}": str(out), "{M}": str(artifacts / "meta"),
                "{C}": str(artifacts / "codec.npz"), "{P}": str(artifacts / "patch.png")}
        args = []
        for a in argv:
            for k, v in fill.items():
                a = a.replace(k, v)
            args.append(a)
        cases.append(args)
        checks.append((cid, command, copy, out, snapshot(copy) if os.path.isdir(copy) else None))
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "fault_driver.py")],
                          input=json.dumps(cases), capture_output=True, text=True, env=ENV, timeout=300, cwd=ROOT)
    assert proc.returncode == 0 and not proc.stderr.strip(), f"{group}: the interpreter printed\n{proc.stderr[-3000:]}"
    for (cid, command, copy, out, before), result in zip(checks, json.loads(proc.stdout)):
        check_refusal(result, command, cid)
        assert snapshot(out) == {}, f"{cid}: wrote {sorted(snapshot(out))}"
        if before is not None:
            assert snapshot(copy) == before, f"{cid}: the damaged artifact was changed"


def test_unreachable_coordinator_is_a_bounded_one_line_error(tmp_path):
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = ["meta-train", "--config", "cpu:smoke", "--workdir", str(tmp_path / "w"), "--no-progress",
            "--distributed", "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", "1",
            "--distributed-timeout", "5"]
    proc = subprocess.run([sys.executable, "-m", "meta.commands", *argv], capture_output=True, text=True, env=ENV,
                          timeout=120, cwd=ROOT)
    check_refusal({"rc": proc.returncode, "stderr": proc.stderr, "stdout": proc.stdout}, "meta-train",
                  "unreachable coordinator")
    assert "127.0.0.1" in proc.stderr
    assert not os.path.exists(tmp_path / "w")
