//! Bencode: typed values go through serde_bencode; this module adds what serde cannot give: a
//! bounded structural check of untrusted input (serde_bencode recurses without a depth limit) and
//! the raw byte span of a dictionary value, so the info-hash is the SHA-1 of the `info` bytes as
//! sent, never of a re-encoding.

use thiserror::Error;

/// Nesting deeper than this is refused: real metainfo nests 4 or 5 levels.
pub const MAX_DEPTH: usize = 64;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BencodeError {
    #[error("bencode: unexpected end of data at byte {0}")]
    Eof(usize),
    #[error("bencode: invalid byte {byte:#04x} at {at}")]
    Invalid { byte: u8, at: usize },
    #[error("bencode: nesting deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("bencode: {0} trailing bytes after the value")]
    Trailing(usize),
    #[error("bencode: top level is not a dictionary")]
    NotADict,
    #[error("bencode: {0}")]
    Other(String),
}

/// Checks that `data` holds exactly one well-formed value within the depth bound.
pub fn validate(data: &[u8]) -> Result<(), BencodeError> {
    let end = value_len(data)?;
    match data.len() - end {
        0 => Ok(()),
        n => Err(BencodeError::Trailing(n)),
    }
}

/// Returns the length of the first complete value at the start of `data` (used to split a
/// ut_metadata message into its dictionary and the raw piece after it).
pub fn value_len(data: &[u8]) -> Result<usize, BencodeError> {
    skip(data, 0, 0)
}

/// The byte range of the value stored under `key` in the top-level dictionary of `data`.
pub fn dict_value_span(
    data: &[u8],
    key: &[u8],
) -> Result<Option<std::ops::Range<usize>>, BencodeError> {
    validate(data)?;
    if data.first() != Some(&b'd') {
        return Err(BencodeError::NotADict);
    }
    let mut pos = 1;
    while data.get(pos).is_some_and(|&b| b != b'e') {
        let (k, value_start) = string_at(data, pos)?;
        let value_end = skip(data, value_start, 1)?;
        if &data[k] == key {
            return Ok(Some(value_start..value_end));
        }
        pos = value_end;
    }
    Ok(None)
}

/// A decoded value borrowing its strings from the input. Dictionaries keep their entries in input
/// order (duplicates included) so that nothing is lost for callers that care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value<'a> {
    Int(i64),
    Bytes(&'a [u8]),
    List(Vec<Value<'a>>),
    Dict(Vec<(&'a [u8], Value<'a>)>),
}

impl<'a> Value<'a> {
    /// The first value under `key` if this is a dictionary.
    pub fn get(&self, key: &str) -> Option<&Value<'a>> {
        match self {
            Value::Dict(entries) => entries
                .iter()
                .find(|(k, _)| *k == key.as_bytes())
                .map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    pub fn as_bytes(&self) -> Option<&'a [u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// The string if it is valid UTF-8.
    pub fn as_str(&self) -> Option<&'a str> {
        std::str::from_utf8(self.as_bytes()?).ok()
    }

    pub fn as_list(&self) -> Option<&[Value<'a>]> {
        match self {
            Value::List(items) => Some(items),
            _ => None,
        }
    }

    pub fn is_dict(&self) -> bool {
        matches!(self, Value::Dict(_))
    }
}

/// Decodes exactly one value (validated first, so untrusted input is fine).
pub fn decode(data: &[u8]) -> Result<Value<'_>, BencodeError> {
    validate(data)?;
    Ok(build(data, 0, 0)?.0)
}

/// Skips one value starting at `pos`, returning where it ends. Recursion is bounded by
/// [`MAX_DEPTH`], and nothing is allocated.
fn skip(data: &[u8], pos: usize, depth: usize) -> Result<usize, BencodeError> {
    match data.get(pos) {
        None => Err(BencodeError::Eof(pos)),
        Some(b'i') => Ok(int_at(data, pos)?.1),
        Some(b'0'..=b'9') => Ok(string_at(data, pos)?.1),
        Some(&kind @ (b'l' | b'd')) => {
            if depth >= MAX_DEPTH {
                return Err(BencodeError::TooDeep);
            }
            let mut p = pos + 1;
            loop {
                match data.get(p) {
                    None => return Err(BencodeError::Eof(p)),
                    Some(b'e') => return Ok(p + 1),
                    Some(_) => {
                        if kind == b'd' {
                            p = key_at(data, p)?.1;
                        }
                        p = skip(data, p, depth + 1)?;
                    }
                }
            }
        }
        Some(&byte) => Err(BencodeError::Invalid { byte, at: pos }),
    }
}

