"""Independent reference encoders and decoders for weir's value formats.

The Kafka format tests check weir's Avro and protobuf code against the
implementations the ecosystem uses: fastavro (Avro) and Google's protobuf
runtime with the protoc in grpcio-tools. This script makes test records
with them and checks what weir wrote.

    formats.py make  avro|protobuf SCHEMA N VALUES EXPECTED
    formats.py check avro|protobuf SCHEMA VALUES EXPECTED

VALUES holds the encoded values, each as a 4-byte big-endian length and
the value (Confluent framing: a zero byte, the schema id, for protobuf
the message indexes). EXPECTED holds one JSON line per record: the JSON
weir is to read each value as (make), or the JSON the values must decode
to (check). Exit code 1 with a message names the first record that
differs.
"""

import decimal
import importlib
import io
import json
import os
import random
import struct
import sys
import tempfile

SCHEMA_ID = 42
# shop.Order is the second top-level message of the test's .proto: index
# list [1], written as count 1 (zigzag 2) and index 1 (zigzag 2).
PROTO_INDEXES = b"\x02\x02"
AWKWARD = ["", "plain", 'quote " and \\ backslash', "tab\tnew\nline", "\u00e9t\u00e9 \u2603 \U0001f600", "\x01control"]


def frame(body, indexes=b""):
    return b"\x00" + struct.pack(">I", SCHEMA_ID) + indexes + body


def unframe(value, indexes=b""):
    if value[:1] != b"\x00" or struct.unpack(">I", value[1:5])[0] != SCHEMA_ID:
        raise ValueError(f"not framed with schema id {SCHEMA_ID}: {value[:5]!r}")
    if not value[5:].startswith(indexes):
        raise ValueError(f"message indexes {value[5:7]!r}, expected {indexes!r}")
    return value[5 + len(indexes):]


def write_values(path, values):
    with open(path, "wb") as f:
        for v in values:
            f.write(struct.pack(">I", len(v)))
            f.write(v)


def read_values(path):
    data = open(path, "rb").read()
    out, at = [], 0
    while at < len(data):
        (n,) = struct.unpack(">I", data[at:at + 4])
        out.append(data[at + 4:at + 4 + n])
        at += 4 + n
    return out


# Avro ------------------------------------------------------------------

def avro_records(n, rng):
    for i in range(n):
        lines = [{"sku": f"sku-{rng.randrange(1000)}", "qty": rng.randrange(-5, 50)} for _ in range(rng.randrange(4))]
        note = rng.choice([None, rng.randrange(-2**62, 2**62), rng.choice(AWKWARD)])
        yield {
            "id": i * 7919 - 10**12,
            "user": rng.choice(AWKWARD) + str(i),
            "amount": decimal.Decimal(rng.randrange(-10**8, 10**8)).scaleb(-2),
            "coupon": rng.choice([None, "SPRING", rng.choice(AWKWARD)]),
            "status": rng.choice(["NEW", "PAID", "SHIPPED"]),
            "tags": [rng.choice(AWKWARD) for _ in range(rng.randrange(3))],
            "attrs": {f"k{j}": rng.randrange(-2**31, 2**31) for j in range(rng.randrange(3))},
            "score": rng.choice([0.0, -1.5, 1e-300, 123456.789, rng.random()]),
            "hash": bytes(rng.randrange(256) for _ in range(4)),
            "lines": lines,
            "note": note,
            "paid": rng.random() < 0.5,
        }


def avro_json(rec):
    """The JSON weir reads an Avro record as: decimals as strings, bytes and
    fixed as strings of code points U+0000-U+00FF, unions unwrapped."""
    def conv(v):
        if isinstance(v, decimal.Decimal):
            return str(v)
        if isinstance(v, (bytes, bytearray)):
            return bytes(v).decode("latin-1")
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        if isinstance(v, list):
            return [conv(x) for x in v]
        return v
    return conv(rec)


def avro_schema(path):
    import fastavro
    return fastavro.parse_schema(json.load(open(path)))


