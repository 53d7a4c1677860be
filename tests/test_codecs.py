"""experiments.codecs: the payload parsers on files of known structure, and real encodes."""

import struct

import numpy as np
import pytest

from experiments import codecs


def box(kind: bytes, content: bytes) -> bytes:
    return struct.pack(">I", 8 + len(content)) + kind + content


def test_riff_payload_is_the_vp8_chunk():
    vp8 = b"\x01" * 37  # odd size: one pad byte follows
    body = b"WEBP" + b"VP8X" + struct.pack("<I", 10) + b"\x00" * 10 + b"VP8 " + struct.pack("<I", 37) + vp8 + b"\x00"
    data = b"RIFF" + struct.pack("<I", len(body)) + body
    assert codecs.riff_payload(data) == 37
    with pytest.raises(ValueError, match="RIFF"):
        codecs.riff_payload(b"GIF89a" + b"\x00" * 20)


def test_isobmff_payload_is_the_mdat_boxes():
    data = box(b"ftyp", b"avif" + b"\x00" * 12) + box(b"meta", b"\x00" * 200) + box(b"mdat", b"\x07" * 55)
    assert codecs.isobmff_payload(data) == 55
    # a 64-bit size box
    big = struct.pack(">I", 1) + b"mdat" + struct.pack(">Q", 16 + 9) + b"\x01" * 9
    assert codecs.isobmff_payload(box(b"ftyp", b"heic") + big) == 9
    with pytest.raises(ValueError, match="damaged box"):
        codecs.isobmff_payload(struct.pack(">I", 999) + b"mdat" + b"\x00" * 4)


def test_jxl_payload_bare_codestream_and_container():
    bare = b"\xff\x0a" + b"\x11" * 30
    assert codecs.jxl_payload(bare) == 32
    container = (box(b"JXL ", b"\r\n\x87\n") + box(b"ftyp", b"jxl " * 3) + box(b"jxlp", b"\x00" * 4 + b"\x22" * 10)
                 + box(b"jxlp", b"\x80\x00\x00\x01" + b"\x22" * 6))
    assert codecs.jxl_payload(container) == 16


def test_jpeg_payload_is_the_scan_data():
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"\x00" * 14
    sos = b"\xff\xda" + struct.pack(">H", 8) + b"\x00" * 6
    scan = b"\x12\xff\x00\x34\xff\xd0\x56"  # a stuffed 0xFF00 and a restart marker stay inside the scan
    data = b"\xff\xd8" + app0 + sos + scan + b"\xff\xd9"
    assert codecs.jpeg_payload(data) == len(scan)


@pytest.mark.parametrize("name", ["jpeg 4:4:4", "jpeg 4:2:0", "webp", "avif", "heic", "jpeg xl"])
def test_real_files_decode_and_their_payload_is_smaller(name):
    why = codecs.available(name)
    if why is not None:
        pytest.skip(why)
    rng = np.random.default_rng(0)
    img = np.clip(np.cumsum(rng.normal(size=(32, 32, 3)), axis=0) * 10 + 128, 0, 255).astype(np.uint8)
    data = codecs.encode(name, img, codecs.CODECS[name][2][-1])
    out = codecs.decode(data)
    assert out.shape == (32, 32, 3)
    assert np.abs(out * 255 - img).mean() < 20  # a high-quality point reproduces the image
    assert 0 < codecs.payload(name, data) < len(data) or name == "jpeg xl"