/// Same walk as [`skip`], building the value.
fn build(data: &[u8], pos: usize, depth: usize) -> Result<(Value<'_>, usize), BencodeError> {
    match data.get(pos) {
        None => Err(BencodeError::Eof(pos)),
        Some(b'i') => int_at(data, pos).map(|(i, end)| (Value::Int(i), end)),
        Some(b'0'..=b'9') => string_at(data, pos).map(|(r, end)| (Value::Bytes(&data[r]), end)),
        Some(&kind @ (b'l' | b'd')) => {
            if depth >= MAX_DEPTH {
                return Err(BencodeError::TooDeep);
            }
            let mut p = pos + 1;
            let mut items = Vec::new();
            let mut entries = Vec::new();
            loop {
                match data.get(p) {
                    None => return Err(BencodeError::Eof(p)),
                    Some(b'e') => break,
                    Some(_) if kind == b'd' => {
                        let (k, value_start) = key_at(data, p)?;
                        let (v, end) = build(data, value_start, depth + 1)?;
                        entries.push((&data[k], v));
                        p = end;
                    }
                    Some(_) => {
                        let (v, end) = build(data, p, depth + 1)?;
                        items.push(v);
                        p = end;
                    }
                }
            }
            let value = if kind == b'd' {
                Value::Dict(entries)
            } else {
                Value::List(items)
            };
            Ok((value, p + 1))
        }
        Some(&byte) => Err(BencodeError::Invalid { byte, at: pos }),
    }
}

/// A dictionary key: a byte string, nothing else.
fn key_at(data: &[u8], pos: usize) -> Result<(std::ops::Range<usize>, usize), BencodeError> {
    match data.get(pos) {
        Some(b'0'..=b'9') => string_at(data, pos),
        Some(&byte) => Err(BencodeError::Invalid { byte, at: pos }),
        None => Err(BencodeError::Eof(pos)),
    }
}

/// `<len>:<bytes>` at `pos`: the range of the bytes and the end. The claimed length is checked
/// against what is left before it is used for anything.
fn string_at(data: &[u8], pos: usize) -> Result<(std::ops::Range<usize>, usize), BencodeError> {
    let mut p = pos;
    let mut len: usize = 0;
    loop {
        match data.get(p) {
            None => return Err(BencodeError::Eof(p)),
            Some(b':') if p > pos => break,
            // A length has no leading zeros: `0:` is the only one starting with 0.
            Some(&d @ b'0'..=b'9') if !(p > pos && data[pos] == b'0') => {
                len = len
                    .checked_mul(10)
                    .and_then(|l| l.checked_add(usize::from(d - b'0')))
                    .ok_or(BencodeError::Eof(data.len()))?;
            }
            Some(&byte) => return Err(BencodeError::Invalid { byte, at: p }),
        }
        p += 1;
    }
    let start = p + 1;
    if len > data.len() - start {
        return Err(BencodeError::Eof(data.len()));
    }
    Ok((start..start + len, start + len))
}

/// `i<n>e` at `pos`: the value and the end. `-0`, leading zeros and values beyond i64 are refused.
fn int_at(data: &[u8], pos: usize) -> Result<(i64, usize), BencodeError> {
    let mut p = pos + 1;
    let negative = data.get(p) == Some(&b'-');
    if negative {
        p += 1;
    }
    let digits = p;
    let mut value: i64 = 0;
    loop {
        match data.get(p) {
            None => return Err(BencodeError::Eof(p)),
            Some(b'e') if p > digits => break,
            Some(&d @ b'0'..=b'9') => {
                let leading_zero = p > digits && data[digits] == b'0';
                let negative_zero = negative && d == b'0' && p == digits;
                if leading_zero || negative_zero {
                    return Err(BencodeError::Invalid { byte: d, at: p });
                }
                let d = i64::from(d - b'0');
                value = value
                    .checked_mul(10)
                    .and_then(|v| {
                        if negative {
                            v.checked_sub(d)
                        } else {
                            v.checked_add(d)
                        }
                    })
                    .ok_or_else(|| {
                        BencodeError::Other(format!(
                            "integer at byte {pos} does not fit in 64 bits"
                        ))
                    })?;
            }
            Some(&byte) => return Err(BencodeError::Invalid { byte, at: p }),
        }
        p += 1;
    }
    Ok((value, p + 1))
}

