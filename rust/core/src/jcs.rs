//! JSON values and their canonical form (RFC 8785, the JSON Canonicalization Scheme), as
//! the HDP records of [`crate::hdp`] are signed.
//!
//! The canonical form: no whitespace; object members sorted by their names' UTF-16 code
//! units; strings with only `"`, `\` and the control characters escaped (the two-character
//! escapes where JSON has one, `\u00xx` in lower-case hex for the others) and everything
//! else written as UTF-8; numbers as ECMAScript's `Number.prototype.toString` writes the
//! IEEE 754 double (RFC 8785 §3.2.2.3). Integers are doubles here too: a caller holding an
//! integer that a double cannot represent exactly must refuse it before building a value.

use std::cmp::Ordering;

/// A JSON value. Object members keep the order they were given; [`canonical`] sorts them.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A finite number (a non-finite one has no JSON form; [`canonical`] refuses it).
    Number(f64),
    /// A string.
    String(String),
    /// An array.
    Array(Vec<Json>),
    /// An object, as (name, value) members.
    Object(Vec<(String, Json)>),
}

impl Json {
    /// The member called `name` of an object (the first, should there be several).
    pub fn get(&self, name: &str) -> Option<&Json> {
        match self {
            Json::Object(members) => members.iter().find(|(k, _)| k == name).map(|(_, v)| v),
            _ => None,
        }
    }
}

/// Why a value has no canonical form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanonicalError {
    /// A NaN or an infinity.
    #[error("a number is not finite")]
    NonFinite,
    /// Two members of one object share a name.
    #[error("an object has two members called {0:?}")]
    DuplicateName(String),
}

/// `value` in canonical form.
pub fn canonical(value: &Json) -> Result<Vec<u8>, CanonicalError> {
    let mut out = Vec::with_capacity(256);
    write_canonical(value, &mut out)?;
    Ok(out)
}

/// Appends `value` in canonical form to `out` (on an error, `out` holds a partial value).
pub fn write_canonical(value: &Json, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
    match value {
        Json::Null => out.extend_from_slice(b"null"),
        Json::Bool(true) => out.extend_from_slice(b"true"),
        Json::Bool(false) => out.extend_from_slice(b"false"),
        Json::Number(x) => write_number(*x, out)?,
        Json::String(s) => write_string(s, out),
        Json::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out)?;
            }
            out.push(b']');
        }
        Json::Object(members) => write_object(members.iter(), out)?,
    }
    Ok(())
}

/// Appends the object made of `members` in canonical form to `out`.
pub fn write_object<'a>(
    members: impl Iterator<Item = &'a (String, Json)>,
    out: &mut Vec<u8>,
) -> Result<(), CanonicalError> {
    let mut sorted: Vec<&(String, Json)> = members.collect();
    sorted.sort_by(|a, b| utf16_order(&a.0, &b.0));
    if let Some(pair) = sorted.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(CanonicalError::DuplicateName(pair[0].0.clone()));
    }
    out.push(b'{');
    for (i, (name, item)) in sorted.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_string(name, out);
        out.push(b':');
        write_canonical(item, out)?;
    }
    out.push(b'}');
    Ok(())
}

/// RFC 8785 §3.2.3: member names compared as arrays of UTF-16 code units (which differs
/// from comparing UTF-8 bytes or code points once a name holds a character above U+FFFF
/// and another one in U+E000..U+FFFF).
fn utf16_order(a: &str, b: &str) -> Ordering {
    a.encode_utf16().cmp(b.encode_utf16())
}

