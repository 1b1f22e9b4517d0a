"""The one path every step sees: a request's raw path normalised once, at the edge (RFC 3986 §6.2.2).

`normalize_path(raw)` returns two spellings of the same path:

- `encoded`: what goes upstream. Percent-encodings of unreserved characters decoded (`%61` → `a`, `%7E` → `~`),
  the hex of the others upper-cased, dot segments removed (§5.2.4), empty segments merged (`//` → `/`), and
  bytes a request target may not carry raw (`"<>^`{|}`) percent-encoded.
- `decoded`: what routes, rate-limit rules, the short-code lookup and the gateway's own API match on: `encoded`
  with every escape decoded (UTF-8, invalid sequences replaced) but an allowed `%2F` / `%5C`.

So `/app/./x`, `/app//x`, `/%61pp/x` and `/app/y/%2e%2e/x` are all `/app/x` for every rule and for the upstream.

Refused (`InvalidPath`, a 400 at the edge): a path not starting with `/`, a malformed escape (`%zz`), an escaped
NUL or control character (it could reach a log, a header or a template), and, unless `allow_encoded_slashes`,
an escaped `/` or `\\` (`%2F`, `%5C`) or a raw `\\`. An escaped slash would be one segment here and two in an
upstream that decodes it, which is how a request slips past a rule or out of a rewritten prefix.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import NamedTuple
from urllib.parse import unquote

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEX = frozenset(b"0123456789abcdefABCDEF")
# What a path already in normal form is made of: pchar without '%' (RFC 3986 §3.3), and no dot or empty segment.
_NORMAL = re.compile(rb"(?:/(?!\.\.?(?:/|$))[A-Za-z0-9\-._~!$&'()*+,;=:@]+)+/?|/")
# Visible ASCII that RFC 3986 does not allow raw in a path: encoded on the way through, as browsers do.
_ENCODE_RAW = {byte: b"%%%02X" % byte for byte in b'"<>^`{|}\\'}
_SLASHES = frozenset({0x2F, 0x5C})


class InvalidPath(ValueError):
    """The path cannot be forwarded unambiguously."""


class NormalPath(NamedTuple):
    #: For matching: every escape decoded.
    decoded: str
    #: For the upstream request line: ASCII, escapes only where RFC 3986 needs them.
    encoded: bytes


def normalize_path(raw: bytes, *, allow_encoded_slashes: bool = False) -> NormalPath:
    return _normalize(raw, allow_encoded_slashes)


@lru_cache(maxsize=4096)
def _normalize(raw: bytes, allow_encoded_slashes: bool) -> NormalPath:
    # Cached: the same few paths arrive over and over; a path that raises is not cached (and is rare).
    if _NORMAL.fullmatch(raw):
        text = raw.decode("ascii")
        return NormalPath(text, raw)
    if not raw.startswith(b"/"):
        raise InvalidPath("the path must start with '/'")
    out = bytearray()
    index, length = 0, len(raw)
    while index < length:
        byte = raw[index]
        if byte == 0x25:  # '%'
            pair = raw[index + 1 : index + 3]
            if len(pair) != 2 or pair[0] not in _HEX or pair[1] not in _HEX:
                raise InvalidPath("the path has a malformed percent-encoding")
            value = int(pair, 16)
            if value < 0x20 or value == 0x7F:
                raise InvalidPath("the path has an encoded control character")
            if value in _SLASHES and not allow_encoded_slashes:
                raise InvalidPath("the path has an encoded '/' or '\\'")
            if value in _UNRESERVED:
                out.append(value)
            else:
                out += b"%%%02X" % value
            index += 3
            continue
        if byte < 0x21 or byte > 0x7E:
            raise InvalidPath("the path has a byte that is not visible ASCII")
        if byte == 0x5C and not allow_encoded_slashes:
            raise InvalidPath("the path has a '\\'")
        encoded = _ENCODE_RAW.get(byte)
        if encoded is None:
            out.append(byte)
        else:
            out += encoded
        index += 1
    encoded_path = _remove_dot_segments(bytes(out))
    text = encoded_path.decode("ascii")
    if allow_encoded_slashes and ("%2F" in text or "%5C" in text):
        # An escaped slash stays one segment for matching, as it is for an upstream that does not decode it.
        decoded = "%2F".join("%5C".join(unquote(p) for p in part.split("%5C")) for part in text.split("%2F"))
        return NormalPath(decoded, encoded_path)
    return NormalPath(unquote(text), encoded_path)


def _remove_dot_segments(path: bytes) -> bytes:
    """RFC 3986 §5.2.4 on an absolute path, with empty segments merged; a trailing slash is kept."""
    segments: list[bytes] = []
    parts = path.split(b"/")[1:]
    for part in parts:
        if part == b"..":
            if segments:
                segments.pop()
        elif part and part != b".":
            segments.append(part)
    trailing = parts[-1] in (b"", b".", b"..") and bool(segments)
    return b"/" + b"/".join(segments) + (b"/" if trailing else b"")
