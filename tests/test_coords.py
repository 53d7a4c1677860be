import numpy as np
import pytest

from asmr_jax import coords


def test_auto_bases_paper_configs():
    assert coords.auto_bases((512, 512), 4) == ((4, 4, 4, 8), (4, 4, 4, 8))
    assert coords.auto_bases((512,), 3) == ((8, 8, 8),)
    assert coords.auto_bases((512, 768), 4) == ((4, 4, 4, 8), (4, 4, 6, 8))
    assert coords.auto_bases((32000,), 4) == ((10, 10, 16, 20),)


@pytest.mark.parametrize("n", [1, 2, 7, 25, 300, 451, 741, 1411])
@pytest.mark.parametrize("levels", [2, 3, 4, 6])
def test_auto_bases_cover_size(n, levels):
    (b,) = coords.auto_bases((n,), levels)
    assert len(b) == levels and min(b) >= 1
    assert n <= np.prod(b) <= max(2 * n, n + 64)
    assert list(b) == sorted(b)  # largest base at the finest level


def test_decompose_is_mixed_radix():
    bases = ((2, 3, 4), (5, 1, 2))
    c = coords.grid_coords((24, 10))
    levels = coords.decompose(c, bases)
    digits = [np.rint(np.asarray(x) * np.maximum(np.array([b[i] for b in bases]) - 1, 1)).astype(int)
              for i, x in enumerate(levels)]
    # reassemble x = sum_l digit_l * G_l
    for axis, b in enumerate(bases):
        widths = [int(np.prod(b[i + 1:])) for i in range(3)]
        back = sum(digits[i][:, axis] * widths[i] for i in range(3))
        np.testing.assert_array_equal(back, c[:, axis])
    # axis 1, level 1 has base 1: its coordinate is 0
    assert np.all(np.asarray(levels[1])[:, 1] == 0)
    assert all(0 <= np.asarray(x).min() and np.asarray(x).max() <= 1 for x in levels)


@pytest.mark.parametrize(
    "bases, shape, match",
    [
        ([4, 4, 4, 8], (512, 513), "axis 1 .* multiply to 512, need >= 513"),
        ([[4, 4], [4, 4, 4]], (16, 64), "same number of levels"),
        ([4, 0, 8], (32,), "axis 0 must all be >= 1"),
        ([[4, 4], [4, 4]], (16,), "describe 2 axes but the signal has 1"),
        ([8], (8,), "at least 2 levels"),
        ([], (8,), "empty"),
    ],
)
def test_bad_bases(bases, shape, match):
    with pytest.raises(ValueError, match=match):
        coords.normalize_bases(bases, shape)


def test_parse_bases():
    assert coords.parse_bases("4,4,4,8") == [4, 4, 4, 8]
    assert coords.parse_bases("4,4,4,8;4,4,6,8") == [[4, 4, 4, 8], [4, 4, 6, 8]]
    assert coords.parse_bases("4x2x2x2") == [4, 2, 2, 2]
    with pytest.raises(ValueError, match="cannot parse bases"):
        coords.parse_bases("4,x")


def test_auto_bases_prefers_padding_over_uninformative_levels():
    from asmr_jax.coords import auto_bases

    assert auto_bases((25,), 4) == ((2, 2, 2, 4),)  # not (1, 1, 5, 5): every level sees >= 2 digits
    assert auto_bases((32, 451, 741), 4) == ((2, 2, 2, 4), (4, 4, 5, 6), (5, 5, 5, 6))
    for n in (25, 32, 451, 741):
        for levels in (3, 4):
            (b,) = auto_bases((n,), levels)
            assert min(b) >= 2 and np.prod(b) >= n and list(b) == sorted(b)
    assert auto_bases((6,), 4) == ((1, 1, 2, 3),)  # fewer pixels than 2**levels: a base of 1 is unavoidable
