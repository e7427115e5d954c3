//! The Avro decoder of Kafka sources (`weir_codec::avro`): whatever bytes a
//! topic holds, read with the example order schema or a recursive list.
//!
//! The first byte picks the schema, the rest is the value. Checks beyond
//! "no panic": an accepted value's JSON is well-formed, and encoding that
//! JSON with the same schema and decoding it again gives the same JSON
//! value (what a Kafka -> Kafka pipeline with `format = "avro"` on both
//! ends does). libFuzzer's `-malloc_limit_mb` (set by `fuzz/run`) catches a
//! length field that allocates before it checks.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use weir_codec::avro::Schema;

static SCHEMAS: LazyLock<[Schema; 2]> = LazyLock::new(|| {
    [
        Schema::parse(include_str!("../../pipelines/schemas/order.avsc")).expect("the order schema"),
        Schema::parse(
            r#"{"type":"record","name":"L","fields":[{"name":"v","type":["null","int","float","bytes",{"type":"map","values":"L"}]},{"name":"next","type":["null","L"]}]}"#,
        )
        .expect("the list schema"),
    ]
});

fuzz_target!(|data: &[u8]| {
    let Some((&pick, value)) = data.split_first() else { return };
    let schema = &SCHEMAS[usize::from(pick) % 2];
    let mut json = Vec::new();
    if schema.decode(value, &mut json).is_err() {
        assert!(json.is_empty(), "a failed decode leaves nothing behind");
        return;
    }
    let parsed: serde_json::Value = match serde_json::from_slice(&json) {
        Ok(v) => v,
        // serde_json stops at 128 levels, weir's decoder at 128 schema
        // levels (which unions count): the same limit, counted differently.
        Err(e) if e.to_string().contains("recursion limit") => return,
        Err(e) => panic!("decoded JSON is malformed ({e}): {}", String::from_utf8_lossy(&json)),
    };
    let mut encoded = Vec::new();
    schema.encode(&json, &mut encoded).unwrap_or_else(|e| panic!("decoded JSON does not encode back ({e}): {}", String::from_utf8_lossy(&json)));
    let mut again = Vec::new();
    schema.decode(&encoded, &mut again).expect("weir decodes what it encoded");
    let reparsed: serde_json::Value = serde_json::from_slice(&again).expect("JSON");
    assert_eq!(parsed, reparsed, "decode -> encode -> decode changed the value");
});
