"""Latent compression: quantizer bounds, exact entropy coding, file formats and their failure modes."""

import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asmr_jax.arrays import with_rank
from meta import checkpoint, container, entropy, quantize, refine
from meta import compress as C

D = 24
SHAPE, CHANNELS = (6, 5), 3


def synthetic_latents(n, dim=D, seed=0):
    """[n, dim] latents with per-dimension offsets and scales, a heavy-ish tail, one constant dim."""
    rng = np.random.default_rng(seed)
    z = rng.standard_t(5, size=(n, dim)) * rng.uniform(0.05, 2.0, dim) + rng.normal(size=dim)
    z[:, -1] = 0.25
    return z.astype(np.float32)


class LinearNet:
    """A tiny stand-in for a meta-learned network: image = sigmoid(z @ A + b), [D] -> [6, 5, 3].

    ``render_jax`` takes ``[*batch, D]`` (JAX), ``render``/``fit`` take ``[n, ...]`` (numpy), as
    :class:`meta.compress.MetaNetwork` does.
    """

    def __init__(self, seed=0):
        k1, k2 = jax.random.split(jax.random.key(seed))
        self.params = {"A": 0.3 * jax.random.normal(k1, (D, 90)), "b": 0.1 * jax.random.normal(k2, (90,))}
        self.id = C.model_id(self.params, {"kind": "linear", "dim": D})

    def render_jax(self, z):
        z = jnp.asarray(z)
        h = z @ self.params["A"]
        return jax.nn.sigmoid(h + with_rank(self.params["b"], h.ndim)).reshape(z.shape[:-1] + SHAPE + (CHANNELS,))

    def render(self, latents):
        return np.asarray(self.render_jax(jnp.asarray(latents)))

    def fit(self, images, steps=60):
        def one(image):
            grad = jax.grad(lambda z: jnp.mean((self.render_jax(z) - image) ** 2))
            return jax.lax.fori_loop(0, steps, lambda _, z: z - 20.0 * grad(z), jnp.zeros(D))

        return np.asarray(jax.jit(jax.vmap(one))(jnp.asarray(images)))


@pytest.fixture(scope="module")
def net():
    return LinearNet()


@pytest.fixture(scope="module")
def codec(net):
    return C.fit_codec(synthetic_latents(300), 6, net.id)


@pytest.fixture(scope="module")
def image(net):
    return net.render(synthetic_latents(1, seed=7))[0]


@pytest.fixture(scope="module")
def images(net):
    return net.render(synthetic_latents(5, seed=8))


# ----------------------------------------------------------------------------- quantizer
@pytest.mark.parametrize("bits", [1, 2, 5, 8, 16])
@pytest.mark.parametrize("mode", quantize.QUANTIZER_MODES)
def test_quantize_error_at_most_half_a_step_inside_clip(bits, mode):
    train = synthetic_latents(200)
    q = quantize.fit_quantizer(train, bits, clip=2.5, mode=mode)
    rng = np.random.default_rng(1)
    y = (q.low + rng.uniform(0, 1, (500, D)) * (q.step * q.levels)).astype(np.float32)
    y[0], y[1] = q.low, q.low + q.step * q.levels  # both ends of the range
    x = y if q.basis is None else (y @ q.basis.T + q.mean).astype(np.float32)  # coordinates -> latents
    sym = q.quantize(x)
    assert sym.dtype == np.int32 and sym.min() >= 0 and sym.max() <= q.levels - 1
    err = np.abs(q.coords(q.dequantize(sym)) - y)
    size = np.abs(x).max() + np.abs(y).max()
    rounding = (4 if q.basis is None else 8 * D) * np.finfo(np.float32).eps * size  # float32 arithmetic
    assert np.all(err <= q.step / 2 + rounding)
    # dequantize is exact: the representative quantizes to its own symbol
    np.testing.assert_array_equal(q.quantize(q.dequantize(sym)), sym)


