//! The serde deserializer over a parsed [`Spanned`] tree.

use super::*;
use serde::de::value::BorrowedStrDeserializer;
use serde::de::{DeserializeOwned, DeserializeSeed, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor};
use serde::Deserialize;

// ---------------------------------------------------------------------------
// Deserializer
// ---------------------------------------------------------------------------

/// Deserializes a `T` from hjson source text.
pub fn from_str<T: DeserializeOwned>(src: &str) -> Result<T, Error> {
    let root = parse(src)?;
    from_spanned(&root)
}

/// Deserializes a `T` from a parsed (sub)tree; error paths start at the root
/// of `node`.
pub fn from_spanned<'de, T: Deserialize<'de>>(node: &'de Spanned) -> Result<T, Error> {
    from_spanned_at(node, "")
}

/// Like [`from_spanned`], with error paths prefixed by `path` (the path of
/// `node` in the whole document, built with [`join_key`]/[`join_index`]).
pub fn from_spanned_at<'de, T: Deserialize<'de>>(node: &'de Spanned, path: &str) -> Result<T, Error> {
    T::deserialize(ValueDe { node, path }).map_err(|e| e.place(node.line, node.col, path))
}

struct ValueDe<'de, 'p> {
    node: &'de Spanned,
    path: &'p str,
}

fn visit_number<'de, V: Visitor<'de>>(n: &'de Number, visitor: V) -> Result<V::Value, Error> {
    if let Some(u) = n.as_u64() {
        visitor.visit_u64(u)
    } else if let Some(i) = n.as_i64() {
        visitor.visit_i64(i)
    } else {
        visitor.visit_f64(n.as_f64())
    }
}

fn out_of_range(n: &Number, ty: &str) -> Error {
    Error::unplaced(format!("integer {} is out of range for {ty}", n.text))
}

macro_rules! de_int {
    ($($method:ident $ty:ident $visit:ident),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            let node: &'de Spanned = self.node;
            match &node.node {
                Node::Number(n) => match n.integer() {
                    IntVal::Exact(i) => match $ty::try_from(i) {
                        Ok(v) => visitor.$visit(v),
                        Err(_) => Err(out_of_range(n, stringify!($ty))),
                    },
                    IntVal::Fraction(f) => {
                        Err(de::Error::invalid_type(Unexpected::Float(f), &visitor))
                    }
                    IntVal::TooBig => Err(out_of_range(n, stringify!($ty))),
                },
                _ => self.deserialize_any(visitor),
            }
        }
    )*};
}

impl<'de> ValueDe<'de, '_> {
    fn visit_array<V: Visitor<'de>>(self, items: &'de [Spanned], visitor: V) -> Result<V::Value, Error> {
        let mut seq = SeqDe {
            iter: items.iter().enumerate(),
            path: self.path,
        };
        let v = visitor.visit_seq(&mut seq)?;
        if seq.iter.len() > 0 {
            return Err(de::Error::invalid_length(items.len(), &"fewer elements in array"));
        }
        Ok(v)
    }

    fn visit_object<V: Visitor<'de>>(
        self,
        members: &'de [(SpannedKey, Spanned)],
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_map(MapDe {
            iter: members.iter(),
            path: self.path,
            pending: None,
        })
    }
}

