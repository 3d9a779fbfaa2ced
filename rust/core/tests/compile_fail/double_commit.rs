// commit consumes the reservation: a second commit does not compile.
use hopgate_core::ledger::Ledger;

fn main() {
    let ledger = Ledger::new();
    let r = ledger.reserve(&[([1; 32], 100)], 10).unwrap();
    r.commit(10).unwrap();
    r.commit(10).unwrap();
}