def avro_make(schema_path, n, values, expected):
    import fastavro
    schema = avro_schema(schema_path)
    out, lines = [], []
    for rec in avro_records(n, random.Random(7)):
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, schema, rec)
        out.append(frame(buf.getvalue()))
        lines.append(avro_json(rec))
    write_values(values, out)
    with open(expected, "w") as f:
        for line in lines:
            f.write(json.dumps(line, ensure_ascii=False) + "\n")


def avro_decode(schema, value):
    import fastavro
    buf = io.BytesIO(unframe(value))
    rec = fastavro.schemaless_reader(buf, schema, None)
    if buf.read():
        raise ValueError("bytes left after the record")
    return avro_json(rec)


# Protocol Buffers --------------------------------------------------------

def proto_module(proto_path):
    from grpc_tools import protoc
    out = tempfile.mkdtemp()
    d, name = os.path.split(os.path.abspath(proto_path))
    if protoc.main(["protoc", f"-I{d}", f"--python_out={out}", name]) != 0:
        raise SystemExit(f"protoc failed on {proto_path}")
    sys.path.insert(0, out)
    return importlib.import_module(name[:-len(".proto")] + "_pb2")


def proto_records(n, rng):
    for i in range(n):
        yield {
            "id": i * 7919 - 2**53 - 3,
            "user": rng.choice(AWKWARD) + str(i),
            "tags": [rng.choice(AWKWARD) for _ in range(rng.randrange(3))],
            "attrs": {f"k{j}": rng.randrange(-2**31, 2**31) for j in range(rng.randrange(3))},
            "lines": [{"sku": f"sku-{rng.randrange(1000)}", "qty": rng.randrange(0, 50)} for _ in range(rng.randrange(4))],
            "total": rng.choice([0.0, -1.5, 123456.789, rng.random()]),
            "paid": rng.random() < 0.5,
            "status": rng.choice(["NEW", "PAID", "SHIPPED"]),
        }


def proto_json(msg):
    """Every field, defaults included, with the .proto's field names."""
    return {
        "id": msg.id,
        "user": msg.user,
        "tags": list(msg.tags),
        "attrs": dict(msg.attrs),
        "lines": [{"sku": line.sku, "qty": line.qty} for line in msg.lines],
        "total": msg.total,
        "paid": msg.paid,
        "status": msg.DESCRIPTOR.fields_by_name["status"].enum_type.values_by_number[msg.status].name,
    }


def proto_make(proto_path, n, values, expected):
    pb = proto_module(proto_path)
    out, lines = [], []
    for rec in proto_records(n, random.Random(7)):
        msg = pb.Order(**{k: v for k, v in rec.items() if k not in ("lines", "status")})
        msg.status = pb.Order.Status.Value(rec["status"])
        for line in rec["lines"]:
            msg.lines.add(**line)
        out.append(frame(msg.SerializeToString(), PROTO_INDEXES))
        lines.append(proto_json(msg))
    write_values(values, out)
    with open(expected, "w") as f:
        for line in lines:
            f.write(json.dumps(line, ensure_ascii=False) + "\n")


# -----------------------------------------------------------------------

def check(kind, schema_path, values, expected):
    if kind == "avro":
        schema = avro_schema(schema_path)
        decode = lambda v: avro_decode(schema, v)
    else:
        pb = proto_module(schema_path)
        decode = lambda v: proto_json(pb.Order.FromString(unframe(v, PROTO_INDEXES)))
    want = [json.loads(line) for line in open(expected, encoding="utf-8")]
    got = [decode(v) for v in read_values(values)]
    if len(got) != len(want):
        raise SystemExit(f"{len(got)} values, expected {len(want)}")
    for i, (g, w) in enumerate(zip(got, want)):
        if g != w:
            raise SystemExit(f"value {i} decodes to\n  {g}\nexpected\n  {w}")
    print(f"{len(got)} values match")


def main(argv):
    if len(argv) == 7 and argv[1] == "make" and argv[2] in ("avro", "protobuf"):
        _, _, kind, schema, n, values, expected = argv
        (avro_make if kind == "avro" else proto_make)(schema, int(n), values, expected)
    elif len(argv) == 6 and argv[1] == "check" and argv[2] in ("avro", "protobuf"):
        check(argv[2], argv[3], argv[4], argv[5])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
