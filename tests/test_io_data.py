import os
import sys

import numpy as np
import pytest
from PIL import Image

from asmr_jax import data, io, models


def test_checkpoint_round_trip(tmp_path, key):
    model = models.build("asmr", (20, 24), 3, width=8, bases=((4, 5), (4, 6)), modulator="nonlinear")
    params = model.init(key)
    path = io.save_model(tmp_path / "ckpt", model, params, extra={"signal": {"kind": "image"}})
    model2, params2, meta = io.load_model(path)
    assert model2 == model and meta["signal"]["kind"] == "image"
    np.testing.assert_array_equal(model.render(params), model2.render(params2))


def test_checkpoint_errors_and_no_clobber(tmp_path, key):
    model = models.build("siren", (8, 8), 1, width=8, depth=2)
    params = model.init(key)
    path = io.save_model(tmp_path / "ckpt", model, params)
    before = {f: os.path.getmtime(os.path.join(dp, f)) for dp, _, fs in os.walk(path) for f in fs}
    with pytest.raises(FileExistsError):
        io.save_model(path, model, params)
    with pytest.raises(RuntimeError):
        with io.atomic_dir(path, overwrite=True) as tmp:
            open(os.path.join(tmp, "half"), "w").write("x")
            raise RuntimeError("interrupted")
    after = {f: os.path.getmtime(os.path.join(dp, f)) for dp, _, fs in os.walk(path) for f in fs}
    assert before == after and not any(".tmp-" in p for p in os.listdir(tmp_path))
    with pytest.raises(ValueError, match="not an asmr-jax model checkpoint"):
        io.load_model(tmp_path)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "model.json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupt"):
        io.load_model(tmp_path / "bad")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "model.json").write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="not an asmr-jax model file"):
        io.load_model(tmp_path / "foreign")


def test_image_files_gray_rgb_16bit(tmp_path):
    rgb = (np.arange(48).reshape(4, 4, 3) * 5).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    s = data.load_signal(tmp_path / "a.png")
    assert s.kind == "image" and s.data.shape == (4, 4, 3)
    np.testing.assert_allclose(s.data, rgb / 255.0, atol=1e-6)
    g16 = (np.arange(16).reshape(4, 4) * 4000).astype(np.uint16)
    Image.fromarray(g16).save(tmp_path / "b.png")
    s = data.load_signal(tmp_path / "b.png")
    assert s.data.shape == (4, 4, 1)
    np.testing.assert_allclose(s.data[..., 0], g16 / 65535.0, atol=1e-6)
    Image.fromarray(rgb).save(tmp_path / "c.jpg")
    assert data.load_signal(tmp_path / "c.jpg").data.shape == (4, 4, 3)


def test_bundled_images_and_video():
    cam = data.load_signal("camera")
    assert cam.data.shape == (512, 512, 1) and 0 <= cam.data.min() and cam.data.max() <= 1
    assert data.load_signal("chelsea").data.shape == (300, 451, 3)
    left, right = data.load_signal("motorcycle_left"), data.load_signal("motorcycle_right")
    assert left.data.shape == right.data.shape == (500, 741, 3)
    assert not np.array_equal(left.data, right.data)
    vid = data.bundled_video()
    assert vid.kind == "video" and vid.data.shape == (24, 25, 14, 3)


def test_wav_round_trip(tmp_path):
    t = np.linspace(0, 1, 800, dtype=np.float32)
    audio = (0.5 + 0.4 * np.sin(2 * np.pi * 5 * t))[:, None]
    data.write_wav(tmp_path / "a.wav", audio, 8000)
    s = data.load_signal(tmp_path / "a.wav")
    assert s.kind == "audio" and s.sample_rate == 8000 and s.data.shape == (800, 1)
    np.testing.assert_allclose(s.data, audio, atol=1e-4)


def test_video_folder_and_npy(tmp_path):
    frames = np.random.default_rng(0).integers(0, 255, (3, 6, 5, 3), dtype=np.uint8)
    (tmp_path / "frames").mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(tmp_path / "frames" / f"{i:03d}.png")
    a = data.load_signal(tmp_path / "frames")
    np.save(tmp_path / "v.npy", frames)
    b = data.load_signal(tmp_path / "v.npy")
    np.testing.assert_allclose(a.data, b.data)
    assert a.data.shape == (3, 6, 5, 3)
    data.write_video(tmp_path / "out", a.data) if (tmp_path / "out").mkdir() is None else None
    assert len(os.listdir(tmp_path / "out" / "reconstruction_frames")) == 3


def test_bad_inputs(tmp_path):
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(ValueError, match="unsupported file"):
        data.load_signal(tmp_path / "x.txt")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match="cannot read image"):
        data.load_signal(tmp_path / "broken.png")
    with pytest.raises(ValueError, match="neither a file nor a bundled name"):
        data.load_signal("no_such_thing")
    np.save(tmp_path / "nan.npy", np.full((2, 3, 3), np.nan, np.float32))
    with pytest.raises(ValueError, match="NaN"):
        data.load_signal(tmp_path / "nan.npy")
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(tmp_path / "one.png")
    with pytest.raises(ValueError, match="at least 2 samples"):
        data.load_signal(tmp_path / "one.png")
    with pytest.raises(ValueError, match="unknown bundled image"):
        data.bundled_image("lena")
    data.write_wav(tmp_path / "empty.wav", np.zeros((0, 1), np.float32))
    with pytest.raises(ValueError, match="at least 2 samples"):
        data.load_signal(tmp_path / "empty.wav")


