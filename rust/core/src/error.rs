//! Decision codes (SPEC §4) and the single error enum of the core.

/// A decision: why a chain or a request was allowed or denied.
///
/// The integer values are part of the wire contract (SPEC §4) and never change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
#[allow(missing_docs)] // each variant is documented by SPEC §4's table, mirrored in `describe`
pub enum Code {
    Ok = 0,
    Malformed = 1,
    UntrustedIssuer = 2,
    BadSignature = 3,
    BrokenLink = 4,
    ScopeWidened = 5,
    BudgetWidened = 6,
    TimeWidened = 7,
    DepthExceeded = 8,
    NotYetValid = 9,
    Expired = 10,
    SessionMismatch = 11,
    Revoked = 12,
    ScopeDenied = 13,
    CostExceedsGrant = 14,
    StaleInvocation = 15,
    Replay = 16,
    BudgetExhausted = 17,
    CostBelowPrice = 18,
}

impl Code {
    /// Every code, in numeric order.
    pub const ALL: [Code; 19] = [
        Code::Ok,
        Code::Malformed,
        Code::UntrustedIssuer,
        Code::BadSignature,
        Code::BrokenLink,
        Code::ScopeWidened,
        Code::BudgetWidened,
        Code::TimeWidened,
        Code::DepthExceeded,
        Code::NotYetValid,
        Code::Expired,
        Code::SessionMismatch,
        Code::Revoked,
        Code::ScopeDenied,
        Code::CostExceedsGrant,
        Code::StaleInvocation,
        Code::Replay,
        Code::BudgetExhausted,
        Code::CostBelowPrice,
    ];

    /// The stable SPEC name, as Python's `hopgate.Code` spells it.
    pub const fn name(self) -> &'static str {
        match self {
            Code::Ok => "OK",
            Code::Malformed => "MALFORMED",
            Code::UntrustedIssuer => "UNTRUSTED_ISSUER",
            Code::BadSignature => "BAD_SIGNATURE",
            Code::BrokenLink => "BROKEN_LINK",
            Code::ScopeWidened => "SCOPE_WIDENED",
            Code::BudgetWidened => "BUDGET_WIDENED",
            Code::TimeWidened => "TIME_WIDENED",
            Code::DepthExceeded => "DEPTH_EXCEEDED",
            Code::NotYetValid => "NOT_YET_VALID",
            Code::Expired => "EXPIRED",
            Code::SessionMismatch => "SESSION_MISMATCH",
            Code::Revoked => "REVOKED",
            Code::ScopeDenied => "SCOPE_DENIED",
            Code::CostExceedsGrant => "COST_EXCEEDS_GRANT",
            Code::StaleInvocation => "STALE_INVOCATION",
            Code::Replay => "REPLAY",
            Code::BudgetExhausted => "BUDGET_EXHAUSTED",
            Code::CostBelowPrice => "COST_BELOW_PRICE",
        }
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Everything that can go wrong in the core. The bindings map each variant to one
/// Python exception class (see `rust/python/src/errors.rs`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Bytes that break SPEC §2. `field` is the wire field, `offset` its byte offset.
    #[error("malformed {field} at offset {offset}: {reason}")]
    Malformed {
        /// The wire field being read.
        field: &'static str,
        /// Byte offset of that field in the input.
        offset: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A builder refused to produce a link or invocation that a verifier would deny
    /// with `code`.
    #[error("{code}: {reason}")]
    Refused {
        /// The decision a verifier would give the refused object.
        code: Code,
        /// A sentence for people.
        reason: String,
    },
    /// An argument of the wrong shape (a key of the wrong length, bad offsets, ...).
    #[error("invalid {what}: {reason}")]
    Input {
        /// The argument.
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A file operation failed (the audit log).
    #[error("{context}: {reason}")]
    Io {
        /// What was being done, and to which file.
        context: String,
        /// The operating system's error number, when there is one.
        errno: Option<i32>,
        /// The operating system's message.
        reason: String,
    },
    /// A durable ledger store failed (SPEC §5.8): unreachable, too slow, or an error.
    /// Nothing of the step it failed took effect.
    #[error("ledger store failed: {reason}")]
    Store {
        /// What failed, and how.
        reason: String,
    },
    /// An audit log that does not verify where it must (see [`crate::audit`]).
    #[error("audit log damaged at {}, offset {offset}: {reason}", match record { Some(i) => format!("record {i}"), None => "the header".to_string() })]
    Audit {
        /// The first bad record, or `None` for the header.
        record: Option<u64>,
        /// Byte offset of that record's frame.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
}

impl Error {
    /// The decision a verifier gives for this error.
    pub fn code(&self) -> Code {
        match self {
            Error::Malformed { .. }
            | Error::Input { .. }
            | Error::Io { .. }
            | Error::Audit { .. }
            | Error::Store { .. } => Code::Malformed,
            Error::Refused { code, .. } => *code,
        }
    }

    pub(crate) fn refused(code: Code, reason: impl Into<String>) -> Self {
        Error::Refused { code, reason: reason.into() }
    }

    pub(crate) fn input(what: &'static str, reason: impl Into<String>) -> Self {
        Error::Input { what, reason: reason.into() }
    }
}

/// The core's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