impl<'de> de::Deserializer<'de> for ValueDe<'de, '_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let node: &'de Spanned = self.node;
        match &node.node {
            Node::Null => visitor.visit_unit(),
            Node::Bool(b) => visitor.visit_bool(*b),
            Node::Number(n) => visit_number(n, visitor),
            Node::String(s) => visitor.visit_borrowed_str(s),
            Node::Array(items) => self.visit_array(items, visitor),
            Node::Object(members) => self.visit_object(members, visitor),
        }
    }

    de_int! {
        deserialize_i8 i8 visit_i8,
        deserialize_i16 i16 visit_i16,
        deserialize_i32 i32 visit_i32,
        deserialize_i64 i64 visit_i64,
        deserialize_i128 i128 visit_i128,
        deserialize_u8 u8 visit_u8,
        deserialize_u16 u16 visit_u16,
        deserialize_u32 u32 visit_u32,
        deserialize_u64 u64 visit_u64,
        deserialize_u128 u128 visit_u128,
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.node.node {
            Node::Bool(b) => visitor.visit_bool(b),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match &self.node.node {
            Node::Number(n) => visitor.visit_f64(n.as_f64()),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let node: &'de Spanned = self.node;
        match &node.node {
            Node::String(s) => visitor.visit_borrowed_str(s),
            Node::Number(n) => visitor.visit_borrowed_str(&n.text),
            Node::Bool(b) => visitor.visit_borrowed_str(if *b { "true" } else { "false" }),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let node: &'de Spanned = self.node;
        match &node.node {
            Node::String(s) => visitor.visit_borrowed_bytes(s.as_bytes()),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.node.node {
            Node::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.node.node {
            Node::Null => visitor.visit_unit(),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, _name: &'static str, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _name: &'static str, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let node: &'de Spanned = self.node;
        match &node.node {
            Node::Array(items) => self.visit_array(items, visitor),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let node: &'de Spanned = self.node;
        match &node.node {
            Node::Object(members) => self.visit_object(members, visitor),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let node: &'de Spanned = self.node;
        match &node.node {
            Node::String(s) => visitor.visit_enum(EnumDe {
                name: s,
                line: node.line,
                col: node.col,
                path: self.path.to_string(),
                value: None,
            }),
            Node::Object(members) if members.len() == 1 => {
                let (k, v) = &members[0];
                visitor.visit_enum(EnumDe {
                    name: &k.name,
                    line: k.line,
                    col: k.col,
                    path: join_key(self.path, &k.name),
                    value: Some(v),
                })
            }
            _ => Err(de::Error::invalid_type(node.unexpected(), &visitor)),
        }
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let node: &'de Spanned = self.node;
        match &node.node {
            Node::String(s) => visitor.visit_borrowed_str(s),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }
}

struct SeqDe<'de, 'p> {
    iter: std::iter::Enumerate<std::slice::Iter<'de, Spanned>>,
    path: &'p str,
}

impl<'de> SeqAccess<'de> for SeqDe<'de, '_> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, Error> {
        let Some((i, node)) = self.iter.next() else {
            return Ok(None);
        };
        let path = join_index(self.path, i);
        seed.deserialize(ValueDe { node, path: &path })
            .map(Some)
            .map_err(|e| e.place(node.line, node.col, &path))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

struct MapDe<'de, 'p> {
    iter: std::slice::Iter<'de, (SpannedKey, Spanned)>,
    path: &'p str,
    pending: Option<(&'de Spanned, String)>,
}

impl<'de> MapAccess<'de> for MapDe<'de, '_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Error> {
        let Some((key, value)) = self.iter.next() else {
            return Ok(None);
        };
        let path = join_key(self.path, &key.name);
        let k = seed
            .deserialize(KeyDe { key: &key.name })
            .map_err(|e| e.place(key.line, key.col, &path))?;
        self.pending = Some((value, path));
        Ok(Some(k))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let Some((node, path)) = self.pending.take() else {
            return Err(de::Error::custom("map value requested before its key"));
        };
        seed.deserialize(ValueDe { node, path: &path })
            .map_err(|e| e.place(node.line, node.col, &path))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

/// Deserializer for object keys: strings, or numbers/bools parsed from them.
struct KeyDe<'de> {
    key: &'de str,
}

macro_rules! de_key_parse {
    ($($method:ident $ty:ident $visit:ident),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            match self.key.parse::<$ty>() {
                Ok(v) => visitor.$visit(v),
                Err(_) => Err(de::Error::invalid_value(Unexpected::Str(self.key), &visitor)),
            }
        }
    )*};
}

impl<'de> de::Deserializer<'de> for KeyDe<'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_borrowed_str(self.key)
    }

    de_key_parse! {
        deserialize_bool bool visit_bool,
        deserialize_i8 i8 visit_i8,
        deserialize_i16 i16 visit_i16,
        deserialize_i32 i32 visit_i32,
        deserialize_i64 i64 visit_i64,
        deserialize_i128 i128 visit_i128,
        deserialize_u8 u8 visit_u8,
        deserialize_u16 u16 visit_u16,
        deserialize_u32 u32 visit_u32,
        deserialize_u64 u64 visit_u64,
        deserialize_u128 u128 visit_u128,
        deserialize_f32 f32 visit_f32,
        deserialize_f64 f64 visit_f64,
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _name: &'static str, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_enum(BorrowedStrDeserializer::<Error>::new(self.key))
    }

    serde::forward_to_deserialize_any! {
        char str string bytes byte_buf unit unit_struct seq tuple tuple_struct
        map struct identifier ignored_any
    }
}

/// Enum given as a string (unit variant) or a single-member object
/// `{ variant: value }`.
struct EnumDe<'de> {
    name: &'de str,
    line: usize,
    col: usize,
    path: String,
    value: Option<&'de Spanned>,
}

impl<'de> EnumAccess<'de> for EnumDe<'de> {
    type Error = Error;
    type Variant = VariantDe<'de>;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, VariantDe<'de>), Error> {
        let v = seed
            .deserialize(BorrowedStrDeserializer::<Error>::new(self.name))
            .map_err(|e| e.place(self.line, self.col, &self.path))?;
        Ok((
            v,
            VariantDe {
                line: self.line,
                col: self.col,
                path: self.path,
                value: self.value,
            },
        ))
    }
}

struct VariantDe<'de> {
    line: usize,
    col: usize,
    path: String,
    value: Option<&'de Spanned>,
}

impl VariantDe<'_> {
    fn no_value(&self, expected: &str) -> Error {
        <Error as de::Error>::invalid_type(Unexpected::UnitVariant, &expected).place(self.line, self.col, &self.path)
    }
}

impl<'de> VariantAccess<'de> for VariantDe<'de> {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        match self.value {
            None => Ok(()),
            Some(v) if matches!(v.node, Node::Null) => Ok(()),
            Some(v) => Err(<Error as de::Error>::invalid_type(v.unexpected(), &"unit variant")
                .place(v.line, v.col, &self.path)),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Error> {
        match self.value {
            Some(node) => seed
                .deserialize(ValueDe { node, path: &self.path })
                .map_err(|e| e.place(node.line, node.col, &self.path)),
            None => Err(self.no_value("newtype variant")),
        }
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, Error> {
        match self.value {
            Some(node) => de::Deserializer::deserialize_seq(ValueDe { node, path: &self.path }, visitor)
                .map_err(|e| e.place(node.line, node.col, &self.path)),
            None => Err(self.no_value("tuple variant")),
        }
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.value {
            Some(node) => de::Deserializer::deserialize_map(ValueDe { node, path: &self.path }, visitor)
                .map_err(|e| e.place(node.line, node.col, &self.path)),
            None => Err(self.no_value("struct variant")),
        }
    }
}
