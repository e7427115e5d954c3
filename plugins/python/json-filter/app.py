"""json-filter in Python: filter, project and key JSON records.

The same operator as the Rust plugin ``plugins/json-filter``, with the same
config and output bytes. Each record's value must be a JSON object.

- ``filter``: clauses ``field op literal`` joined by ``and``; ``op`` is one
  of ``== != < <= > >=``, the literal a number, a double-quoted string,
  ``true``, ``false`` or ``null``. A record without the field (or with
  ``null`` in it) does not match; a field of another type than its literal
  rejects the record.
- ``project``: the output value is an object of just these top-level
  fields, in this order, their JSON text copied verbatim.
- ``key``: the output key is that field: a string's contents, or a number's
  or boolean's JSON text.

With neither ``project`` nor ``key`` kept records are forwarded unchanged.

Build: ``python -m weir_sdk build app -o json_filter.wasm``.
"""

import json
import re
from json.decoder import scanstring

import weir_sdk as weir

I64_MIN, I64_MAX = -(2**63), 2**63 - 1
_WS = " \t\n\r"
_FILTER_WS = " \t\n\r\x0c"
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")


def _no_constants(name):
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_no_constants)


class Malformed(ValueError):
    def __init__(self, what, at):
        super().__init__(f"{what} at character {at}")


def scan_object(text):
    """The top-level fields of a JSON object: name -> (value, raw JSON text)."""
    n = len(text)

    def ws(i):
        while i < n and text[i] in _WS:
            i += 1
        return i

    i = ws(0)
    if i == n:
        raise Malformed("empty value where a JSON object was expected", i)
    if text[i] != "{":
        raise Malformed("expected a JSON object ('{')", i)
    fields = {}
    i = ws(i + 1)
    if i < n and text[i] == "}":
        i += 1
    else:
        while True:
            if i >= n or text[i] != '"':
                raise Malformed("expected a field name", i)
            try:
                name, i = scanstring(text, i + 1)
            except ValueError as e:
                raise Malformed(f"invalid string: {e.msg}", e.pos) from None
            i = ws(i)
            if i >= n or text[i] != ":":
                raise Malformed("expected ':'", i)
            i = ws(i + 1)
            try:
                value, end = _DECODER.raw_decode(text, i)
            except ValueError as e:
                raise Malformed(f"invalid value: {getattr(e, 'msg', e)}", getattr(e, "pos", i)) from None
            fields[name] = (value, text[i:end])
            i = ws(end)
            if i < n and text[i] == ",":
                i = ws(i + 1)
                continue
            if i < n and text[i] == "}":
                i += 1
                break
            raise Malformed("expected ',' or '}'", i)
    if ws(i) != n:
        raise Malformed("unexpected characters after the JSON object", ws(i))
    return fields


