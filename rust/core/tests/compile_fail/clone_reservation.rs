// A reservation stands for money held: it cannot be duplicated.
use hopgate_core::ledger::Ledger;

fn main() {
    let ledger = Ledger::new();
    let r = ledger.reserve(&[([1; 32], 100)], 10).unwrap();
    let twin = r.clone();
    twin.release();
}