/// serde_bencode decoding behind [`validate`], for any untrusted input.
pub fn from_bytes<'de, T: serde::Deserialize<'de>>(data: &'de [u8]) -> Result<T, BencodeError> {
    validate(data)?;
    serde_bencode::from_bytes(data).map_err(|e| BencodeError::Other(e.to_string()))
}

pub fn to_bytes<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Serialising our own well-typed values cannot fail.
    serde_bencode::to_bytes(value).expect("bencode serialisation")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_well_formed_values() {
        for ok in [
            &b"i0e"[..],
            b"i-12e",
            b"i9223372036854775807e",
            b"i-9223372036854775808e",
            b"0:",
            b"3:abc",
            b"le",
            b"de",
            b"d1:ali1ei2ee1:bd1:c0:ee",
            b"l0:l0:ee",
        ] {
            assert_eq!(validate(ok), Ok(()), "{}", String::from_utf8_lossy(ok));
        }
    }

    #[test]
    fn refuses_malformed_integers() {
        for bad in [
            &b"i-0e"[..],
            b"i03e",
            b"i00e",
            b"ie",
            b"i-e",
            b"i1",
            b"i1-e",
            b"i9223372036854775808e",
            b"i+1e",
            b"i 1e",
        ] {
            assert!(validate(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn refuses_malformed_strings() {
        for bad in [
            &b"4:abc"[..],
            b"01:a",
            b"1a",
            b"3",
            b":",
            b"99999999999999999999999999:x",
            b"18446744073709551615:",
        ] {
            assert!(validate(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn refuses_non_string_keys_and_missing_values() {
        assert!(matches!(
            validate(b"di1ei2ee"),
            Err(BencodeError::Invalid { byte: b'i', at: 1 })
        ));
        assert!(validate(b"d1:ae").is_err());
        assert!(validate(b"dlee").is_err());
    }

    #[test]
    fn trailing_bytes_are_counted() {
        assert_eq!(validate(b"i1eXY"), Err(BencodeError::Trailing(2)));
        assert_eq!(value_len(b"d1:ai1ee12345"), Ok(8));
        assert!(validate(b"").is_err());
    }

    #[test]
    fn deep_nesting_is_refused_without_overflowing_the_stack() {
        let deep = vec![b'l'; 100_000];
        assert_eq!(validate(&deep), Err(BencodeError::TooDeep));
        let mut just_ok = vec![b'l'; MAX_DEPTH];
        just_ok.extend(vec![b'e'; MAX_DEPTH]);
        assert_eq!(validate(&just_ok), Ok(()));
        let mut too_deep = vec![b'l'; MAX_DEPTH + 1];
        too_deep.extend(vec![b'e'; MAX_DEPTH + 1]);
        assert_eq!(validate(&too_deep), Err(BencodeError::TooDeep));
        let dicts = b"d1:a".repeat(100_000);
        assert_eq!(decode(&dicts), Err(BencodeError::TooDeep));
    }

    #[test]
    fn dict_value_span_returns_raw_bytes() {
        let data = b"d8:announce3:url4:infod4:name1:x6:lengthi5ee3:zzzi1ee";
        let span = dict_value_span(data, b"info").unwrap().unwrap();
        assert_eq!(&data[span], b"d4:name1:x6:lengthi5ee");
        assert_eq!(dict_value_span(data, b"nope"), Ok(None));
        assert_eq!(
            dict_value_span(b"li1ee", b"info"),
            Err(BencodeError::NotADict)
        );
        assert!(dict_value_span(b"d4:infoi1e", b"info").is_err());
    }

    #[test]
    fn decode_builds_values() {
        let v = decode(b"d1:ali1e2:xye1:bi-3ee").unwrap();
        assert_eq!(
            v.get("a").and_then(|a| a.as_list()).map(|l| l.len()),
            Some(2)
        );
        assert_eq!(v.get("b").and_then(Value::as_int), Some(-3));
        assert_eq!(v.get("c"), None);
        assert!(v.is_dict());
    }

    #[test]
    fn serde_path_validates_first() {
        let deep = vec![b'l'; 100_000];
        assert_eq!(
            from_bytes::<serde_bencode::value::Value>(&deep).unwrap_err(),
            BencodeError::TooDeep
        );
        let n: i64 = from_bytes(b"i42e").unwrap();
        assert_eq!(n, 42);
    }
}