def kind(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


_OPS = {
    "==": lambda c: c == 0,
    "!=": lambda c: c != 0,
    "<": lambda c: c < 0,
    "<=": lambda c: c <= 0,
    ">": lambda c: c > 0,
    ">=": lambda c: c >= 0,
}


def _cmp(a, b):
    return (a > b) - (a < b)


def _as_float(x):
    try:
        return float(x)
    except OverflowError:
        return float("inf") if x > 0 else float("-inf")


class Clause:
    def __init__(self, field, op, literal, text):
        self.field, self.op, self.literal, self.text = field, op, literal, text

    def holds(self, fields):
        if self.field not in fields:
            return False
        value = fields[self.field][0]
        lit = self.literal
        if lit is None:
            return (value is None) == (self.op == "==")
        if value is None:
            return False
        if kind(lit) != kind(value):
            raise weir.Error(
                f"filter clause `{self.text}` compares field {json.dumps(self.field)} with {kind(lit)}, "
                f"but this record's {json.dumps(self.field)} is {kind(value)}: {fields[self.field][1][:100]!r}; "
                "fix the data or change the filter"
            )
        if isinstance(lit, bool) or isinstance(lit, str):
            order = _cmp(value, lit)
        elif isinstance(lit, int) and isinstance(value, int) and I64_MIN <= value <= I64_MAX:
            order = _cmp(value, lit)
        else:
            order = _cmp(_as_float(value), _as_float(lit))
        return _OPS[self.op](order)


def parse_filter(text):
    """The clauses of a filter expression (see the module docs)."""
    pos = 0
    n = len(text)

    def error(what, at=None):
        return weir.Error(f"invalid `filter` {json.dumps(text)}: {what} (at position {pos if at is None else at})")

    def ws():
        nonlocal pos
        while pos < n and text[pos] in _FILTER_WS:
            pos += 1

    def ident_char(c):
        return c.isascii() and (c.isalnum() or c in "_$@-")

    clauses = []
    ws()
    if pos == n:
        raise weir.Error('`filter` is empty: give a condition such as "amount >= 10", or leave `filter` out to keep every record')
    while True:
        start = pos
        if pos == n:
            raise error("expected a field name after `and`")
        if text[pos] == '"':
            try:
                field, pos = scanstring(text, pos + 1)
            except ValueError as e:
                raise error(e.msg, e.pos) from None
        elif text[pos].isascii() and (text[pos].isalpha() or text[pos] in "_$@"):
            while pos < n and ident_char(text[pos]):
                pos += 1
            field = text[start:pos]
        else:
            raise error("expected a field name (such as amount, or \"a quoted name\")")
        if pos < n and text[pos] in ".[":
            raise error("only top-level fields can be compared; nested paths such as a.b or a[0] are not supported")
        ws()
        op = next((o for o in ("==", "!=", "<=", ">=", "<", ">") if text.startswith(o, pos)), None)
        if op is None:
            if text.startswith("=", pos):
                raise error("use == to compare for equality")
            raise error("expected a comparison (==, !=, <, <=, >, >=) after the field name")
        pos += len(op)
        ws()
        lit_start = pos
        if pos < n and text[pos].isascii() and text[pos].isalpha():
            end = pos
            while end < n and ident_char(text[end]):
                end += 1
            word = text[pos:end]
            if word not in ("true", "false", "null"):
                raise error('expected a value: a number, a double-quoted string (user == "bob"), true, false or null')
            literal = {"true": True, "false": False, "null": None}[word]
            pos = end
        elif pos < n and text[pos] == '"':
            try:
                literal, pos = scanstring(text, pos + 1)
            except ValueError as e:
                raise error(e.msg, e.pos) from None
        elif pos < n and text[pos] in "[{":
            raise error("objects and arrays cannot be compared; compare with a number, string, true, false or null")
        else:
            m = _NUMBER.match(text, pos)
            if not m:
                raise error(f"expected a value after `{op}`: a number, a double-quoted string, true, false or null")
            if m.end() < n and text[m.end()].isdigit():
                raise error("leading zeros are not allowed in JSON numbers", m.end())
            raw = m.group(0)
            literal = float(raw) if m.group(1) or m.group(2) else int(raw)
            if isinstance(literal, int) and not I64_MIN <= literal <= I64_MAX:
                literal = _as_float(literal)
            pos = m.end()
        clause_text = text[start:pos]
        if op not in ("==", "!=") and (literal is None or isinstance(literal, bool)):
            raise error(f"`{clause_text}`: true, false and null allow only == and !=", start)
        clauses.append(Clause(field, op, literal, clause_text))
        ws()
        if pos == n:
            return clauses
        if not (text.startswith("and", pos) and not (pos + 3 < n and ident_char(text[pos + 3]))):
            raise error("expected `and` or the end of the filter (clauses are joined with `and`)")
        pos += 3
        ws()


class JsonFilter(weir.Operator):
    def open(self, config, info):
        unknown = set(config) - {"filter", "project", "key"}
        if unknown:
            raise weir.Error(f"unknown field `{sorted(unknown)[0]}`, expected one of `filter`, `project`, `key`")
        self.clauses = parse_filter(config["filter"]) if config.get("filter") is not None else []
        project = config.get("project")
        if project is not None:
            for i, name in enumerate(project):
                if name in project[:i]:
                    raise weir.Error(f"`project` lists the field {json.dumps(name)} twice; list each field once")
            project = [(name, json.dumps(name, ensure_ascii=False) + ":") for name in project]
        self.project = project
        self.key = config.get("key")

    def process(self, record, out, ctx):
        try:
            fields = scan_object(record.value.decode())
        except (Malformed, UnicodeDecodeError) as e:
            raise weir.Error(f"value is not a well-formed JSON object: {e}; the value is {record.value[:100]!r}") from None
        for clause in self.clauses:
            if not clause.holds(fields):
                return
        if self.project is None and self.key is None:
            out.forward(record)
            return
        key = record.key
        if self.key is not None:
            name = self.key
            if name not in fields:
                raise weir.Error(
                    f"the record has no field {json.dumps(name)} to take its key from (`key = {json.dumps(name)}`); "
                    "every record needs it, or filter out those without it"
                )
            value, raw = fields[name]
            if isinstance(value, str):
                key = value
            elif isinstance(value, (bool, int, float)):
                key = raw
            else:
                raise weir.Error(
                    f"field {json.dumps(name)} is {kind(value)}, which cannot be a record key "
                    f"(`key = {json.dumps(name)}`): it must be a string, number or boolean"
                )
        if self.project is None:
            value = record.value
        else:
            value = "{" + ",".join(prefix + fields[name][1] for name, prefix in self.project if name in fields) + "}"
        out.emit(key, value, record.timestamp, record)


Handler = weir.export(JsonFilter)