def test_npy_layout_rule_is_one_for_every_command(tmp_path):
    from asmr_jax import data

    rng = np.random.default_rng(0)
    cases = {"a.npy": ((40, 40, 3), "image", (40, 40)), "g.npy": ((20, 30), "image", (20, 30)),
             "v.npy": ((5, 12, 10), "video", (5, 12, 10)), "c.npy": ((4, 8, 8, 3), "video", (4, 8, 8)),
             "s.npy": ((100,), "audio", (100,))}
    for name, (shape, kind, spatial) in cases.items():
        np.save(tmp_path / name, rng.uniform(size=shape).astype(np.float32))
        sig = data.load_signal(tmp_path / name)
        assert (sig.kind, sig.shape) == (kind, spatial), name
        assert data.npy_kind(shape) == kind
    forced = data.load_signal(tmp_path / "a.npy", kind="video")  # 40 frames of 40x3 when asked for
    assert forced.kind == "video" and forced.shape == (40, 40, 3)
    np.save(tmp_path / "bad.npy", np.zeros((2, 2, 2, 2, 2)))
    with pytest.raises(ValueError, match="1 to 4 axes"):
        data.load_signal(tmp_path / "bad.npy")


def test_atomic_write_never_clobbers_or_leaves_partial_files(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"original")
    with pytest.raises(FileExistsError):
        io.atomic_write(path, lambda f: f.write(b"new"), overwrite=False)
    assert path.read_bytes() == b"original"

    def fail(f):
        f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        io.atomic_write(path, fail, overwrite=True)
    assert path.read_bytes() == b"original"
    assert sorted(os.listdir(tmp_path)) == ["out.bin"]  # no temporary left behind
    io.atomic_write(path, lambda f: f.write(b"new"), overwrite=True)
    assert path.read_bytes() == b"new"



def test_atomic_write_accepts_bytes_text_and_refuses_a_folder(tmp_path):
    io.atomic_write(tmp_path / "a.txt", "text")
    io.atomic_write(tmp_path / "a.txt", b"bytes")
    assert (tmp_path / "a.txt").read_bytes() == b"bytes" and oct((tmp_path / "a.txt").stat().st_mode)[-3:] != "600"
    with pytest.raises(IsADirectoryError):
        io.atomic_write(tmp_path, b"x")


@pytest.mark.parametrize("can_swap", [True, False])
def test_atomic_dir_replaces_a_folder_or_a_file_and_leaves_no_temporaries(tmp_path, monkeypatch, can_swap):
    if not can_swap:
        monkeypatch.setattr(io, "exchange", lambda a, b: False)
    for old in ("folder", "file"):
        path = tmp_path / f"target-{old}"
        if old == "folder":
            path.mkdir()
            (path / "old.txt").write_text("old")
        else:
            path.write_text("old file")
        with io.atomic_dir(path, overwrite=True) as tmp:
            (tmp_path / "probe").write_text(str(os.path.exists(path)))  # still the old one meanwhile
            with open(os.path.join(tmp, "new.txt"), "w") as f:
                f.write("new")
        assert path.is_dir() and sorted(os.listdir(path)) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["probe", "target-file", "target-folder"]


def test_exchange_swaps_two_paths_on_linux(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("A")
    b.mkdir()
    if not sys.platform.startswith("linux"):
        pytest.skip("renameat2 is Linux-only")
    assert io.exchange(str(a), str(b))
    assert a.is_dir() and b.read_text() == "A"


def test_npy_dtypes_are_scaled_by_a_stated_rule_or_refused(tmp_path):
    """uint8 / 255, uint16 / 65535, bool as {0, 1}, floats as they are; complex and
    integers of unknown range are refused by name."""
    cases = {"u8": (np.array([[0, 51], [255, 102]], np.uint8), [[0, 0.2], [1, 0.4]]),
             "u16": (np.array([[0, 65535], [13107, 0]], np.uint16), [[0, 1], [0.2, 0]]),
             "b": (np.array([[True, False], [False, True]]), [[1, 0], [0, 1]]),
             "f": (np.array([[0.25, 0.5], [0.75, 1.0]], np.float64), [[0.25, 0.5], [0.75, 1.0]])}
    for name, (arr, want) in cases.items():
        np.save(tmp_path / f"{name}.npy", arr)
        sig = data.load_signal(str(tmp_path / f"{name}.npy"))
        np.testing.assert_allclose(sig.data[..., 0], want, atol=1e-6, err_msg=name)
    for arr, match in ((np.ones((4, 4), np.complex64), "complex arrays are not signals"),
                       (np.ones((4, 4), np.int64), "int64 values, whose range is unknown"),
                       (np.ones((4, 4), np.int8), "int8 values, whose range is unknown")):
        np.save(tmp_path / "bad.npy", arr)
        with pytest.raises(ValueError, match=match):
            data.load_signal(str(tmp_path / "bad.npy"))