def test_quantizer_clips_outside_range_and_fits_statistics():
    train = synthetic_latents(400)
    q = quantize.fit_quantizer(train, 4, clip=3.0, mode="dim")
    np.testing.assert_allclose(q.center, train.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(q.scale[:-1], train.std(0)[:-1], rtol=1e-5)
    assert q.scale[-1] > 0  # the constant dimension still has a positive step
    far = np.stack([q.center - 100 * q.scale, q.center + 100 * q.scale])
    np.testing.assert_array_equal(q.quantize(far), [[0] * D, [15] * D])
    g = quantize.fit_quantizer(train, 4, mode="global")
    assert np.unique(g.scale).size == 1 and np.unique(g.center).size == 1


def test_pca_quantizer_decorrelates_with_one_cell_width():
    rng = np.random.default_rng(0)
    mix = np.linalg.qr(rng.normal(size=(D, D)))[0]
    spread = np.geomspace(2.0, 1e-3, D)  # component stds
    train = ((rng.normal(size=(2000, D)) * spread) @ mix.T + rng.normal(size=D)).astype(np.float32)
    q = quantize.fit_quantizer(train, 6, clip=3.0)
    assert q.basis is not None and np.unique(q.step).size == 1
    np.testing.assert_allclose(q.basis.T @ q.basis, np.eye(D), atol=1e-5)
    y = q.coords(train)
    cov = np.cov(y, rowvar=False)
    np.testing.assert_allclose(cov - np.diag(np.diag(cov)), 0, atol=1e-3)  # uncorrelated
    np.testing.assert_allclose(np.sqrt(np.diag(cov)), spread, rtol=0.1)  # by falling variance
    np.testing.assert_allclose(q.step[0], 2 * 3.0 * y[:, 0].std() / 64, rtol=1e-4)
    # zero is a cell midpoint: components far narrower than a cell all take one symbol
    narrow = q.quantize(train)[:, spread < 0.05 * q.step[0]]
    assert narrow.size and np.unique(narrow).size == 1
    # correlated latents of unequal spread: the rotation with 8 bits codes them in fewer than 60% of the
    # bits that per-dimension scales need at 6 bits, and distorts them less
    test = ((rng.normal(size=(500, D)) * spread) @ mix.T).astype(np.float32) + train.mean(0)
    rates, errors = [], []
    for mode, bits in (("pca", 8), ("dim", 6)):
        codec = C.fit_codec(train, bits, b"\0" * 8, mode=mode)
        rates.append(codec.symbols.bits(codec.quantizer.quantize(test)).sum(-1).mean())
        errors.append(np.mean((codec.quantizer.round_trip(test) - test) ** 2))
    assert rates[0] < 0.6 * rates[1] and errors[0] < errors[1]


def test_rotated_quantizer_is_bit_exact_whatever_the_batch():
    rng = np.random.default_rng(3)
    dim = 96
    train = (rng.normal(size=(400, dim)) @ rng.normal(size=(dim, dim))).astype(np.float32)
    q = quantize.fit_quantizer(train, 10)
    sym = q.quantize(train[:50])
    np.testing.assert_array_equal(np.stack([q.quantize(z) for z in train[:50]]), sym)
    batch = q.dequantize(sym)
    np.testing.assert_array_equal(np.stack([q.dequantize(s) for s in sym]), batch)
    np.testing.assert_array_equal(q.dequantize(sym[7:8])[0], batch[7])
    np.testing.assert_allclose(batch, q.coords(batch) @ q.basis.T + q.mean, rtol=0, atol=1e-5 * np.abs(batch).max())


@pytest.mark.parametrize("k", [3, 96, 1024])
def test_exact_product_is_the_true_product_to_42_bits_in_any_batch(k):
    """The rotation's product never rounds inside BLAS: against the exact rational product it is
    off by about 2^-42 of the row's largest term, and a row gives the same bits alone, in any
    batch, and with zero columns (skipped) or without them."""
    from fractions import Fraction

    rng = np.random.default_rng(k)
    m = np.linalg.qr(rng.normal(size=(k, k)))[0].astype(np.float32)
    x = rng.normal(size=(9, k)) * rng.uniform(1e-3, 3, size=k)
    x[:, : k // 2 + 1] = np.where(np.arange(9)[:, None] < 4, 0.0, x[:, : k // 2 + 1])
    product = quantize.ExactProduct(m)
    out = product(x)
    for i in (0, 5):  # the exact rational product of two rows, four output columns
        for j in (0, k // 3, k - 1):
            true = sum(Fraction(float(a)) * Fraction(float(b)) for a, b in zip(x[i], m[:, j]))
            bound = 2.0 ** -40 * float(np.abs(x[i]).max()) * float(np.abs(m).max()) * k
            assert abs(Fraction(float(out[i, j])) - true) <= Fraction(bound), (i, j)
    for rows in (slice(0, 1), slice(0, 4), slice(3, 9), slice(5, 6)):  # zero columns skipped or not
        np.testing.assert_array_equal(product(x[rows]), out[rows])
    np.testing.assert_array_equal(product(x[2]), out[2])
    with pytest.raises(ValueError, match=f"\\[..., {k}\\]"):
        product(np.zeros(k + 1))
    # every column zero: the exact zero product, alone or in a batch (no empty reduction)
    np.testing.assert_array_equal(product(np.zeros(k)), np.zeros(k))
    np.testing.assert_array_equal(product(np.zeros((3, k))), np.zeros((3, k)))


def test_a_latent_at_the_mean_round_trips_through_the_rotated_codec():
    """A latent whose every principal coordinate falls in the zero cell (all symbols the middle
    one) decodes to the training mean, through the symbol coder as well."""
    from meta import compress

    latents = synthetic_latents(200)
    codec = compress.fit_codec(latents, 4, b"m" * 32, mode="pca")
    mean = codec.quantizer.mean
    payload, symbols = codec.encode_latent(mean)
    assert np.all(symbols == codec.quantizer.levels // 2)
    np.testing.assert_allclose(codec.decode_latent(payload), mean, rtol=0, atol=1e-6)
    both, _ = codec.encode_latent(np.stack([mean, latents[0]]))
    np.testing.assert_allclose(codec.decode_latent(both, 2)[0], mean, rtol=0, atol=1e-6)


def test_quantizer_refuses_a_broken_rotation():
    q = quantize.fit_quantizer(synthetic_latents(100), 4)
    with pytest.raises(ValueError, match="orthonormal"):
        quantize.Quantizer(q.bits, q.center, q.scale, q.clip, q.mean, 2 * q.basis)
    with pytest.raises(ValueError, match="both mean"):
        quantize.Quantizer(q.bits, q.center, q.scale, q.clip, q.mean, None)
    with pytest.raises(ValueError, match="quantizer mode must be one of pca, dim, global, got 'kl'"):
        quantize.fit_quantizer(synthetic_latents(100), 4, mode="kl")


def test_quantizer_jax_path_matches_numpy_and_straight_through_gradient():
    q = quantize.fit_quantizer(synthetic_latents(100), 5)
    x = synthetic_latents(3, seed=3)
    np.testing.assert_array_equal(np.asarray(q.quantize(jnp.asarray(x), jnp)), q.quantize(x))
    np.testing.assert_allclose(np.asarray(q.ste(jnp.asarray(x))), q.round_trip(x), rtol=1e-6, atol=1e-6)
    g = jax.grad(lambda z: jnp.sum(q.ste(z) * jnp.arange(D)))(jnp.asarray(x[0]))
    np.testing.assert_allclose(np.asarray(g), np.arange(D))


@pytest.mark.parametrize("bits", [0, 17, -1, 2.5, True])
def test_bits_out_of_range(bits):
    with pytest.raises(ValueError, match="bits must be an integer in 1..16"):
        quantize.fit_quantizer(synthetic_latents(10), bits)


# ----------------------------------------------------------------------------- entropy coder
@settings(max_examples=25, deadline=None)
@given(bits=st.integers(1, 16), shared=st.booleans(), seed=st.integers(0, 2**16))
def test_entropy_coder_round_trip_exact(bits, shared, seed):
    levels = 1 << bits
    rng = np.random.default_rng(seed)
    probs = rng.gamma(0.3, size=(1 if shared else D, levels)) + 1e-6
    model = entropy.SymbolModel((probs / probs.sum(-1, keepdims=True)).astype(np.float32))
    symbols = rng.integers(0, levels, D).astype(np.int32)  # includes improbable symbols
    payload = model.encode(symbols)
    assert isinstance(payload, bytes)
    np.testing.assert_array_equal(model.decode(payload, D), symbols)
    assert model.encode(model.decode(payload, D)) == payload  # bytes reproduce too


def test_symbol_model_codes_unseen_symbols_and_compresses_seen_ones():
    train = synthetic_latents(300)
    codec = C.fit_codec(train, 8, b"\0" * 8)
    sym = codec.quantizer.quantize(train)
    assert np.all(codec.symbols.probs > 0)
    never = np.setdiff1d(np.arange(256), np.unique(sym))
    assert never.size > 0
    msg = np.full(D, never[0], np.int32)
    np.testing.assert_array_equal(codec.symbols.decode(codec.symbols.encode(msg), D), msg)
    # held-out latents of the same distribution cost less than the raw bits, and the real
    # byte count is within a few bytes of the ideal code length
    dim = 128
    latents = synthetic_latents(400, dim=dim)
    codec4 = C.fit_codec(latents[:300], 4, b"\0" * 8)
    test = codec4.quantizer.quantize(latents[300:])
    sizes = np.array([len(codec4.symbols.encode(s)) for s in test])
    ideal = codec4.symbols.bits(test).sum(-1) / 8
    assert ideal.mean() < 0.95 * dim * 4 / 8
    assert np.all(sizes <= np.ceil(ideal) + 6)
    assert sizes.mean() < dim * 4 / 8


def test_symbol_model_per_dim_choice_follows_the_data():
    rng = np.random.default_rng(0)
    # every dimension concentrated on its own symbol: per-dimension tables must win
    skewed = (np.arange(D)[None] % 16 + (rng.uniform(size=(400, D)) < 0.05)).astype(np.int32)
    assert not entropy.fit_symbol_model(skewed, 32).shared
    iid = rng.integers(0, 32, (400, D))
    assert entropy.fit_symbol_model(iid, 32).shared
    assert entropy.fit_symbol_model(iid, 32, per_dim=True).probs.shape == (D, 32)


def test_payload_trailing_zero_trim_is_exact():
    words = np.array([0x12345678, 0xAB000000, 0, 0x00000100], np.uint32)
    for n in range(1, 5):
        w = words[:n]
        np.testing.assert_array_equal(entropy._bytes_to_words(entropy._words_to_bytes(w)), w)


# ----------------------------------------------------------------------------- codec file
def test_codec_save_load_round_trip(tmp_path, codec):
    path = codec.save(tmp_path / "codec.npz")
    back = C.Codec.load(path)
    assert back.codec_id == codec.codec_id and back.model_id == codec.model_id
    np.testing.assert_array_equal(back.symbols.probs, codec.symbols.probs)
    with pytest.raises(FileExistsError):
        codec.save(path)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable codec"):
        C.Codec.load(tmp_path / "junk.npz")


def _rewrite_npz(path, drop=(), **replace):
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files if k not in drop}
    arrays.update(replace)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def test_codec_file_versions_and_damaged_rotation(tmp_path, codec):
    import json

    # a version-1 file (no rotation, written before the principal-component quantizer) still loads
    old = C.fit_codec(synthetic_latents(300), 5, codec.model_id, mode="dim")
    path = old.save(tmp_path / "v1.npz")
    _rewrite_npz(path, meta=np.array(json.dumps({"format": C.CODEC_FORMAT, "version": 1})))
    assert C.Codec.load(path).codec_id == old.codec_id
    # a rotated codec that lost one of its two rotation arrays is refused, not used without it
    path = codec.save(tmp_path / "v2.npz")
    _rewrite_npz(path, drop=("basis",))
    with pytest.raises(ValueError, match="1 of the 2 rotation arrays"):
        C.Codec.load(path)
    path = codec.save(tmp_path / "bad.npz")
    _rewrite_npz(path, basis=2 * codec.quantizer.basis)
    with pytest.raises(ValueError, match="damaged codec tables: basis columns must be orthonormal"):
        C.Codec.load(path)
    path = codec.save(tmp_path / "v3.npz")
    _rewrite_npz(path, meta=np.array(json.dumps({"format": C.CODEC_FORMAT, "version": 3})))
    with pytest.raises(ValueError, match="file of version 1 or 2"):
        C.Codec.load(path)


def test_codec_id_changes_with_any_table(codec):
    q = codec.quantizer
    other = C.Codec(quantize.Quantizer(q.bits, q.center, q.scale * 1.001, q.clip, q.mean, q.basis), codec.symbols,
                    codec.model_id)
    assert other.codec_id != codec.codec_id
    flipped = q.basis.copy()
    flipped[:, 0] *= -1  # still orthonormal, another rotation
    other = C.Codec(quantize.Quantizer(q.bits, q.center, q.scale, q.clip, q.mean, flipped), codec.symbols,
                    codec.model_id)
    assert other.codec_id != codec.codec_id
    unrotated = C.Codec(quantize.Quantizer(q.bits, q.center, q.scale, q.clip), codec.symbols, codec.model_id)
    assert unrotated.codec_id != codec.codec_id


def test_model_id_depends_on_weights_and_config(net):
    p2 = jax.tree.map(lambda x: x.at[0].add(1e-6), net.params)
    assert C.model_id(p2, {"kind": "linear", "dim": D}) != net.id
    assert C.model_id(net.params, {"kind": "linear", "dim": D + 1}) != net.id
    assert C.model_id(jax.tree.map(np.asarray, net.params), {"kind": "linear", "dim": D}) == net.id


# ----------------------------------------------------------------------------- encode / decode
def test_encode_decode_round_trip(net, codec, image):
    enc = C.encode(image, codec, net.id, net.fit, net.render)
    out, latent, stream = C.decode(enc.data, codec, net.id, net.render)
    np.testing.assert_array_equal(latent, enc.latents[0])  # bit-exact dequantized latent
    np.testing.assert_array_equal(latent, codec.quantizer.dequantize(enc.symbols[0]))
    np.testing.assert_array_equal(out, enc.images[0])  # the decoder's reconstruction, bit for bit
    assert stream.count is None and out.shape == SHAPE + (CHANNELS,)
    from asmr_jax.metrics import psnr

    assert psnr(out, image) == pytest.approx(enc.psnr[0], abs=1e-9)
    assert enc.psnr[0] > 20.0 and enc.psnr[0] <= enc.psnr_unquantized[0] + 1.0
    pixels = np.prod(SHAPE)
    assert enc.bpp == 8 * len(enc.data) / pixels
    assert enc.payload_bpp == 8 * (len(enc.data) - container.SINGLE_OVERHEAD) / pixels
    assert container.SINGLE_OVERHEAD == 12


def test_container_round_trip_shares_the_header_and_one_stream(net, codec, images):
    enc = C.encode(images, codec, net.id, net.fit, net.render, many=True)
    out, latents, stream = C.decode(enc.data, codec, net.id, net.render)
    assert stream.count == len(images) and out.shape == images.shape
    np.testing.assert_array_equal(out, enc.images)
    np.testing.assert_array_equal(latents, enc.latents)
    # the same symbols as single files, and fewer bytes than those files together
    singles = [C.encode(x, codec, net.id, net.fit, net.render) for x in images]
    np.testing.assert_array_equal(np.concatenate([e.symbols for e in singles]), enc.symbols)
    assert len(enc.data) < sum(len(e.data) for e in singles) - (len(images) - 1) * container.SINGLE_OVERHEAD
    assert len(enc.data) == container.overhead(len(images)) + len(stream.payload)
    pixels = images.shape[0] * np.prod(SHAPE)
    assert enc.bpp == 8 * len(enc.data) / pixels and enc.payload_bpp == 8 * len(stream.payload) / pixels


def test_container_header_round_trip_and_counts():
    for count in (None, 1, 127, 128, 300, 2**20):
        s = container.Stream(b"abcd", b"xy", count, b"payload")
        data = container.pack(s)
        assert container.unpack(data) == s and len(data) == container.overhead(count) + 7
    with pytest.raises(ValueError, match="count 0"):
        container.pack(container.Stream(b"abcd", b"xy", 0, b""))
    with pytest.raises(ValueError, match="model id must be 4 bytes"):
        container.pack(container.Stream(b"abcdefgh", b"xy", None, b""))


def test_refinement_never_hurts_and_helps_at_low_bits(net, image):
    codec = C.fit_codec(synthetic_latents(300), 3, net.id)
    kw = dict(refine_steps=15, render_jax=net.render_jax)
    plain = C.encode(image, codec, net.id, net.fit, net.render)
    refined = C.encode(image, codec, net.id, net.fit, net.render, **kw)
    assert refined.psnr[0] >= plain.psnr[0] - 1e-6
    # at 2 bits the rounding error is large, and the quantization-aware steps must win something
    coarse = C.fit_codec(synthetic_latents(300), 2, net.id)
    assert (C.encode(image, coarse, net.id, net.fit, net.render, **kw).psnr[0]
            > C.encode(image, coarse, net.id, net.fit, net.render).psnr[0] + 1e-3)
    _, latent, _ = C.decode(refined.data, codec, net.id, net.render)
    np.testing.assert_array_equal(latent, refined.latents[0])
    with pytest.raises(ValueError, match="render_jax"):
        C.encode(image, codec, net.id, net.fit, net.render, refine_steps=2)


@pytest.mark.parametrize("rate_weight", [0.0, 1e-3, 1e-2])
def test_rate_aware_refinement_never_raises_the_lagrangian_it_minimizes(net, images, rate_weight):
    codec = C.fit_codec(synthetic_latents(300), 4, net.id)
    start = net.fit(images)
    args = (images, net.render, codec.quantizer, codec.symbols, rate_weight)
    refined = refine.refine(start, images, net.render_jax, codec.quantizer, 20, symbols=codec.symbols,
                       rate_weight=rate_weight)
    before, after = refine.lagrangian(start, *args), refine.lagrangian(refined, *args)
    assert np.all(after <= before + 1e-7), (before, after)
    assert np.any(after < before - 1e-6)  # 20 steps at 4 bits find something for some image
    if rate_weight:  # the rate term is the symbol model's code length in bits per pixel
        pixels = np.prod(images.shape[1:-1])
        bits = codec.symbols.bits(codec.quantizer.quantize(refined)).sum(-1)
        np.testing.assert_allclose(after - refine.lagrangian(refined, *args[:-2]), rate_weight * bits / pixels,
                                   rtol=1e-6)


def test_a_heavier_rate_term_buys_fewer_bits(net, images):
    codec = C.fit_codec(synthetic_latents(300), 4, net.id)
    kw = dict(refine_steps=30, render_jax=net.render_jax, many=True)
    light = C.encode(images, codec, net.id, net.fit, net.render, **kw)
    heavy = C.encode(images, codec, net.id, net.fit, net.render, rate_weight=0.05, **kw)
    assert heavy.payload_bpp < light.payload_bpp
    with pytest.raises(ValueError, match="rate_weight must be a finite number >= 0"):
        C.encode(images, codec, net.id, net.fit, net.render, rate_weight=-1.0, **kw)
    with pytest.raises(ValueError, match="needs the symbol model"):
        refine.refine(net.fit(images), images, net.render_jax, codec.quantizer, 2, rate_weight=0.1)


def test_wrong_network_is_rejected(net, codec, image, images):
    other = LinearNet(seed=1)
    for data in (C.encode(image, codec, net.id, net.fit, net.render).data,
                 C.encode(images, codec, net.id, net.fit, net.render, many=True).data):
        with pytest.raises(ValueError, match="encoded with network .* decode it with the checkpoint"):
            C.decode(data, codec, other.id, other.render)
    with pytest.raises(ValueError, match="codec was fitted for network"):
        C.encode(image, codec, other.id, other.fit, other.render)


def test_wrong_codec_is_rejected(net, codec, image):
    enc = C.encode(image, codec, net.id, net.fit, net.render)
    codec4 = C.fit_codec(synthetic_latents(300), 4, net.id)
    with pytest.raises(ValueError, match="encoded with codec"):
        C.decode(enc.data, codec4, net.id, net.render)


@pytest.mark.parametrize("many", [False, True])
def test_truncated_corrupt_and_foreign_files(net, codec, image, images, many):
    data = C.encode(images if many else image, codec, net.id, net.fit, net.render, many=many).data
    for n in (0, 5, container.SINGLE_OVERHEAD - 1):
        with pytest.raises(ValueError, match="too short"):
            container.unpack(data[:n])
    for n in range(container.SINGLE_OVERHEAD, len(data)):  # every cut, and a byte appended
        with pytest.raises(ValueError, match="checksum mismatch"):
            C.decode(data[:n], codec, net.id, net.render)
    with pytest.raises(ValueError, match="checksum mismatch"):
        C.decode(data + b"\0", codec, net.id, net.render)
    for pos in range(len(data)):  # every byte: magic, version, ids, count, payload, checksum
        bad = bytearray(data)
        bad[pos] ^= 0x10
        with pytest.raises(ValueError, match="checksum mismatch|not a functa|version"):
            C.decode(bytes(bad), codec, net.id, net.render)
    with pytest.raises(ValueError, match="not a functa-compressed file"):
        container.unpack(b"\x89PNG" + data[4:])
    with pytest.raises(ValueError, match="version-1 compressed file"):
        container.unpack(b"AFZ\x01" + bytes(40))
    future = bytearray(data)
    future[1] = 0x91
    with pytest.raises(ValueError, match="version 9"):
        container.unpack(bytes(future))


def test_corrupt_byte_with_recomputed_crc_still_caught_by_ids(net, codec, image):
    data = bytearray(C.encode(image, codec, net.id, net.fit, net.render).data)
    data[3] ^= 1  # model id byte, checksum fixed up: the id check must still catch it
    body = bytes(data[:-4])
    fixed = body + zlib.crc32(body).to_bytes(4, "big")
    with pytest.raises(ValueError, match="encoded with network"):
        C.decode(fixed, codec, net.id, net.render)


def test_image_the_model_cannot_take():
    with pytest.raises(ValueError, match=r"image has shape \(8, 5, 3\), but the model takes 6x5x3"):
        C.check_image(np.zeros((8, 5, 3)), SHAPE, CHANNELS)
    with pytest.raises(ValueError, match="on \\[0, 1\\]"):
        C.check_image(np.full((6, 5, 3), 2.0), SHAPE, CHANNELS)


# ----------------------------------------------------------------------------- command line
@pytest.fixture(scope="module")
def meta_ckpt(tmp_path_factory):
    """A tiny (untrained) meta-learning checkpoint, its training functaset, and a test image."""
    from asmr_jax.asmr import ASMR
    from asmr_jax.data import write_png
    from meta import functa, inference

    root = tmp_path_factory.mktemp("meta")
    meta = functa.MetaModel(ASMR((8, 8), 3, levels=2, widths=16), latent_dim=8, inner_steps=3, lr_scale=1.0)
    ckpt = checkpoint.export(root / "ckpt", meta, meta.init(jax.random.key(0)))
    checkpoint.export(root / "other", meta, meta.init(jax.random.key(1)))
    rng = np.random.default_rng(0)
    yy, xx = np.meshgrid(np.linspace(0, 1, 8), np.linspace(0, 1, 8), indexing="ij")
    images = np.stack([np.clip(0.5 + 0.4 * np.sin(3 * a * yy + b * xx)[..., None] * rng.uniform(0.3, 1, 3),
                               0, 1)
                       for a, b in rng.uniform(0, 2, (40, 2))]).astype(np.float32)
    from meta import functaset

    params = checkpoint.load(ckpt)[1]
    latents, psnr = inference.fit_latents(meta, params, images[:32])
    functaset.save_functaset(root / "train.npz", functaset.build(meta, params, latents, psnr))
    write_png(root / "img.png", images[35])
    write_png(root / "big.png", np.zeros((9, 8, 3)))
    return root


def run_cli(capsys, *argv):
    from meta.commands import main

    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out + out.err


def test_cli_codec_fit_encode_decode(meta_ckpt, capsys):
    from PIL import Image

    r = meta_ckpt
    rc, out = run_cli(capsys, "codec-fit", r / "ckpt", "--bits", "4", "6", "--functaset", r / "train.npz")
    assert rc == 0, out
    assert (r / "ckpt/codec/bits4.npz").is_file() and (r / "ckpt/codec/bits6.npz").is_file()
    assert C.Codec.load(r / "ckpt/codec/bits4.npz").quantizer.basis is not None  # pca by default
    rc, out = run_cli(capsys, "codec-fit", r / "ckpt", "--bits", "4", "--functaset", r / "train.npz",
                      "--quantizer", "dim", "--out", r / "dim4.npz")
    assert rc == 0, out
    assert C.Codec.load(r / "dim4.npz").quantizer.basis is None
    before = (r / "ckpt/codec/bits4.npz").read_bytes()
    rc, out = run_cli(capsys, "codec-fit", r / "ckpt", "--bits", "4", "--functaset", r / "train.npz",
                      "--clip", "2")
    assert rc == 2 and "already exists" in out
    assert (r / "ckpt/codec/bits4.npz").read_bytes() == before

    rc, out = run_cli(capsys, "encode", r / "img.png", "--model", r / "ckpt", "--bits", "4", "--out",
                      r / "img.afz",
                      "--refine", "3")
    assert rc == 0, out
    enc_psnr = out.split("PSNR ")[1].split(" dB")[0]
    data = (r / "img.afz").read_bytes()
    assert f"{len(data)} bytes" in out
    rc, out = run_cli(capsys, "decode", r / "img.afz", "--model", r / "ckpt", "--out", r / "dec.png",
                      "--reference", r / "img.png")
    assert rc == 0, out
    assert out.split("PSNR ")[1].split(" dB")[0] == enc_psnr  # the decoder sees what the encoder measured

    # the PNG holds exactly the render of the dequantized latent
    net = C.MetaNetwork(r / "ckpt")
    codec = C.load_codec_for(net, 4)
    image, latent, stream = C.decode(data, codec, net.id, net.render)
    from asmr_jax.data import to_uint8

    np.testing.assert_array_equal(np.asarray(Image.open(r / "dec.png")), to_uint8(image))
    assert image.shape == (8, 8, 3) and stream.count is None and latent.shape == (8,)


def test_cli_encode_decode_folder_as_container_and_per_image(meta_ckpt, capsys):
    from PIL import Image

    from asmr_jax.data import to_uint8, write_png

    r = meta_ckpt
    if not (r / "ckpt/codec/bits6.npz").exists():
        assert run_cli(capsys, "codec-fit", r / "ckpt", "--bits", "6", "--functaset", r / "train.npz")[0] == 0
    folder = r / "folder"
    folder.mkdir()
    for i, name in enumerate(("b.png", "a.png", "c.png")):
        write_png(folder / name, np.asarray(Image.open(r / "img.png"), np.float32) / 255.0 * (1 - 0.2 * i))
    rc, out = run_cli(capsys, "encode", folder, "--model", r / "ckpt", "--bits", "6", "--out", r / "all.afzm")
    assert rc == 0, out
    assert "3 images" in out and f"{(r / 'all.afzm').stat().st_size} bytes" in out
    rc, out = run_cli(capsys, "decode", r / "all.afzm", "--model", r / "ckpt", "--out", r / "dec",
                      "--reference", folder)
    assert rc == 0, out
    assert sorted(p.name for p in (r / "dec").iterdir()) == ["00000.png", "00001.png", "00002.png"]
    # the container decodes to the same pixels as one file per image, in sorted name order
    rc, out = run_cli(capsys, "encode", folder, "--model", r / "ckpt", "--bits", "6", "--out", r / "each",
                      "--per-image")
    assert rc == 0, out
    for i, name in enumerate(("a", "b", "c")):
        assert run_cli(capsys, "decode", r / "each" / f"{name}.afz", "--model", r / "ckpt", "--out",
                       r / f"one_{name}.png")[0] == 0
        np.testing.assert_array_equal(np.asarray(Image.open(r / f"one_{name}.png")),
                                      np.asarray(Image.open(r / "dec" / f"{i:05d}.png")))
    total = sum((r / "each" / f"{n}.afz").stat().st_size for n in "abc")
    assert (r / "all.afzm").stat().st_size < total
    net = C.MetaNetwork(r / "ckpt")
    images, _, _ = C.decode((r / "all.afzm").read_bytes(), C.load_codec_for(net, 6), net.id, net.render)
    np.testing.assert_array_equal(np.asarray(Image.open(r / "dec/00001.png")), to_uint8(images[1]))
    # a container needs a folder to decode into; a truncated one is refused before anything is written
    rc, out = run_cli(capsys, "decode", r / "all.afzm", "--model", r / "ckpt", "--out", r / "img.png")
    assert rc == 2 and "must be a folder" in out
    (r / "cut.afzm").write_bytes((r / "all.afzm").read_bytes()[:-5])
    rc, out = run_cli(capsys, "decode", r / "cut.afzm", "--model", r / "ckpt", "--out", r / "dec2")
    assert rc == 2 and "checksum mismatch" in out and not (r / "dec2").exists()


def test_cli_errors_leave_files_untouched(meta_ckpt, capsys):
    r = meta_ckpt
    if not (r / "ckpt/codec/bits4.npz").exists():
        assert run_cli(capsys, "codec-fit", r / "ckpt", "--bits", "4", "--functaset", r / "train.npz")[0] == 0
    assert run_cli(capsys, "encode", r / "img.png", "--model", r / "ckpt", "--bits", "4", "--out",
                   r / "e.afz")[0] == 0
    good = (r / "e.afz").read_bytes()
    (r / "keep.png").write_bytes(b"precious")

    def fails(pattern, *argv):
        rc, out = run_cli(capsys, *argv)
        assert rc == 2, out
        assert pattern in out, out

    fails("already exists", "encode", r / "img.png", "--model", r / "ckpt", "--bits", "4", "--out",
          r / "e.afz")
    assert (r / "e.afz").read_bytes() == good
    fails("bits must be an integer in 1..16", "encode", r / "img.png", "--model", r / "ckpt", "--bits", "17",
          "--out", r / "x.afz")
    fails("no 5-bit codec", "encode", r / "img.png", "--model", r / "ckpt", "--bits", "5", "--out",
          r / "x.afz")
    fails("but the model takes 8x8x3", "encode", r / "big.png", "--model", r / "ckpt", "--bits", "4",
          "--out", r / "x.afz")
    assert not (r / "x.afz").exists()

    fails("encoded with network", "decode", r / "e.afz", "--model", r / "other", "--out", r / "d.png")
    (r / "trunc.afz").write_bytes(good[:-3])
    fails("truncated or corrupt", "decode", r / "trunc.afz", "--model", r / "ckpt", "--out", r / "d.png")
    bad = bytearray(good)
    bad[-6] ^= 0xFF
    (r / "bad.afz").write_bytes(bytes(bad))
    fails("checksum mismatch", "decode", r / "bad.afz", "--model", r / "ckpt", "--out", r / "keep.png",
          "--overwrite")
    assert not (r / "d.png").exists()
    assert (r / "keep.png").read_bytes() == b"precious"
    fails("already exists", "decode", r / "e.afz", "--model", r / "ckpt", "--out", r / "keep.png")
    assert (r / "keep.png").read_bytes() == b"precious"
    # a codec fitted for another network is refused, not silently used
    fails("was fitted for network", "encode", r / "img.png", "--model", r / "other", "--bits", "4",
          "--codec", r / "ckpt/codec/bits4.npz", "--out", r / "x.afz")


def test_cli_codec_fit_from_a_dataset_split(tmp_path, capsys):
    from asmr_jax.asmr import ASMR
    from meta import functa

    meta = functa.MetaModel(ASMR((8, 8), 1, levels=2, widths=16), latent_dim=4, lr_scale=1.0)
    ckpt = checkpoint.export(tmp_path / "gray", meta, meta.init(jax.random.key(0)))
    rc, out = run_cli(capsys, "codec-fit", ckpt, "--bits", "3", "--dataset", "lfw", "--limit", "24")
    assert rc == 0, out
    assert "24 lfw/train images" in out
    codec = C.Codec.load(C.codec_path(ckpt, 3))
    assert codec.dim == 4 and codec.bits == 3 and codec.model_id == C.MetaNetwork(ckpt).id
    rc, out = run_cli(capsys, "codec-fit", ckpt, "--bits", "3")
    assert rc == 2 and "--functaset TRAIN.npz or --dataset NAME" in out


def test_patch_splits_share_no_image():
    """The codec is fitted on train-split latents: no test patch may appear in the train split."""
    import hashlib

    from asmr_jax.datasets import load_dataset

    def digests(ds):
        return {hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest() for x in ds.get(np.arange(len(ds)))}

    train, test = digests(load_dataset("patches", "train", 32)), digests(load_dataset("patches", "test", 32))
    assert len(test) > 100 and not train & test
