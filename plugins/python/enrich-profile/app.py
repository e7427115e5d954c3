"""enrich-profile in Python: an async operator that adds a user profile to
each JSON event.

The same operator as the Rust plugin plugins/enrich-profile, with the same
config and output bytes. For every JSON event it reads a field (default
``user``), looks the profile up and emits the event with a ``profile``
field added (``null`` when there is none):

- ``lookup = "kv"``: ``io.kv_get(store, key)`` on a ``postgres-kv`` connection;
- ``lookup = "sql"``: ``query`` on the ``postgres`` connection ``connection``
  with the field as ``$1``; the first column of the first row is the profile;
- ``lookup = "http"``: ``GET url`` with ``{key}`` replaced by the field; 200
  is the profile, 404 none, 5xx worth a retry.

A profile that is JSON is embedded as JSON, anything else as a string. A
failed lookup is transient (retried, then dead-lettered), an event that is
not a JSON object or lacks the field permanent. The output is written like
serde_json writes it (keys sorted, no spaces), so it is byte-identical to
the Rust plugin's for integer, string, boolean and null fields.
"""

import json

import weir_sdk as weir

FIELDS = {"lookup", "field", "store", "connection", "query", "url"}
NEEDS = {"kv": ("store",), "sql": ("connection", "query"), "http": ("url",)}


def dumps(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class EnrichProfile(weir.AsyncOperator):
    def open(self, config, info):
        unknown = sorted(set(config) - FIELDS)
        if unknown:
            raise weir.Error(f"invalid config for enrich-profile: unknown field `{unknown[0]}`")
        self.lookup = config.get("lookup")
        if self.lookup not in NEEDS:
            raise weir.Error(f"invalid config for enrich-profile: `lookup` is one of kv, sql, http, not {self.lookup!r}")
        for key in NEEDS[self.lookup]:
            if key not in config:
                raise weir.Error(f"enrich-profile: lookup = {self.lookup!r} needs `{key}` in the operator's config")
        self.field = config.get("field", "user")
        self.config = config

    def process(self, record, out, io):
        try:
            event = json.loads(record.value)
        except ValueError as e:
            raise weir.Permanent(f"the value is not JSON: {e}") from None
        if not isinstance(event, dict):
            raise weir.Permanent("the event is not a JSON object")
        key = event.get(self.field)
        if isinstance(key, bool) or not isinstance(key, (str, int, float)):
            raise weir.Permanent(f"the event has no string or number field {json.dumps(self.field)}")
        key = key if isinstance(key, str) else dumps(key)
        c = self.config
        if self.lookup == "kv":
            profile = io.kv_get(c["store"], key)
        elif self.lookup == "sql":
            profile = io.sql(c["connection"], c["query"], key).first()
        else:
            url = c["url"].replace("{key}", key)
            r = io.get(url)
            if r.status == 200:
                profile = r.text
            elif r.status == 404:
                profile = None
            elif r.status >= 500:
                raise weir.Transient(f"{url}: HTTP {r.status}: {r.text}")
            else:
                raise weir.Permanent(f"{url}: HTTP {r.status}")
        if profile is not None:
            try:
                profile = json.loads(profile)
            except ValueError:
                pass
        event["profile"] = profile
        out.emit(record.key, dumps(event), record.timestamp)


AsyncHandler = weir.export_async(EnrichProfile)
