// json-filter in JavaScript: filter, project and key JSON records.
//
// The same operator as the Rust plugin plugins/json-filter, with the same
// config and output bytes. Each record's value must be a JSON object.
//
// - `filter`: clauses `field op literal` joined by `and`; `op` is one of
//   == != < <= > >=, the literal a number, a double-quoted string, true,
//   false or null. A record without the field (or with null in it) does not
//   match; a field of another type than its literal rejects the record.
// - `project`: the output value is an object of just these top-level fields,
//   in this order, their JSON text copied verbatim.
// - `key`: the output key is that field: a string's contents, or a number's
//   or boolean's JSON text.
//
// With neither `project` nor `key` kept records are forwarded unchanged.
import { Operator, WeirError } from "weir-sdk";

const decoder = new TextDecoder("utf-8", { fatal: true });
const FILTER_WS = " \t\n\r\f";
const NUMBER = /-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/y;
const INTEGER = /^-?(?:0|[1-9][0-9]*)$/;
const I64_MIN = -(2n ** 63n), I64_MAX = 2n ** 63n - 1n;

class Malformed extends Error {
  constructor(what, at) {
    super(`${what} at character ${at}`);
  }
}

/** The end of the JSON value starting at `i` (not validated: JSON.parse does that). */
function skipValue(text, i) {
  const n = text.length;
  if (text[i] === '"') return skipString(text, i);
  if (text[i] === "{" || text[i] === "[") {
    let depth = 0;
    for (; i < n; i++) {
      const c = text[i];
      if (c === '"') i = skipString(text, i) - 1;
      else if (c === "{" || c === "[") depth++;
      else if (c === "}" || c === "]") {
        if (--depth === 0) return i + 1;
      }
    }
    throw new Malformed("unterminated object or array", n);
  }
  SCALAR.lastIndex = i;
  SCALAR.test(text);
  return SCALAR.lastIndex;
}

const SCALAR = /[^,}\] \t\n\r]*/y;

/** The end of the string whose opening quote is at `i`. */
function skipString(text, i) {
  for (;;) {
    const q = text.indexOf('"', i + 1);
    if (q < 0) throw new Malformed("unterminated string", text.length);
    let slashes = 0;
    while (text.charCodeAt(q - 1 - slashes) === 92) slashes++;
    if (slashes % 2 === 0) return q + 1;
    i = q;
  }
}

/** The top-level fields of a JSON object: Map(name -> [value, raw JSON text]). */
export function scanObject(text) {
  const n = text.length;
  const ws = (i) => {
    for (let c = text.charCodeAt(i); c === 32 || c === 10 || c === 13 || c === 9; c = text.charCodeAt(++i));
    return i;
  };
  let i = ws(0);
  if (i === n) throw new Malformed("empty value where a JSON object was expected", i);
  if (text[i] !== "{") throw new Malformed("expected a JSON object ('{')", i);
  const fields = new Map();
  i = ws(i + 1);
  if (text[i] === "}") i++;
  else {
    for (;;) {
      if (text[i] !== '"') throw new Malformed("expected a field name", i);
      let end = skipString(text, i);
      const name = parse(text.slice(i, end), i);
      i = ws(end);
      if (text[i] !== ":") throw new Malformed("expected ':'", i);
      i = ws(i + 1);
      end = skipValue(text, i);
      const raw = text.slice(i, end);
      fields.set(name, [parse(raw, i), raw]);
      i = ws(end);
      if (text[i] === ",") {
        i = ws(i + 1);
        continue;
      }
      if (text[i] === "}") {
        i++;
        break;
      }
      throw new Malformed("expected ',' or '}'", i);
    }
  }
  if (ws(i) !== n) throw new Malformed("unexpected characters after the JSON object", ws(i));
  return fields;
}

function parse(raw, at) {
  if (raw === "") throw new Malformed("expected a value", at);
  try {
    return JSON.parse(raw);
  } catch (e) {
    throw new Malformed(`invalid value ${JSON.stringify(raw.slice(0, 40))}`, at);
  }
}

