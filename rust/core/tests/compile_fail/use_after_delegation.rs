// delegate consumes the budget and hands back a fresh parent: the old handle is gone.
use hopgate_core::ledger::Ledger;

fn main() {
    let ledger = Ledger::new();
    let budget = ledger.budget(vec![([1; 32], 100)]).unwrap();
    let (_parent, _child) = budget.delegate([2; 32], 50).map_err(|(_, e)| e).unwrap();
    let _ = budget.reserve(1);
}
