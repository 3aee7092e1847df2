//! A JSON or YAML document read into a tree that borrows its strings from the input.
//!
//! A spec is read once and then only looked at, so nothing needs to own its text: a string
//! without escapes stays a slice of the fetched bytes (JSON from `serde_json`'s slice reader;
//! YAML scalars are copied, as `serde_yaml` hands them over owned). Objects keep their members
//! sorted by key, so a lookup (every `$ref` resolves through the large `components` maps) is a
//! binary search; a key given twice keeps its last value, as `serde_json::Value` does. Numbers
//! are kept only as `f64`: nothing routing reads is a number.
use std::{borrow::Cow, fmt};

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

#[derive(Debug, Clone, PartialEq)]
pub enum Node<'a> {
    Null,
    Bool(bool),
    Num(f64),
    Str(Cow<'a, str>),
    Arr(Vec<Node<'a>>),
    Obj(Vec<(Cow<'a, str>, Node<'a>)>),
}

impl<'a> Node<'a> {
    /// The member `key` of an object.
    pub fn get(&self, key: &str) -> Option<&Node<'a>> {
        let m = self.as_object()?;
        if m.len() <= 8 {
            // Most objects are small: comparing lengths first beats a search's `cmp`s.
            return m.iter().find(|(k, _)| k == key).map(|(_, v)| v);
        }
        m.binary_search_by(|(k, _)| k.as_ref().cmp(key))
            .ok()
            .map(|i| &m[i].1)
    }

    /// Element `i` of an array.
    pub fn at(&self, i: usize) -> Option<&Node<'a>> {
        match self {
            Node::Arr(a) => a.get(i),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Node::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Node::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Node<'a>]> {
        match self {
            Node::Arr(a) => Some(a),
            _ => None,
        }
    }

    /// An object's members, in key order.
    pub fn as_object(&self) -> Option<&[(Cow<'a, str>, Node<'a>)]> {
        match self {
            Node::Obj(m) => Some(m),
            _ => None,
        }
    }

    pub fn is_object(&self) -> bool {
        matches!(self, Node::Obj(_))
    }

    pub fn is_array(&self) -> bool {
        matches!(self, Node::Arr(_))
    }

    /// The node at a JSON Pointer (RFC 6901: `/a/b~1c/0`; empty for the node itself), with
    /// the same reading as `serde_json::Value::pointer`.
    pub fn pointer(&self, pointer: &str) -> Option<&Node<'a>> {
        if pointer.is_empty() {
            return Some(self);
        }
        let rest = pointer.strip_prefix('/')?;
        let mut node = self;
        for token in rest.split('/') {
            let token: Cow<str> = if token.contains('~') {
                token.replace("~1", "/").replace("~0", "~").into()
            } else {
                token.into()
            };
            node = match node {
                Node::Obj(_) => node.get(&token)?,
                Node::Arr(a) => a.get(index(&token)?)?,
                _ => return None,
            };
        }
        Some(node)
    }
}

/// An array index in a pointer: digits, no sign, no leading zero.
fn index(token: &str) -> Option<usize> {
    if token.starts_with('+') || (token.starts_with('0') && token.len() != 1) {
        return None;
    }
    token.parse().ok()
}

/// Shown in errors for a value of the wrong kind.
impl fmt::Display for Node<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Null => f.write_str("null"),
            Node::Bool(b) => write!(f, "{b}"),
            Node::Num(n) => write!(f, "{n:?}"),
            Node::Str(s) => write!(f, "{s:?}"),
            Node::Arr(_) => f.write_str("an array"),
            Node::Obj(_) => f.write_str("an object"),
        }
    }
}

impl<'de> Deserialize<'de> for Node<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON or YAML value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Node<'de>, E> {
        Ok(Node::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Node<'de>, E> {
        Ok(Node::Num(v as f64))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Node<'de>, E> {
        Ok(Node::Num(v as f64))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Node<'de>, E> {
        Ok(Node::Num(v))
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Node<'de>, E> {
        Ok(Node::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Node<'de>, E> {
        Ok(Node::Str(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Node<'de>, E> {
        Ok(Node::Str(Cow::Owned(v)))
    }

    fn visit_unit<E>(self) -> Result<Node<'de>, E> {
        Ok(Node::Null)
    }

    fn visit_none<E>(self) -> Result<Node<'de>, E> {
        Ok(Node::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node<'de>, D::Error> {
        Node::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node<'de>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(v) = seq.next_element()? {
            out.push(v);
        }
        Ok(Node::Arr(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node<'de>, A::Error> {
        let mut out: Vec<(Cow<'de, str>, Node<'de>)> =
            Vec::with_capacity(map.size_hint().unwrap_or(0).min(4096));
        while let Some(Key(k)) = map.next_key()? {
            out.push((k, map.next_value()?));
        }
        if !out.is_sorted_by(|a, b| a.0 < b.0) {
            // Stable, so of a key given twice the later value is the one kept below.
            out.sort_by(|a, b| a.0.cmp(&b.0));
            out.dedup_by(|later, earlier| {
                let same = later.0 == earlier.0;
                if same {
                    std::mem::swap(&mut later.1, &mut earlier.1);
                }
                same
            });
        }
        Ok(Node::Obj(out))
    }
}

/// An object key: read as a string (a YAML key such as `200` is its text, as for
/// `serde_json::Value`), borrowed where the input allows.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Owned(v)))
    }

    fn visit_bool<E>(self, v: bool) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Owned(v.to_string())))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Owned(v.to_string())))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Owned(v.to_string())))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Owned(v.to_string())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(text: &str) -> Node<'_> {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn reads_like_serde_json_value() {
        let text =
            r#"{"b": [1, 2.5, "x\ny", null, true], "a": {"~k/": {"deep": "v"}}, "c": "plain"}"#;
        let n = json(text);
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        for p in [
            "",
            "/b/0",
            "/b/2",
            "/b/3",
            "/b/4",
            "/a/~0k~1/deep",
            "/c",
            "/b/01",
            "/b/+1",
            "/b/9",
            "/x",
            "c",
        ] {
            assert_eq!(
                n.pointer(p).map(|n| n.to_string()),
                v.pointer(p).map(|v| match v {
                    serde_json::Value::Number(n) => format!("{:?}", n.as_f64().unwrap()),
                    serde_json::Value::Array(_) => "an array".into(),
                    serde_json::Value::Object(_) => "an object".into(),
                    other => other.to_string(),
                }),
                "pointer {p:?}"
            );
        }
        // Strings without escapes borrow from the input; keys are in order.
        assert!(matches!(
            n.get("c"),
            Some(Node::Str(Cow::Borrowed("plain")))
        ));
        let keys: Vec<&str> = n
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, _)| k.as_ref())
            .collect();
        assert_eq!(keys, ["a", "b", "c"]);
    }

    #[test]
    fn a_key_given_twice_keeps_its_last_value() {
        let n = json(r#"{"k": 1, "z": 0, "k": 2, "a": 3, "k": 3}"#);
        assert_eq!(n.get("k"), Some(&Node::Num(3.0)));
        assert_eq!(n.as_object().unwrap().len(), 3);
    }

    #[test]
    fn yaml_keys_that_are_not_strings_are_their_text() {
        let n: Node =
            serde_yaml::from_str("responses:\n  200: {description: ok}\n  true: x\n").unwrap();
        assert_eq!(
            n.pointer("/responses/200/description")
                .and_then(Node::as_str),
            Some("ok")
        );
        assert_eq!(
            n.pointer("/responses/true").and_then(Node::as_str),
            Some("x")
        );
    }
}
