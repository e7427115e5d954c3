use super::*;

fn decode(schema: &Schema, data: &[u8]) -> Result<String, CodecError> {
    let mut out = Vec::new();
    schema.decode(data, &mut out)?;
    Ok(String::from_utf8(out).expect("JSON is UTF-8"))
}

fn encode(schema: &Schema, json: &str) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    schema.encode(json.as_bytes(), &mut out)?;
    Ok(out)
}

const ORDER: &str = r#"{
  "type": "record", "name": "Order", "namespace": "shop",
  "fields": [
    {"name": "id", "type": "long"},
    {"name": "user", "type": "string"},
    {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2}},
    {"name": "coupon", "type": ["null", "string"], "default": null},
    {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["NEW", "PAID"]}},
    {"name": "tags", "type": {"type": "array", "items": "string"}},
    {"name": "attrs", "type": {"type": "map", "values": "int"}, "default": {}},
    {"name": "ratio", "type": "float"},
    {"name": "hash", "type": {"type": "fixed", "name": "Hash", "size": 2}},
    {"name": "next", "type": ["null", "Order"], "default": null}
  ]
}"#;

#[test]
fn the_spec_examples_decode() {
    // Avro specification, "Binary encoding": long 64 is 0x80 0x01, string "foo" is 06 66 6f 6f.
    let s = Schema::parse(r#"{"type":"record","name":"r","fields":[{"name":"n","type":"long"},{"name":"s","type":"string"},{"name":"u","type":["null","string"]},{"name":"a","type":{"type":"array","items":"long"}}]}"#).unwrap();
    let data = [0x80, 0x01, 0x06, b'f', b'o', b'o', 0x02, 0x02, b'a', 0x04, 0x06, 0x36, 0x00];
    assert_eq!(decode(&s, &data).unwrap(), r#"{"n":64,"s":"foo","u":"a","a":[3,27]}"#);
    // The same array as one negative-count block with its byte size.
    let data = [0x80, 0x01, 0x06, b'f', b'o', b'o', 0x00, 0x03, 0x04, 0x06, 0x36, 0x00];
    assert_eq!(decode(&s, &data).unwrap(), r#"{"n":64,"s":"foo","u":null,"a":[3,27]}"#);
}

#[test]
fn records_round_trip_through_json() {
    let s = Schema::parse(ORDER).unwrap();
    let json = r#"{"id":-3,"user":"ana \"a\"","amount":"-12.50","coupon":"X1","status":"PAID","tags":["a","b"],"attrs":{"k":7},"ratio":0.1,"hash":"\u0000ÿ","next":{"id":4,"user":"b","amount":"0.05","coupon":null,"status":"NEW","tags":[],"attrs":{},"ratio":"NaN","hash":"ab","next":null}}"#;
    let bytes = encode(&s, json).unwrap();
    let back = decode(&s, &bytes).unwrap();
    assert_eq!(serde_json::from_str::<Value>(&back).unwrap(), serde_json::from_str::<Value>(json).unwrap());
    // Defaults fill fields the JSON leaves out.
    let bytes = encode(&s, r#"{"id":1,"user":"u","amount":3,"status":"NEW","tags":[],"ratio":1.5,"hash":"zz"}"#).unwrap();
    assert_eq!(
        decode(&s, &bytes).unwrap(),
        r#"{"id":1,"user":"u","amount":"3.00","coupon":null,"status":"NEW","tags":[],"attrs":{},"ratio":1.5,"hash":"zz","next":null}"#
    );
}

#[test]
fn bad_json_is_named_by_field() {
    let s = Schema::parse(ORDER).unwrap();
    let base = r#""user":"u","amount":"1","status":"NEW","tags":[],"ratio":1,"hash":"zz""#;
    let err = |json: String| encode(&s, &json).unwrap_err().to_string();
    assert_eq!(err(format!(r#"{{"id":"7",{base}}}"#)), "field id: expected long, found a string");
    assert!(err(format!(r#"{{"id":1,{base},"tags":[1]}}"#)).starts_with("field tags[0]: expected string"), "{}", err(format!(r#"{{"id":1,{base},"tags":[1]}}"#)));
    assert!(err(format!(r#"{{"id":1,{base},"extra":1}}"#)).contains(r#"field "extra" is not in record shop.Order"#));
    assert!(err(format!(r#"{{"id":1,{base},"status":"GONE"}}"#)).contains("not a symbol of enum shop.Status"));
    assert!(err(r#"{"id":1}"#.into()).contains("needs field \"user\""));
    assert!(err(format!(r#"{{"id":1,{base},"amount":"1.234"}}"#)).starts_with("field amount: 1.234 has more than 2 digits"));
    assert!(err("{".into()).starts_with("not JSON"));
}

#[test]
fn hostile_bytes_are_errors_not_panics_or_hangs() {
    let s = Schema::parse(ORDER).unwrap();
    let good = encode(&s, r#"{"id":1,"user":"u","amount":"1","status":"NEW","tags":["t"],"ratio":1,"hash":"zz"}"#).unwrap();
    // Every truncation and every single-byte change decodes or fails cleanly.
    for n in 0..good.len() {
        assert!(decode(&s, &good[..n]).is_err());
        for b in [0x00, 0x7f, 0x80, 0xff] {
            let mut bad = good.clone();
            bad[n] = b;
            let _ = decode(&s, &bad);
        }
    }
    let e = decode(&s, &[&good[..], &[0][..]].concat()).unwrap_err().to_string();
    assert!(e.contains("1 bytes are left after the record"), "{e}");
    // A string length far past the end.
    let e = decode(&s, &[0x02, 0xfe, 0xff, 0xff, 0xff, 0x0f]).unwrap_err().to_string();
    assert!(e.starts_with("field user: a length of") && e.contains("runs past the end"), "{e}");
    // Billions of null items in three bytes stop at the size limit.
    let nulls = Schema::parse(r#"{"type":"array","items":"null"}"#).unwrap();
    let e = decode(&nulls, &[0xfe, 0xff, 0xff, 0xff, 0x0f]).unwrap_err().to_string();
    assert!(e.contains("would exceed"), "{e}");
    // Deep recursion through a recursive schema stops at the depth limit.
    let list = Schema::parse(r#"{"type":"record","name":"L","fields":[{"name":"next","type":["null","L"]}]}"#).unwrap();
    let deep = vec![0x02; 10_000];
    assert!(decode(&list, &deep).unwrap_err().to_string().contains("nested deeper"));
}

#[test]
fn bad_schemas_say_where() {
    let err = |s: &str| Schema::parse(s).unwrap_err().0;
    assert!(err(r#"{"type":"record","name":"R","fields":[{"name":"a","type":"Nope"}]}"#).contains("field R.a: unknown type \"Nope\""));
    assert!(err(r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int","default":"x"}]}"#).contains("the default of field \"a\""));
    assert!(err(r#"{"type":"enum","name":"E"}"#).contains("needs \"symbols\""));
    assert!(err(r#"{"type":"bytes","logicalType":"decimal","precision":40}"#).contains("precision from 1 to 38"));
    assert!(err("[]").contains("at least one type"));
    assert!(err("nope").contains("not JSON"));
}

#[test]
fn unions_pick_the_branch_the_json_fits() {
    let s = Schema::parse(r#"["null","long","double","string",{"type":"array","items":"int"}]"#).unwrap();
    for (json, first) in [("null", 0u8), ("5", 2), ("5.5", 4), (r#""x""#, 6), ("[1]", 8), (r#"{"string":"y"}"#, 6)] {
        let b = encode(&s, json).unwrap();
        assert_eq!(b[0], first, "{json}");
    }
    assert!(encode(&s, "true").unwrap_err().to_string().contains("expected null | long | double | string | array of int"));
}
