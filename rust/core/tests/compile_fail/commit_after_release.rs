// release consumes the reservation: committing afterwards does not compile.
use hopgate_core::ledger::Ledger;

fn main() {
    let ledger = Ledger::new();
    let r = ledger.reserve(&[([1; 32], 100)], 10).unwrap();
    r.release();
    r.commit(3).unwrap();
}