/// A JSON string as RFC 8785 §3.2.2.2 writes it.
fn write_string(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\x08' => b"\\b",
            b'\x0c' => b"\\f",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => &[],
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// A double as ECMAScript's `Number.prototype.toString` writes it (ECMA-262, the
/// Number::toString algorithm, radix 10): the shortest decimal digits that read back as
/// `x`, placed in plain notation when the decimal point falls within 21 digits to the left
/// or 6 zeros to the right of them, in exponent notation otherwise.
fn write_number(x: f64, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
    if !x.is_finite() {
        return Err(CanonicalError::NonFinite);
    }
    if x == 0.0 {
        // Both zeros are "0".
        out.push(b'0');
        return Ok(());
    }
    if x < 0.0 {
        out.push(b'-');
    }
    // Rust's `{:e}` writes as few digits as read back as `x` (`d[.ddd]e<exp>`), but of two
    // such spellings equally close to `x` it may not take the even one, as ECMAScript does
    // (0x43143ff3c1cb0959 is 1424953923781206.25: "...206.2", not "...206.3"). `x`
    // rounded to that many digits (ties to even) is the closest spelling, kept when it
    // still reads back as `x` (next to a power of two it may not).
    let shortest = format!("{:e}", x.abs());
    let k = shortest.split('e').next().unwrap_or("").bytes().filter(u8::is_ascii_digit).count();
    let closest = format!("{:.*e}", k.saturating_sub(1), x.abs());
    let text = if closest.parse::<f64>() == Ok(x.abs()) { closest } else { shortest };
    let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
    let digits: Vec<u8> = mantissa.bytes().filter(u8::is_ascii_digit).collect();
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let k = digits.len() as i32;
    // ECMA-262's n: the value is 0.digits x 10^n.
    let n = exponent + 1;
    if k <= n && n <= 21 {
        out.extend_from_slice(&digits);
        out.extend(std::iter::repeat_n(b'0', (n - k) as usize));
    } else if 0 < n && n <= 21 {
        out.extend_from_slice(&digits[..n as usize]);
        out.push(b'.');
        out.extend_from_slice(&digits[n as usize..]);
    } else if -6 < n && n <= 0 {
        out.extend_from_slice(b"0.");
        out.extend(std::iter::repeat_n(b'0', (-n) as usize));
        out.extend_from_slice(&digits);
    } else {
        out.push(digits[0]);
        if k > 1 {
            out.push(b'.');
            out.extend_from_slice(&digits[1..]);
        }
        out.push(b'e');
        out.push(if n - 1 < 0 { b'-' } else { b'+' });
        out.extend_from_slice((n - 1).unsigned_abs().to_string().as_bytes());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number(x: f64) -> String {
        String::from_utf8(canonical(&Json::Number(x)).unwrap()).unwrap()
    }

    #[test]
    fn numbers_as_ecmascript_writes_them() {
        // RFC 8785 Appendix B's table (the IEEE 754 bit patterns and their canonical text).
        let table: &[(u64, &str)] = &[
            (0x0000000000000000, "0"),
            (0x8000000000000000, "0"),
            (0x0000000000000001, "5e-324"),
            (0x8000000000000001, "-5e-324"),
            (0x7fefffffffffffff, "1.7976931348623157e+308"),
            (0xffefffffffffffff, "-1.7976931348623157e+308"),
            (0x4340000000000000, "9007199254740992"),
            (0xc340000000000000, "-9007199254740992"),
            (0x4430000000000000, "295147905179352830000"),
            (0x44b52d02c7e14af5, "9.999999999999997e+22"),
            (0x44b52d02c7e14af6, "1e+23"),
            (0x44b52d02c7e14af7, "1.0000000000000001e+23"),
            (0x444b1ae4d6e2ef4e, "999999999999999700000"),
            (0x444b1ae4d6e2ef4f, "999999999999999900000"),
            (0x444b1ae4d6e2ef50, "1e+21"),
            (0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"),
            (0x3eb0c6f7a0b5ed8d, "0.000001"),
            (0x41b3de4355555553, "333333333.3333332"),
            (0x41b3de4355555554, "333333333.33333325"),
            (0x41b3de4355555555, "333333333.3333333"),
            (0x41b3de4355555556, "333333333.3333334"),
            (0x41b3de4355555557, "333333333.33333343"),
            (0xbecbf647612f3696, "-0.0000033333333333333333"),
            (0x43143ff3c1cb0959, "1424953923781206.2"),
        ];
        for &(bits, text) in table {
            assert_eq!(number(f64::from_bits(bits)), text, "{bits:#x}");
        }
        assert_eq!(number(1e-7), "1e-7");
        assert_eq!(number(123.0), "123");
        assert_eq!(number(0.5), "0.5");
        assert_eq!(canonical(&Json::Number(f64::NAN)), Err(CanonicalError::NonFinite));
        assert_eq!(canonical(&Json::Number(f64::NEG_INFINITY)), Err(CanonicalError::NonFinite));
    }

    #[test]
    fn strings_and_member_order() {
        let value = Json::Object(vec![
            ("\u{fb33}".into(), Json::Null),
            ("\u{1f600}".into(), Json::Bool(true)),
            ("\r".into(), Json::Array(vec![Json::Number(1.0), Json::String("\u{7f}\"\\\x01\u{e9}".into())])),
            ("1".into(), Json::Bool(false)),
            ("\u{80}".into(), Json::Object(vec![])),
        ]);
        let text = String::from_utf8(canonical(&value).unwrap()).unwrap();
        // U+1F600 is the surrogate pair D83D DE00: before U+FB33 in UTF-16 order (after it
        // in code point order).
        assert_eq!(text, "{\"\\r\":[1,\"\u{7f}\\\"\\\\\\u0001\u{e9}\"],\"1\":false,\"\u{80}\":{},\"\u{1f600}\":true,\"\u{fb33}\":null}");
    }

    #[test]
    fn duplicate_names_have_no_canonical_form() {
        let value = Json::Object(vec![("a".into(), Json::Null), ("a".into(), Json::Null)]);
        assert_eq!(canonical(&value), Err(CanonicalError::DuplicateName("a".into())));
    }
}