function kind(v) {
  if (v === null) return "null";
  if (typeof v === "boolean") return "a boolean";
  if (typeof v === "number") return "a number";
  if (typeof v === "string") return "a string";
  return Array.isArray(v) ? "an array" : "an object";
}

const OPS = {
  "==": (c) => c === 0,
  "!=": (c) => c !== 0,
  "<": (c) => c < 0,
  "<=": (c) => c <= 0,
  ">": (c) => c > 0,
  ">=": (c) => c >= 0,
};
const cmp = (a, b) => (a < b ? -1 : a > b ? 1 : 0);

/** Code-point order, which is UTF-8 byte order (JS compares UTF-16 units). */
function cmpStrings(a, b) {
  const x = [...a], y = [...b];
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    const d = x[i].codePointAt(0) - y[i].codePointAt(0);
    if (d) return d < 0 ? -1 : 1;
  }
  return cmp(x.length, y.length);
}

class Clause {
  constructor(field, op, literal, rawLiteral, text) {
    Object.assign(this, { field, op, literal, text });
    this.intLiteral = typeof literal === "number" && INTEGER.test(rawLiteral) ? BigInt(rawLiteral) : null;
    if (this.intLiteral !== null && (this.intLiteral < I64_MIN || this.intLiteral > I64_MAX)) this.intLiteral = null;
  }

  holds(fields) {
    const found = fields.get(this.field);
    if (!found) return false;
    const [value, raw] = found;
    const lit = this.literal;
    if (lit === null) return (value === null) === (this.op === "==");
    if (value === null) return false;
    if (kind(lit) !== kind(value)) {
      throw new WeirError(
        `filter clause \`${this.text}\` compares field ${JSON.stringify(this.field)} with ${kind(lit)}, but this record's ${JSON.stringify(this.field)} is ${kind(value)}: ${JSON.stringify(raw.slice(0, 100))}; fix the data or change the filter`,
      );
    }
    let order;
    if (typeof lit === "string") order = cmpStrings(value, lit);
    else if (typeof lit === "boolean") order = cmp(Number(value), Number(lit));
    else if (this.intLiteral !== null && INTEGER.test(raw) && BigInt(raw) >= I64_MIN && BigInt(raw) <= I64_MAX) order = cmp(BigInt(raw), this.intLiteral);
    else order = cmp(value, lit);
    return OPS[this.op](order);
  }
}

const identStart = (c) => c !== undefined && /[A-Za-z_$@]/.test(c);
const identChar = (c) => c !== undefined && /[A-Za-z0-9_$@-]/.test(c);

