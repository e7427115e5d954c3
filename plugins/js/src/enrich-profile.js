// enrich-profile in JavaScript: an async operator that adds a user profile to
// each JSON event.
//
// The same operator as the Rust plugin plugins/enrich-profile, with the same
// config and output bytes. For every JSON event it reads a field (default
// `user`), looks the profile up and emits the event with a `profile` field
// added (`null` when there is none):
//
// - `lookup = "kv"`: `io.kvGet(store, key)` on a `postgres-kv` connection;
// - `lookup = "sql"`: `query` on the `postgres` connection `connection` with
//   the field as `$1`; the first column of the first row is the profile;
// - `lookup = "http"`: `GET url` with `{key}` replaced by the field; 200 is
//   the profile, 404 none, 5xx worth a retry.
//
// A profile that is JSON is embedded as JSON, anything else as a string. A
// failed lookup is transient (retried, then dead-lettered), an event that is
// not a JSON object or lacks the field permanent. The output is written like
// serde_json writes it (keys sorted, no spaces): byte-identical to the Rust
// plugin's for strings, booleans, null and integers up to 2^53.
import { AsyncOperator, PermanentError, TransientError, WeirError } from "weir-sdk";

const FIELDS = new Set(["lookup", "field", "store", "connection", "query", "url"]);
const NEEDS = { kv: ["store"], sql: ["connection", "query"], http: ["url"] };

/** Orders keys by code point, as Rust orders strings (UTF-16 order differs above U+FFFF). */
function byCodePoint(a, b) {
  for (let i = 0, j = 0; i < a.length && j < b.length; ) {
    const x = a.codePointAt(i), y = b.codePointAt(j);
    if (x !== y) return x - y;
    i += x > 0xffff ? 2 : 1;
    j += y > 0xffff ? 2 : 1;
  }
  return a.length - b.length;
}

/** JSON text with object keys sorted, as serde_json writes a `Value`. */
export function sortedJson(v) {
  if (Array.isArray(v)) return "[" + v.map(sortedJson).join(",") + "]";
  if (v !== null && typeof v === "object") {
    return "{" + Object.keys(v).sort(byCodePoint).map((k) => JSON.stringify(k) + ":" + sortedJson(v[k])).join(",") + "}";
  }
  return JSON.stringify(v);
}

export default class EnrichProfile extends AsyncOperator {
  open(config) {
    const unknown = Object.keys(config).filter((k) => !FIELDS.has(k)).sort();
    if (unknown.length) throw new WeirError(`invalid config for enrich-profile: unknown field \`${unknown[0]}\``);
    this.lookup = config.lookup;
    if (!Object.hasOwn(NEEDS, this.lookup)) throw new WeirError(`invalid config for enrich-profile: \`lookup\` is one of kv, sql, http, not ${JSON.stringify(this.lookup)}`);
    for (const key of NEEDS[this.lookup]) {
      if (!(key in config)) throw new WeirError(`enrich-profile: lookup = "${this.lookup}" needs \`${key}\` in the operator's config`);
    }
    this.field = config.field ?? "user";
    this.config = config;
  }

  process(record, out, io) {
    let event;
    try {
      event = record.json();
    } catch (e) {
      throw new PermanentError(`the value is not JSON: ${e.message}`);
    }
    if (event === null || typeof event !== "object" || Array.isArray(event)) throw new PermanentError("the event is not a JSON object");
    let key = event[this.field];
    if (typeof key !== "string" && typeof key !== "number") throw new PermanentError(`the event has no string or number field ${JSON.stringify(this.field)}`);
    key = String(key);
    const c = this.config;
    let profile;
    if (this.lookup === "kv") profile = io.kvGet(c.store, key);
    else if (this.lookup === "sql") profile = io.sql(c.connection, c.query, [key]).first();
    else {
      const url = c.url.replaceAll("{key}", key);
      const r = io.get(url);
      if (r.status === 200) profile = r.text;
      else if (r.status === 404) profile = null;
      else if (r.status >= 500) throw new TransientError(`${url}: HTTP ${r.status}: ${r.text}`);
      else throw new PermanentError(`${url}: HTTP ${r.status}`);
    }
    if (profile !== null) {
      try {
        profile = JSON.parse(profile);
      } catch {
        // not JSON: embedded as a string
      }
    }
    event.profile = profile;
    out.emit(record.key, sortedJson(event), record.timestamp);
  }
}
