"""Short codes: a counter sent through a keyed permutation of [0, 62^7), written in base62.

A permutation maps distinct counters to distinct codes, so codes are unique by construction and need no
collision loop; the key makes consecutive counters land far apart, so the sequence cannot be walked.
The permutation is a balanced Feistel network on 2 * 21 bits (2^42 ≥ 62^7), restricted to [0, 62^7) by
cycle walking: a value that falls outside is permuted again until it falls inside, which keeps the map a
bijection on the smaller domain (on average 1.25 rounds of the network per code).
"""

from __future__ import annotations

import hashlib

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
CODE_LENGTH = 7
CODE_SPACE = len(ALPHABET) ** CODE_LENGTH
ROUNDS = 8
_INDEX = {char: value for value, char in enumerate(ALPHABET)}


def encode(value: int, length: int = CODE_LENGTH) -> str:
    """`value` in base62, left-padded with '0' to `length` characters."""
    if not 0 <= value < len(ALPHABET) ** length:
        raise ValueError(f"{value} does not fit in {length} base62 digits")
    digits = []
    for _ in range(length):
        value, digit = divmod(value, 62)
        digits.append(ALPHABET[digit])
    return "".join(reversed(digits))


def decode(code: str) -> int:
    value = 0
    for char in code:
        value = value * 62 + _INDEX[char]
    return value


class FeistelPermutation:
    """A keyed bijection of [0, space); `half_bits` must satisfy 4**half_bits >= space."""

    def __init__(self, secret: str, *, space: int = CODE_SPACE, half_bits: int = 21, rounds: int = ROUNDS) -> None:
        if 1 << (2 * half_bits) < space:
            raise ValueError(f"2 * {half_bits} bits cannot hold {space} values")
        self.space = space
        self._bits = half_bits
        self._mask = (1 << half_bits) - 1
        self._width = (half_bits + 7) // 8
        key = hashlib.sha256(secret.encode()).digest()
        # One keyed hash per round (its number as the personalisation), copied per call: cheaper than re-keying.
        self._rounds = [
            hashlib.blake2b(key=key, digest_size=8, person=round_number.to_bytes(16, "big"))
            for round_number in range(rounds)
        ]

    def _f(self, round_number: int, half: int) -> int:
        h = self._rounds[round_number].copy()
        h.update(half.to_bytes(self._width, "big"))
        return int.from_bytes(h.digest(), "big") & self._mask

    def _forward(self, value: int) -> int:
        left, right = value >> self._bits, value & self._mask
        for round_number in range(len(self._rounds)):
            left, right = right, left ^ self._f(round_number, right)
        return (left << self._bits) | right

    def _backward(self, value: int) -> int:
        left, right = value >> self._bits, value & self._mask
        for round_number in reversed(range(len(self._rounds))):
            left, right = right ^ self._f(round_number, left), left
        return (left << self._bits) | right

    def permute(self, value: int) -> int:
        if not 0 <= value < self.space:
            raise ValueError(f"{value} is outside [0, {self.space})")
        value = self._forward(value)
        while value >= self.space:
            value = self._forward(value)
        return value

    def invert(self, value: int) -> int:
        if not 0 <= value < self.space:
            raise ValueError(f"{value} is outside [0, {self.space})")
        value = self._backward(value)
        while value >= self.space:
            value = self._backward(value)
        return value


class CodeGenerator:
    """Counter → 7-character code, and back (to tell which counter a code came from)."""

    def __init__(self, secret: str) -> None:
        self._permutation = FeistelPermutation(secret)

    def code(self, counter: int) -> str:
        return encode(self._permutation.permute(counter))

    def counter(self, code: str) -> int:
        return self._permutation.invert(decode(code))