/** The clauses of a filter expression (see the top of this file). */
export function parseFilter(text) {
  let pos = 0;
  const n = text.length;
  const error = (what, at = pos) => new WeirError(`invalid \`filter\` ${JSON.stringify(text)}: ${what} (at position ${at})`);
  const ws = () => {
    while (pos < n && FILTER_WS.includes(text[pos])) pos++;
  };
  const string = () => {
    const end = (() => {
      try {
        return skipString(text, pos);
      } catch {
        throw error("unterminated string");
      }
    })();
    try {
      const s = JSON.parse(text.slice(pos, end));
      pos = end;
      return s;
    } catch {
      throw error("invalid escape or control character in a string");
    }
  };
  const clauses = [];
  ws();
  if (pos === n) throw new WeirError('`filter` is empty: give a condition such as "amount >= 10", or leave `filter` out to keep every record');
  for (;;) {
    const start = pos;
    let field;
    if (pos === n) throw error("expected a field name after `and`");
    if (text[pos] === '"') field = string();
    else if (identStart(text[pos])) {
      while (pos < n && identChar(text[pos])) pos++;
      field = text.slice(start, pos);
    } else throw error('expected a field name (such as amount, or "a quoted name")');
    if (text[pos] === "." || text[pos] === "[") throw error("only top-level fields can be compared; nested paths such as a.b or a[0] are not supported");
    ws();
    const op = ["==", "!=", "<=", ">=", "<", ">"].find((o) => text.startsWith(o, pos));
    if (!op) {
      if (text[pos] === "=") throw error("use == to compare for equality");
      throw error("expected a comparison (==, !=, <, <=, >, >=) after the field name");
    }
    pos += op.length;
    ws();
    let literal, rawLiteral = "";
    if (pos < n && /[A-Za-z]/.test(text[pos])) {
      let end = pos;
      while (end < n && identChar(text[end])) end++;
      const word = text.slice(pos, end);
      if (!["true", "false", "null"].includes(word)) throw error('expected a value: a number, a double-quoted string (user == "bob"), true, false or null');
      literal = JSON.parse(word);
      pos = end;
    } else if (text[pos] === '"') literal = string();
    else if (text[pos] === "[" || text[pos] === "{") throw error("objects and arrays cannot be compared; compare with a number, string, true, false or null");
    else {
      NUMBER.lastIndex = pos;
      const m = NUMBER.exec(text);
      if (!m) throw error(`expected a value after \`${op}\`: a number, a double-quoted string, true, false or null`);
      if (/[0-9]/.test(text[NUMBER.lastIndex] ?? "")) throw error("leading zeros are not allowed in JSON numbers", NUMBER.lastIndex);
      rawLiteral = m[0];
      literal = Number(rawLiteral);
      pos = NUMBER.lastIndex;
    }
    const clauseText = text.slice(start, pos);
    if (op !== "==" && op !== "!=" && (literal === null || typeof literal === "boolean")) {
      throw error(`\`${clauseText}\`: true, false and null allow only == and !=`, start);
    }
    clauses.push(new Clause(field, op, literal, rawLiteral, clauseText));
    ws();
    if (pos === n) return clauses;
    if (!(text.startsWith("and", pos) && !identChar(text[pos + 3]))) throw error("expected `and` or the end of the filter (clauses are joined with `and`)");
    pos += 3;
    ws();
  }
}

export default class JsonFilter extends Operator {
  open(config) {
    const unknown = Object.keys(config).filter((k) => !["filter", "project", "key"].includes(k));
    if (unknown.length) throw new WeirError(`unknown field \`${unknown[0]}\`, expected one of \`filter\`, \`project\`, \`key\``);
    this.clauses = config.filter != null ? parseFilter(config.filter) : [];
    this.project = null;
    if (config.project != null) {
      config.project.forEach((name, i) => {
        if (config.project.indexOf(name) < i) throw new WeirError(`\`project\` lists the field ${JSON.stringify(name)} twice; list each field once`);
      });
      this.project = config.project.map((name) => [name, JSON.stringify(name) + ":"]);
    }
    this.key = config.key ?? null;
  }

  process(record, out) {
    let fields;
    try {
      fields = scanObject(decoder.decode(record.value));
    } catch (e) {
      throw new WeirError(`value is not a well-formed JSON object: ${e.message}; the value is ${JSON.stringify(new TextDecoder().decode(record.value.subarray(0, 100)))}`);
    }
    for (const c of this.clauses) if (!c.holds(fields)) return;
    if (this.project === null && this.key === null) {
      out.forward(record);
      return;
    }
    let key = record.key;
    if (this.key !== null) {
      const name = this.key;
      const found = fields.get(name);
      if (!found) {
        throw new WeirError(`the record has no field ${JSON.stringify(name)} to take its key from (\`key = ${JSON.stringify(name)}\`); every record needs it, or filter out those without it`);
      }
      const [value, raw] = found;
      if (typeof value === "string") key = value;
      else if (typeof value === "number" || typeof value === "boolean") key = raw;
      else throw new WeirError(`field ${JSON.stringify(name)} is ${kind(value)}, which cannot be a record key (\`key = ${JSON.stringify(name)}\`): it must be a string, number or boolean`);
    }
    let value = record.value;
    if (this.project !== null) {
      const parts = [];
      for (const [name, prefix] of this.project) if (fields.has(name)) parts.push(prefix + fields.get(name)[1]);
      value = "{" + parts.join(",") + "}";
    }
    out.emit(key, value, record.timestamp, record);
  }
}
