//! Writes the seed corpus (`fuzz/corpus/<target>/`): `fuzz/run.sh seeds`.
//!
//! Deterministic: fixed keys, fixed nonces, a fixed xorshift stream for the recipe
//! inputs. Each file's first byte is the target's mode byte (see each target's docs).

use std::fs;
use std::path::Path;

use hopgate_core::chain::{self, Request};
use hopgate_core::wire;
use hopgate_fuzz::{keys, pool};

struct XorShift(u64);

impl XorShift {
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                (self.0 >> 24) as u8
            })
            .collect()
    }
}

fn with_mode(mode: u8, rest: &[u8]) -> Vec<u8> {
    let mut v = vec![mode];
    v.extend_from_slice(rest);
    v
}

fn write(dir: &Path, target: &str, name: &str, data: &[u8]) {
    let d = dir.join(target);
    fs::create_dir_all(&d).expect("create corpus dir");
    fs::write(d.join(name), data).expect("write seed");
}

fn main() {
    let out = std::env::args().nth(1).expect("usage: seed_corpus OUT_DIR");
    let out = Path::new(&out);
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let pool = pool();

    // chain: raw chains (1, 2, 3 links; a u64::MAX grant; a widening one), one text form,
    // and recipes.
    for (i, name) in [(0, "raw-grant"), (1, "raw-2links"), (3, "raw-3links"), (4, "raw-max"), (6, "raw-widened")] {
        write(out, "chain", name, &with_mode(0, &pool[i].built.bytes));
    }
    write(out, "chain", "text-2links", &with_mode(1, wire::to_text(&pool[1].built.bytes).as_bytes()));
    for (i, len) in [24, 48, 96, 160, 256, 400].into_iter().enumerate() {
        write(out, "chain", &format!("recipe-{i}"), &with_mode(2, &rng.bytes(len)));
    }

    // invocation: raw invocations of three chains, one text form, and recipes.
    for (i, name) in [(0, "raw-grant"), (1, "raw-2links"), (3, "raw-3links")] {
        let pc = &pool[i];
        let last = pc.last();
        let (resource, ability) = &last.caps[0];
        let resource = resource.replace('*', "x");
        let ability = ability.replace('*', "x");
        let req = Request {
            ability: &ability,
            resource: &resource,
            cost: 5.min(last.budget),
            timestamp: hopgate_fuzz::T0 + 1000,
            nonce: Some([0x11 + i as u8; 16]),
            payload: b"GET /files/reports/q3.pdf",
        };
        let inv = chain::invoke(&pc.built.bytes, &keys()[pc.holder()], &req).expect("valid invocation");
        write(out, "invocation", name, &with_mode(0, &inv));
        if i == 1 {
            write(out, "invocation", "text-2links", &with_mode(1, wire::to_text(&inv).as_bytes()));
        }
    }
    for (i, len) in [16, 40, 80, 140].into_iter().enumerate() {
        write(out, "invocation", &format!("recipe-{i}"), &with_mode(3, &rng.bytes(len)));
    }

    // gate: recipes only (the first bytes set the gate up, the rest makes requests).
    write(out, "gate", "zeros", &[0u8; 64]);
    for (i, len) in [32, 64, 128, 200, 300, 480].into_iter().enumerate() {
        write(out, "gate", &format!("recipe-{i}"), &rng.bytes(len));
    }

    // hash: lengths and contents from the input.
    write(out, "hash", "empty", &[]);
    write(out, "hash", "zeros", &[0u8; 48]);
    for (i, len) in [8, 40, 90, 200, 600].into_iter().enumerate() {
        write(out, "hash", &format!("batch-{i}"), &rng.bytes(len));
    }

    // hdp: a JSON value's shape and numbers from the input.
    write(out, "hdp", "zeros", &[0u8; 32]);
    for (i, len) in [16, 64, 160, 400].into_iter().enumerate() {
        write(out, "hdp", &format!("value-{i}"), &rng.bytes(len));
    }

    // jose: tokens made of encoded segments, and raw tokens.
    write(out, "jose", "token", b"eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhIn0.c2ln");
    write(out, "jose", "dots", b"a..b.c");
    for (i, len) in [24, 80, 200].into_iter().enumerate() {
        write(out, "jose", &format!("built-{i}"), &rng.bytes(len));
    }
}
