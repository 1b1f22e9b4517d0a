from __future__ import annotations

import pytest

from gateway.shortener.codes import ALPHABET, CODE_LENGTH, CODE_SPACE, CodeGenerator, FeistelPermutation, decode, encode


def test_base62_round_trips_and_pads_to_seven_characters() -> None:
    assert encode(0) == "0000000"
    assert encode(61) == "000000z"
    assert encode(62) == "0000010"
    assert encode(CODE_SPACE - 1) == "zzzzzzz"
    for value in (0, 1, 61, 62, 3843, 123_456_789, CODE_SPACE - 1):
        assert decode(encode(value)) == value
    with pytest.raises(ValueError):
        encode(CODE_SPACE)
    with pytest.raises(ValueError):
        encode(-1)


@pytest.mark.parametrize(
    ("space", "half_bits"),
    [pytest.param(62**2, 6, id="62^2 in 12 bits"), pytest.param(62**3, 9, id="62^3 in 18 bits")],
)
def test_the_feistel_network_with_cycle_walking_is_a_bijection(space: int, half_bits: int) -> None:
    permutation = FeistelPermutation("secret", space=space, half_bits=half_bits)
    images = [permutation.permute(value) for value in range(space)]
    assert sorted(images) == list(range(space))
    assert images != list(range(space))
    assert all(permutation.invert(image) == value for value, image in enumerate(images))


def test_codes_are_seven_base62_characters_unique_and_reversible() -> None:
    generator = CodeGenerator("a-test-secret")
    codes = [generator.code(counter) for counter in range(1, 20_001)]
    assert len(set(codes)) == len(codes)
    assert all(len(code) == CODE_LENGTH and set(code) <= set(ALPHABET) for code in codes)
    for counter in (0, 1, 2, 19_999, CODE_SPACE - 1):
        assert generator.counter(generator.code(counter)) == counter


def test_consecutive_counters_give_codes_that_do_not_follow_each_other() -> None:
    generator = CodeGenerator("a-test-secret")
    values = [decode(generator.code(counter)) for counter in range(1, 2001)]
    ascending = sum(1 for a, b in zip(values, values[1:], strict=False) if b > a) / (len(values) - 1)
    # A counter in disguise would ascend every time; a random-looking sequence about half of the time.
    assert 0.4 < ascending < 0.6
    gaps = sorted(abs(b - a) for a, b in zip(values, values[1:], strict=False))
    assert gaps[len(gaps) // 2] > CODE_SPACE // 10


def test_the_secret_keys_the_permutation() -> None:
    one, same, other = CodeGenerator("secret-one"), CodeGenerator("secret-one"), CodeGenerator("secret-two")
    assert [one.code(n) for n in range(1, 100)] == [same.code(n) for n in range(1, 100)]
    assert sum(one.code(n) == other.code(n) for n in range(1, 100)) == 0


def test_out_of_range_counters_are_refused() -> None:
    with pytest.raises(ValueError):
        CodeGenerator("secret").code(CODE_SPACE)
