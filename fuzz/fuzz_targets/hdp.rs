//! Canonical JSON (`hopgate_core::jcs`) and HDP records (`hopgate_core::hdp`).
//!
//! The input builds a JSON value: its shape (nesting, member names from a small
//! vocabulary so that names repeat and collide, strings with control characters, quotes,
//! backslashes and characters past U+FFFF) and its numbers from raw bit patterns (every
//! exponent, subnormals, both zeros, NaN and infinities). Properties: writing never
//! panics; a value with a NaN or an infinity, or an object with a name twice, has no
//! canonical form and every other one has; the canonical form is valid UTF-8 and does not
//! depend on the order of object members; every number reads back as the double written.
//! The value is then put in an HDP record shape (as its scope and as a hop) and its
//! signatures checked, which must not panic and, with made-up signatures, never pass.
#![no_main]

use hopgate_core::hdp;
use hopgate_core::jcs::{self, CanonicalError, Json};
use hopgate_fuzz::Input;
use libfuzzer_sys::fuzz_target;

const NAMES: &[&str] = &["a", "b", "A", "\u{e9}", "\u{fb33}", "\u{1f600}", "", "hop_signature", "\"", "\u{7f}\n"];
const STRINGS: &[&str] = &["", "x", "\u{0}\u{1f}\"\\/", "\u{2028}\u{fffd}", "\u{10ffff}", "\u{e9}t\u{e9}"];

fn value(inp: &mut Input<'_>, depth: usize) -> Json {
    match inp.below(if depth > 4 { 5 } else { 7 }) {
        0 => Json::Null,
        1 => Json::Bool(inp.chance(128)),
        2 => Json::Number(f64::from_bits(inp.u64())),
        3 => Json::Number(inp.u32() as i32 as f64),
        4 => Json::String(STRINGS[inp.below(STRINGS.len())].to_string()),
        5 => Json::Array((0..inp.below(4)).map(|_| value(inp, depth + 1)).collect()),
        _ => Json::Object(
            (0..inp.below(5)).map(|_| (NAMES[inp.below(NAMES.len())].to_string(), value(inp, depth + 1))).collect(),
        ),
    }
}

fn has_non_finite(v: &Json) -> bool {
    match v {
        Json::Number(x) => !x.is_finite(),
        Json::Array(items) => items.iter().any(has_non_finite),
        Json::Object(members) => members.iter().any(|(_, v)| has_non_finite(v)),
        _ => false,
    }
}

fn has_duplicate(v: &Json) -> bool {
    match v {
        Json::Array(items) => items.iter().any(has_duplicate),
        Json::Object(members) => {
            members.iter().enumerate().any(|(i, (k, _))| members[..i].iter().any(|(j, _)| j == k))
                || members.iter().any(|(_, v)| has_duplicate(v))
        }
        _ => false,
    }
}

fn reversed(v: &Json) -> Json {
    match v {
        Json::Array(items) => Json::Array(items.iter().map(reversed).collect()),
        Json::Object(members) => Json::Object(members.iter().rev().map(|(k, v)| (k.clone(), reversed(v))).collect()),
        other => other.clone(),
    }
}

fn numbers(v: &Json, out: &mut Vec<f64>) {
    match v {
        Json::Number(x) => out.push(*x),
        Json::Array(items) => items.iter().for_each(|v| numbers(v, out)),
        Json::Object(members) => members.iter().for_each(|(_, v)| numbers(v, out)),
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input::new(data);
    let v = value(&mut inp, 0);
    match jcs::canonical(&v) {
        Err(CanonicalError::NonFinite) => assert!(has_non_finite(&v)),
        Err(CanonicalError::DuplicateName(_)) => assert!(has_duplicate(&v)),
        Ok(text) => {
            assert!(!has_non_finite(&v) && !has_duplicate(&v));
            assert!(std::str::from_utf8(&text).is_ok());
            assert_eq!(jcs::canonical(&reversed(&v)).as_ref(), Ok(&text));
            let mut xs = Vec::new();
            numbers(&v, &mut xs);
            for x in xs {
                let mut one = Vec::new();
                jcs::write_canonical(&Json::Number(x), &mut one).expect("a finite number");
                let back: f64 = std::str::from_utf8(&one).expect("ASCII").parse().expect("a number");
                assert!(back == x, "{x:?} written as {}", String::from_utf8_lossy(&one));
            }
        }
    }
    let sig = Json::String("A".repeat(86));
    let hop = Json::Object(vec![("hop_signature".into(), sig.clone()), ("x".into(), v.clone())]);
    let record = Json::Object(vec![
        ("hdp".into(), Json::String("0.1".into())),
        ("header".into(), Json::Object(vec![])),
        ("principal".into(), Json::Null),
        ("scope".into(), v),
        ("chain".into(), Json::Array(vec![hop])),
        ("signature".into(), Json::Object(vec![("alg".into(), Json::String("Ed25519".into())), ("value".into(), sig)])),
    ]);
    let _ = hdp::signed(&record);
    for verdicts in hdp::verify_records(&[record], &hopgate_fuzz::pk(0)).into_iter().flatten() {
        assert!(verdicts.iter().all(|&ok| !ok), "a made-up signature passed");
    }
});
