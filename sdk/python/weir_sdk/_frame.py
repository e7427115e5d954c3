"""The byte encodings of the weir plugin contract, written once.

- Frames (``wit/types.wit``, ``batch``): each record is a 20-byte
  little-endian header ``timestamp: i64, key_len: u32 (0xffffffff = no
  key), value_len: u32, headers_len: u32`` followed by the key, value and
  header bytes; headers are ``name_len: u16, name, value_len: u32, value``.
- Length-prefixed lists (``state.get-many``): ``u32`` little-endian length,
  then the bytes; in a response ``0xffffffff`` means no value and
  ``0xfffffffe`` followed by a ``u32`` index repeats an earlier key's entry.
- State operations (``state.apply``): ``op: u8`` then length-prefixed
  fields (state name, key, map key for map operations, value for puts).

Operator authors never see these; the SDK and its test harness do.
"""

import struct

_HEADER = struct.Struct("<qIII")
_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")
NO_KEY = 0xFFFFFFFF
ABSENT = 0xFFFFFFFF
REPEAT = 0xFFFFFFFE

PUT = 0
DELETE = 1
MAP_PUT = 2
MAP_REMOVE = 3
MAP_CLEAR = 4


class FrameError(ValueError):
    """A batch that is not in the frame format."""


def read_frames(buf):
    """Yields ``(timestamp, key or None, value, raw_headers)`` for each record of a batch."""
    buf = bytes(buf)
    at, end = 0, len(buf)
    unpack = _HEADER.unpack_from
    while at < end:
        if end - at < 20:
            raise FrameError(f"truncated record header at byte {at}")
        ts, klen, vlen, hlen = unpack(buf, at)
        at += 20
        if klen == NO_KEY:
            key = None
        else:
            key = buf[at:at + klen]
            at += klen
        value = buf[at:at + vlen]
        at += vlen
        raw_headers = buf[at:at + hlen]
        at += hlen
        if at > end:
            raise FrameError(f"record ends at byte {at}, past the end of the batch ({end} bytes)")
        yield ts, key, value, raw_headers


def write_frame(out, key, value, timestamp, raw_headers=b""):
    """Appends one record to the bytearray ``out``."""
    out += _HEADER.pack(timestamp, NO_KEY if key is None else len(key), len(value), len(raw_headers))
    if key is not None:
        out += key
    out += value
    out += raw_headers


def encode_headers(headers):
    """``[(name, value), ...]`` (bytes or str) as raw header bytes."""
    out = bytearray()
    for name, value in headers:
        name, value = as_bytes(name), as_bytes(value)
        if len(name) > 0xFFFF:
            raise ValueError(f"header name of {len(name)} bytes is longer than 65,535 bytes")
        out += _U16.pack(len(name))
        out += name
        out += _U32.pack(len(value))
        out += value
    return bytes(out)


def decode_headers(raw):
    """Raw header bytes as ``[(name, value), ...]`` of bytes."""
    out, at = [], 0
    while at < len(raw):
        (nlen,) = _U16.unpack_from(raw, at)
        name = raw[at + 2:at + 2 + nlen]
        at += 2 + nlen
        (vlen,) = _U32.unpack_from(raw, at)
        out.append((name, raw[at + 4:at + 4 + vlen]))
        at += 4 + vlen
    if at != len(raw):
        raise FrameError("malformed record headers")
    return out


def as_bytes(value):
    """A key, value or name given as str (UTF-8), bytes-like, as bytes."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"expected str or bytes, got {type(value).__name__}")


def put_lp(out, field):
    """Appends a length-prefixed field."""
    out += _U32.pack(len(field))
    out += field


def read_lp_list(buf):
    """The fields of a length-prefixed list (as ``state.get-many`` takes keys)."""
    out, at = [], 0
    while at < len(buf):
        if at + 4 > len(buf):
            raise FrameError("truncated length-prefixed list")
        (n,) = _U32.unpack_from(buf, at)
        out.append(bytes(buf[at + 4:at + 4 + n]))
        at += 4 + n
    if at != len(buf):
        raise FrameError("truncated length-prefixed list")
    return out


def encode_get_many_response(entries):
    """``entries``: per key, bytes, None (no value) or ``("repeat", index)``."""
    out = bytearray()
    for e in entries:
        if e is None:
            out += _U32.pack(ABSENT)
        elif isinstance(e, tuple):
            out += _U32.pack(REPEAT)
            out += _U32.pack(e[1])
        else:
            put_lp(out, e)
    return bytes(out)


def read_get_many_response(buf, count):
    """The ``count`` values of a ``get-many`` response, repeats resolved."""
    values, at = [], 0
    for j in range(count):
        if at + 4 > len(buf):
            raise FrameError("malformed get-many response: fewer entries than keys")
        (n,) = _U32.unpack_from(buf, at)
        at += 4
        if n == ABSENT:
            values.append(None)
        elif n == REPEAT:
            (k,) = _U32.unpack_from(buf, at)
            at += 4
            if k >= j:
                raise FrameError("malformed get-many response: a repeat points forward")
            values.append(values[k])
        else:
            values.append(bytes(buf[at:at + n]))
            at += n
    return values


def encode_op(out, op, *fields):
    """Appends one ``state.apply`` operation."""
    out.append(op)
    for f in fields:
        put_lp(out, f)


def decode_ops(buf):
    """The operations of an ``apply`` buffer as tuples ``(op, name, key, ...)``; all or nothing."""
    ops, at = [], 0
    arity = {PUT: 3, DELETE: 2, MAP_PUT: 4, MAP_REMOVE: 3, MAP_CLEAR: 2}
    while at < len(buf):
        op = buf[at]
        at += 1
        if op not in arity:
            raise FrameError(f"unknown state operation {op}")
        fields = []
        for _ in range(arity[op]):
            if at + 4 > len(buf):
                raise FrameError("truncated state operation")
            (n,) = _U32.unpack_from(buf, at)
            if at + 4 + n > len(buf):
                raise FrameError("truncated state operation")
            fields.append(bytes(buf[at + 4:at + 4 + n]))
            at += 4 + n
        fields[0] = fields[0].decode()
        ops.append((op, *fields))
    return ops
