use super::*;

fn codec(format: Format, schema: Option<(&str, &str)>, framing: Framing, schema_id: Option<u32>) -> (Codec, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let schema_file = schema.map(|(name, text)| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    });
    let f = ValueFormat { format, schema_file, message: None, framing, schema_id };
    assert_eq!(f.problems(Side::Sink), Vec::new());
    (f.codec().unwrap(), dir)
}

#[test]
fn json_is_checked_and_passed_on_unchanged() {
    let (c, _d) = codec(Format::Json, None, Framing::None, None);
    let mut scratch = Vec::new();
    assert_eq!(c.decode(b" {\"a\":1}\n", &mut scratch).unwrap(), b" {\"a\":1}\n");
    assert_eq!(c.decode(b"{\"a\":1,}", &mut scratch).unwrap_err().to_string(), "not JSON: expected a member name (a string) at byte 7");
    assert!(c.decode(b"{} {}", &mut scratch).unwrap_err().to_string().contains("more after the document"));
    let (raw, _d) = codec(Format::Raw, None, Framing::None, None);
    assert_eq!(raw.decode(b"\xff\x00", &mut scratch).unwrap(), b"\xff\x00");
}

#[test]
fn confluent_framing_carries_and_checks_the_schema_id() {
    let (c, _d) = codec(Format::Avro, Some(("s.avsc", r#""long""#)), Framing::Confluent, Some(7));
    let mut scratch = Vec::new();
    let framed = c.encode(b"-1", &mut scratch).unwrap().to_vec();
    assert_eq!(framed, [0, 0, 0, 0, 7, 1]);
    let mut out = Vec::new();
    assert_eq!(c.decode(&framed, &mut out).unwrap(), b"-1");
    let e = c.decode(&[0, 0, 0, 0, 8, 1], &mut out).unwrap_err().to_string();
    assert_eq!(e, "the value is written with schema id 8, and schema-id = 7");
    assert!(c.decode(&[1, 2], &mut out).unwrap_err().to_string().contains("expects a zero byte"));
}

#[test]
fn protobuf_messages_round_trip_with_their_index_path() {
    let proto = r#"
        syntax = "proto3";
        package shop;
        message Other { string x = 1; }
        message Order {
          int64 id = 1;
          string user = 2;
          repeated string tags = 3;
          map<string, int32> attrs = 4;
          message Line { string sku = 1; uint32 qty = 2; }
          repeated Line lines = 5;
          double total = 6;
        }
    "#;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("shop.proto");
    std::fs::write(&file, proto).unwrap();
    let f = ValueFormat { format: Format::Protobuf, schema_file: Some(file.clone()), message: Some("shop.Order".into()), framing: Framing::Confluent, schema_id: Some(3) };
    let c = f.codec().unwrap();
    let json = r#"{"id":9007199254740993,"user":"ana","tags":["a"],"attrs":{"k":1},"lines":[{"sku":"s1","qty":2}],"total":1.5}"#;
    let mut scratch = Vec::new();
    let framed = c.encode(json.as_bytes(), &mut scratch).unwrap().to_vec();
    // Order is the second top-level message: indexes [1] as count 1, index 1.
    assert_eq!(&framed[..7], &[0, 0, 0, 0, 3, 2, 2]);
    let mut out = Vec::new();
    let back: serde_json::Value = serde_json::from_slice(c.decode(&framed, &mut out).unwrap()).unwrap();
    assert_eq!(back, serde_json::from_str::<serde_json::Value>(json).unwrap());
    // Defaults are written: an empty message has every field.
    let empty = c.decode(&[0, 0, 0, 0, 3, 2, 2], &mut out).unwrap();
    assert_eq!(std::str::from_utf8(empty).unwrap(), r#"{"id":0,"user":"","tags":[],"attrs":{},"lines":[],"total":0.0}"#);
    let e = c.encode(br#"{"id":1,"nope":2}"#, &mut scratch).unwrap_err().to_string();
    assert!(e.contains("does not fit message shop.Order") && e.contains("nope"), "{e}");
    let wrong = ValueFormat { message: Some("shop.Missing".into()), ..f.clone() };
    assert!(wrong.codec().unwrap_err().contains("has no message \"shop.Missing\" (its messages: shop.Other, shop.Order)"));
    std::fs::write(&file, "syntax = \"proto3\"; message {").unwrap();
    assert!(f.codec().unwrap_err().starts_with(&format!("schema-file {}", file.display())));
}

#[test]
fn settings_that_do_not_fit_are_named() {
    let f = ValueFormat { format: Format::Avro, ..Default::default() };
    assert_eq!(f.problems(Side::Source)[0].0, "schema-file");
    let f = ValueFormat { format: Format::Json, message: Some("m".into()), framing: Framing::Confluent, ..Default::default() };
    let fields: Vec<String> = f.problems(Side::Sink).into_iter().map(|p| p.0).collect();
    assert_eq!(fields, ["message", "schema-id"]);
    assert!(ValueFormat { framing: Framing::Confluent, ..Default::default() }.problems(Side::Source).is_empty());
}
