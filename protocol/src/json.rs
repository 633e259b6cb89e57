//! JSON parsing for text that came from a peer: like `serde_json::from_str::<Value>`, but an
//! object that names the same key twice, at any depth, is refused instead of keeping the last
//! value. Two readers of one frame (a proxy that checks the first `type`, a host that acts on the
//! last) must never disagree about what it says.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::fmt;

/// How much of a repeated key an error message shows (the key came from the peer).
const SHOWN_KEY_CHARS: usize = 64;

/// Parse `text` as one JSON value; duplicate object keys are an error naming the key.
pub fn parse(text: &str) -> Result<Value, serde_json::Error> {
    serde_json::from_str::<Unique>(text).map(|u| u.0)
}

/// A [`Value`] whose objects had no repeated key.
struct Unique(Value);

impl<'de> Deserialize<'de> for Unique {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Unique, D::Error> {
        d.deserialize_any(UniqueVisitor).map(Unique)
    }
}

struct UniqueVisitor;

impl<'de> Visitor<'de> for UniqueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // JSON text has no NaN or infinity; serde_json reports overflowing literals as errors.
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Unique::deserialize(d).map(|u| u.0)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(Unique(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut obj = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if obj.contains_key(&key) {
                let shown: String = key.chars().take(SHOWN_KEY_CHARS).collect();
                return Err(de::Error::custom(format_args!(
                    "duplicate key '{shown}' in a JSON object"
                )));
            }
            let Unique(v) = map.next_value()?;
            obj.insert(key, v);
        }
        Ok(Value::Object(obj))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_serde_json_when_keys_are_unique() {
        let text = r#"{"a":1,"b":[true,null,-2,3.5,"x",{"c":{}}],"d":18446744073709551615}"#;
        assert_eq!(
            parse(text).unwrap(),
            serde_json::from_str::<Value>(text).unwrap()
        );
        assert_eq!(parse("[]").unwrap(), Value::Array(vec![]));
        assert_eq!(parse("\"s\"").unwrap(), Value::String("s".into()));
    }

    #[test]
    fn a_repeated_key_is_refused_at_any_depth() {
        let e = parse(r#"{"type":"hello","type":"heartbeat"}"#).unwrap_err();
        assert!(e.to_string().contains("duplicate key 'type'"), "{e}");
        let e = parse(r#"{"payload":{"identifier":"a","identifier":"b"}}"#).unwrap_err();
        assert!(e.to_string().contains("duplicate key 'identifier'"), "{e}");
        let e = parse(r#"[{"k":1},{"k":1,"k":2}]"#).unwrap_err();
        assert!(e.to_string().contains("duplicate key 'k'"), "{e}");
        // The same key in sibling objects is not a repeat.
        assert!(parse(r#"{"a":{"k":1},"b":{"k":2}}"#).is_ok());
    }

    #[test]
    fn a_long_repeated_key_is_shown_shortened() {
        let key = "k".repeat(10_000);
        let e = parse(&format!(r#"{{"{key}":1,"{key}":2}}"#))
            .unwrap_err()
            .to_string();
        assert!(e.len() < 200, "{} bytes", e.len());
    }

    #[test]
    fn serde_json_s_raw_value_key_is_an_ordinary_key() {
        // With serde_json's `raw_value` feature (on in this workspace through other crates),
        // `from_str::<Value>` reads an object with this one key as the JSON *inside* its string:
        // a way to hide one envelope in another. Here it stays what it says.
        let text = r#"{"$serde_json::private::RawValue":"{\"type\":\"hello\"}"}"#;
        let v = parse(text).unwrap();
        assert_eq!(
            v["$serde_json::private::RawValue"],
            Value::String(r#"{"type":"hello"}"#.into())
        );
        assert!(v.get("type").is_none());
    }

    fn arb_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| Value::Number(n.into())),
            any::<u64>().prop_map(|n| Value::Number(n.into())),
            any::<f64>().prop_map(|f| Number::from_f64(f).map_or(Value::Null, Value::Number)),
            "\\PC{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map("\\PC{0,6}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn reads_what_serde_json_reads(v in arb_json()) {
            let text = v.to_string();
            proptest::prop_assert_eq!(parse(&text).unwrap(), serde_json::from_str::<Value>(&text).unwrap());
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let text = "[".repeat(100_000);
        assert!(parse(&text).is_err());
    }
}
