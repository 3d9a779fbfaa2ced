// A budget is the right to spend: it cannot be duplicated.
use hopgate_core::ledger::Ledger;

fn main() {
    let ledger = Ledger::new();
    let budget = ledger.budget(vec![([1; 32], 100)]).unwrap();
    let _twin = budget.clone();
}
