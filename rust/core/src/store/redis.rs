//! The Redis store (SPEC §5.8, layout in §5.9): a Redis server or a Redis Cluster
//! shared by a fleet. Every step is one call of `ledger.lua` on one root, which Redis
//! runs whole and alone; a gate batch is one call per root, all in one pipeline on a
//! single server. Every key of a root carries the hash tag `{root}`, so a cluster keeps
//! a root, and so every step, in one slot.
//!
//! A connection that fails or times out is dropped, never reused: a reply that arrives
//! late must not be read as the answer to the next command. A batch whose reply was
//! lost may have reserved; its reservation ids are remembered and released (settling is
//! idempotent by id) before the next step, or forfeited by their lease.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use redis::{Cmd, ConnectionLike, Script, Value};

use super::{failed, millis, reservation_id, Admission, Held, Local, Settled, Step, Store, StoreKind};
use crate::audit::Settlement;
use crate::ledger::{Account, AccountId};
use crate::{Code, Error, Result};

/// The script of every step.
const LEDGER_LUA: &str = include_str!("ledger.lua");

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(2 * bytes.len()), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn h64(v: u64) -> String {
    format!("{v:016x}")
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn u64_hex(s: &str) -> Option<u64> {
    (s.len() == 16).then(|| u64::from_str_radix(s, 16).ok()).flatten()
}

/// An account as `hg1:{R}:acct` holds it: five u64 in hex.
fn parse_account(v: &str) -> Option<Account> {
    Some(Account {
        cap: u64_hex(v.get(0..16)?)?,
        spent: u64_hex(v.get(16..32)?)?,
        reserved: u64_hex(v.get(32..48)?)?,
        overrun: u64_hex(v.get(48..64)?)?,
    })
}

/// The key prefix of a root: `hg1:{R}:`.
fn prefix(root: &AccountId) -> String {
    format!("hg1:{{{}}}:", hex(root))
}

/// The four keys every step names first.
fn root_keys(root: &AccountId) -> [String; 4] {
    let p = prefix(root);
    [format!("{p}meta"), format!("{p}acct"), format!("{p}res"), format!("{p}lease")]
}

/// Every key of a single server that matches `pattern`.
fn scan(c: &mut redis::Connection, pattern: &str) -> Result<Vec<String>> {
    let mut cmd = redis::cmd("SCAN");
    cmd.cursor_arg(0).arg("MATCH").arg(pattern).arg("COUNT").arg(1000);
    cmd.iter(c).map_err(err)?.collect::<redis::RedisResult<_>>().map_err(err)
}

fn bad_reply(v: &Value) -> Error {
    failed("redis", format!("unexpected reply {v:?}"))
}

/// The admissions of one root in a batch: (index in the batch, admission, reservation id).
type Group<'b, 'a> = Vec<(usize, &'b Admission<'a>, [u8; 16])>;

enum Conn {
    Single(redis::Connection),
    Cluster(Box<redis::cluster::ClusterConnection>),
}

impl Conn {
    fn like(&mut self) -> &mut dyn ConnectionLike {
        match self {
            Conn::Single(c) => c,
            Conn::Cluster(c) => c.as_mut(),
        }
    }
}

enum Client {
    Single(redis::Client),
    Cluster(redis::cluster::ClusterClient),
}

/// The Redis store.
pub struct RedisStore {
    client: Client,
    conn: Mutex<Option<Conn>>,
    closed: AtomicBool,
    script: Script,
    timeout: Duration,
    local: Local,
    /// Reservations a batch may have made whose reply was lost: (root, id).
    orphans: Mutex<Vec<(AccountId, [u8; 16])>>,
    /// Replicas that must acknowledge every admission (`?replicas=N`), 0 for none.
    replicas: u32,
}

/// `url` without hopgate's own query parameter `replicas=N`, and N (0 without it).
fn replicas_param(url: &str) -> Result<(String, u32)> {
    let Some((base, query)) = url.split_once('?') else { return Ok((url.to_string(), 0)) };
    let mut replicas = 0;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("replicas", n)) => {
                replicas = n
                    .parse::<u32>()
                    .map_err(|_| Error::input("url", format!("replicas must be a count of replicas, got {n:?}")))?;
            }
            _ => rest.push(pair),
        }
    }
    let url = if rest.is_empty() { base.to_string() } else { format!("{base}?{}", rest.join("&")) };
    Ok((url, replicas))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn err(e: redis::RedisError) -> Error {
    failed("redis", e)
}

impl RedisStore {
    /// A store on the server (or, with `cluster`, the cluster) at `url`; connects at
    /// once, so that a wrong address fails here.
    pub fn open(url: &str, cluster: bool, lease: Duration, timeout: Duration) -> Result<Self> {
        let (url, replicas) = replicas_param(url)?;
        let url = url.as_str();
        if cluster && replicas > 0 {
            return Err(Error::input(
                "url",
                "replicas= is offered for a single Redis server (redis://), not a cluster",
            ));
        }
        let client = if cluster {
            let c = redis::cluster::ClusterClient::builder(vec![url])
                .connection_timeout(timeout)
                .response_timeout(timeout)
                // A step is sent once: a retried script that timed out could run twice.
                .retries(0)
                .build()
                .map_err(|e| Error::input("url", e.to_string()))?;
            Client::Cluster(c)
        } else {
            Client::Single(redis::Client::open(url).map_err(|e| Error::input("url", e.to_string()))?)
        };
        let store = RedisStore {
            client,
            conn: Mutex::new(None),
            closed: AtomicBool::new(false),
            script: Script::new(LEDGER_LUA),
            timeout,
            local: Local::new(lease),
            orphans: Mutex::new(Vec::new()),
            replicas,
        };
        store.run(|_, _| Ok(()))?;
        Ok(store)
    }

    fn connect(&self) -> Result<Conn> {
        match &self.client {
            Client::Single(c) => {
                let con = c.get_connection_with_timeout(self.timeout).map_err(err)?;
                con.set_read_timeout(Some(self.timeout)).map_err(err)?;
                con.set_write_timeout(Some(self.timeout)).map_err(err)?;
                Ok(Conn::Single(con))
            }
            Client::Cluster(c) => Ok(Conn::Cluster(Box::new(c.get_connection().map_err(err)?))),
        }
    }

    /// Runs `body` on the connection (made first if there is none), after releasing
    /// the orphans of a lost batch. A failure drops the connection.
    fn run<T>(&self, body: impl FnOnce(&Self, &mut Conn) -> Result<T>) -> Result<T> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(failed("redis", "the ledger was closed"));
        }
        let mut guard = lock(&self.conn);
        if guard.is_none() {
            *guard = Some(self.connect()?);
        }
        let conn = guard.as_mut().expect("connected above");
        let out = self.release_orphans(conn).and_then(|()| body(self, conn));
        if out.is_err() {
            *guard = None;
        }
        out
    }

    fn release_orphans(&self, conn: &mut Conn) -> Result<()> {
        let orphans = std::mem::take(&mut *lock(&self.orphans));
        for (i, (root, id)) in orphans.iter().enumerate() {
            if let Err(e) = self.settle_on(conn, root, id, Settlement::Release, 0) {
                lock(&self.orphans).extend_from_slice(&orphans[i..]);
                return Err(e);
            }
        }
        Ok(())
    }

    /// One step: `EVALSHA` (loading the script after `NOSCRIPT`).
    fn call(&self, conn: &mut Conn, keys: &[String], args: &[String]) -> Result<Value> {
        let mut inv = self.script.prepare_invoke();
        for k in keys {
            inv.key(k);
        }
        for a in args {
            inv.arg(a);
        }
        inv.invoke(conn.like()).map_err(err)
    }

    fn settle_on(
        &self,
        conn: &mut Conn,
        root: &AccountId,
        id: &[u8; 16],
        kind: Settlement,
        charged: u64,
    ) -> Result<Settled> {
        let rid = hex(id);
        let mut keys = root_keys(root).to_vec();
        keys.push(format!("{}done:{rid}", prefix(root)));
        let args = ["settle".to_string(), rid, Step::letter(kind).to_string(), h64(charged)];
        match self.call(conn, &keys, &args)? {
            Value::BulkString(b) if b == b"now" => Ok(Settled::Now),
            Value::BulkString(b) => Ok(Step::after(std::str::from_utf8(&b).ok().filter(|s| !s.is_empty()))),
            Value::SimpleString(s) if s == "now" => Ok(Settled::Now),
            Value::SimpleString(s) => Ok(Step::after(Some(s.as_str()).filter(|s| !s.is_empty()))),
            v => Err(bad_reply(&v)),
        }
    }

    /// The script call that admits `group` (requests of one root, in order).
    fn admit_call(
        &self,
        now: u64,
        root: &AccountId,
        group: &[(usize, &Admission<'_>, [u8; 16])],
    ) -> (Vec<String>, Vec<String>) {
        let p = prefix(root);
        let mut keys = root_keys(root).to_vec();
        let mut args = vec![
            "admit".to_string(),
            h64(now),
            h64(self.replay_window()),
            self.local.lease_ms.to_string(),
            group.len().to_string(),
        ];
        // The accounts of the group, each (id, cap, expires) sent once: the requests of one
        // root mostly share their paths, and name their accounts by place in this table.
        let mut table: HashMap<(&AccountId, u64, u64), usize> = HashMap::new();
        let mut accounts: Vec<String> = Vec::new();
        let mut requests: Vec<String> = Vec::new();
        for (_, a, rid) in group {
            keys.push(format!("{p}n:{}", hex(a.nonce)));
            requests.extend([h64(a.timestamp), h64(a.amount), hex(rid), a.path.len().to_string()]);
            for (i, (id, cap)) in a.path.iter().enumerate() {
                let expires = a.expires.get(i).copied().unwrap_or(crate::ledger::NEVER);
                let place = *table.entry((id, *cap, expires)).or_insert_with(|| {
                    accounts.extend([hex(id), h64(*cap), h64(expires)]);
                    accounts.len() / 3
                });
                requests.push(place.to_string());
            }
        }
        args.push((accounts.len() / 3).to_string());
        args.extend(accounts);
        args.extend(requests);
        (keys, args)
    }

    /// Sends the calls of a batch: one pipeline on a single server (commands that met
    /// `NOSCRIPT` are sent again after loading the script; they did not run), one call
    /// after another on a cluster. With `replicas`, the pipeline ends with `WAIT`, and
    /// fewer acknowledgements than asked fail the call (its reservations are released
    /// by id, like a lost reply's).
    fn send(&self, conn: &mut Conn, calls: &[(Vec<String>, Vec<String>)]) -> Result<Vec<Value>> {
        let cmd = |(keys, args): &(Vec<String>, Vec<String>)| {
            let mut c = Cmd::new();
            c.arg("EVALSHA").arg(self.script.get_hash()).arg(keys.len()).arg(keys).arg(args);
            c
        };
        match conn {
            Conn::Cluster(_) => calls.iter().map(|(k, a)| self.call(conn, k, a)).collect(),
            Conn::Single(c) => {
                let mut pipe = redis::pipe();
                pipe.ignore_errors();
                for call in calls {
                    pipe.add_command(cmd(call));
                }
                let wait = || {
                    let mut w = Cmd::new();
                    // Half the timeout, so that the answer comes before the socket gives up.
                    w.arg("WAIT").arg(self.replicas).arg((millis(self.timeout) / 2).max(1));
                    w
                };
                if self.replicas > 0 {
                    pipe.add_command(wait());
                }
                let mut out: Vec<Value> = pipe.query(c).map_err(err)?;
                let mut acknowledged = if self.replicas > 0 { out.pop() } else { None };
                let missing = |v: &Value| matches!(v, Value::ServerError(e) if e.code() == "NOSCRIPT");
                if out.iter().any(missing) {
                    self.script.load(c).map_err(err)?;
                    for (i, call) in calls.iter().enumerate() {
                        if missing(&out[i]) {
                            out[i] = cmd(call).query(c).map_err(err)?;
                        }
                    }
                    if self.replicas > 0 {
                        acknowledged = Some(wait().query(c).map_err(err)?);
                    }
                }
                match acknowledged {
                    None => {}
                    Some(Value::Int(n)) if n >= i64::from(self.replicas) => {}
                    Some(v) => {
                        return Err(failed(
                            "redis",
                            format!(
                                "WAIT: {v:?} of the {} replicas asked acknowledged the step in time",
                                self.replicas
                            ),
                        ))
                    }
                }
                Ok(out)
            }
        }
    }
}

impl Store for RedisStore {
    fn kind(&self) -> StoreKind {
        match self.client {
            Client::Single(_) => StoreKind::Redis,
            Client::Cluster(_) => StoreKind::RedisCluster,
        }
    }

    fn local(&self) -> Option<&Local> {
        Some(&self.local)
    }

    fn admit(&self, now: u64, batch: &[Admission<'_>]) -> Result<Vec<std::result::Result<Held, Code>>> {
        let mut groups: BTreeMap<AccountId, Group<'_, '_>> = BTreeMap::new();
        for (i, a) in batch.iter().enumerate() {
            groups.entry(a.path[0].0).or_default().push((i, a, reservation_id()));
        }
        let calls: Vec<(Vec<String>, Vec<String>)> =
            groups.iter().map(|(root, group)| self.admit_call(now, root, group)).collect();
        let replies = self.run(|s, conn| {
            s.send(conn, &calls).inspect_err(|_| {
                // What a lost reply may have reserved is released by id later.
                let mut orphans = lock(&s.orphans);
                orphans.extend(groups.iter().flat_map(|(root, g)| g.iter().map(move |(_, _, rid)| (*root, *rid))));
            })
        })?;
        let mut out: Vec<std::result::Result<Held, Code>> =
            (0..batch.len()).map(|_| Err(Code::BudgetExhausted)).collect();
        let mut failure = None;
        for (group, reply) in groups.values().zip(replies) {
            let codes = match reply {
                Value::Array(codes) if codes.len() == group.len() => codes,
                v => {
                    // A script error: whatever it did not finish it did not do; release
                    // what the other roots reserved, below, and fail the call.
                    failure.get_or_insert_with(|| bad_reply(&v));
                    continue;
                }
            };
            for ((i, a, rid), code) in group.iter().zip(codes) {
                out[*i] = match code {
                    Value::Int(0) => {
                        Ok(Held { id: *rid, path: a.path.iter().map(|(id, _)| *id).collect(), amount: a.amount })
                    }
                    Value::Int(16) => Err(Code::Replay),
                    Value::Int(17) => Err(Code::BudgetExhausted),
                    v => {
                        failure.get_or_insert_with(|| bad_reply(&v));
                        Err(Code::BudgetExhausted)
                    }
                };
            }
        }
        if let Some(e) = failure {
            let mut orphans = lock(&self.orphans);
            for held in out.into_iter().flatten() {
                orphans.push((held.path[0], held.id));
            }
            return Err(e);
        }
        Ok(out)
    }

    fn reserve(&self, path: &[(AccountId, u64)], amount: u64) -> Result<Held> {
        let root = path[0].0;
        let rid = reservation_id();
        let mut args = vec![
            "reserve".to_string(),
            h64(amount),
            hex(&rid),
            self.local.lease_ms.to_string(),
            path.len().to_string(),
        ];
        for (id, cap) in path {
            args.extend([hex(id), h64(*cap)]);
        }
        let calls = [(root_keys(&root).to_vec(), args)];
        let reply = self.run(|s, conn| {
            s.send(conn, &calls)
                .inspect_err(|_| lock(&s.orphans).push((root, rid)))?
                .pop()
                .ok_or_else(|| failed("redis", "no reply"))
        })?;
        match reply {
            Value::Int(0) => Ok(Held { id: rid, path: path.iter().map(|(id, _)| *id).collect(), amount }),
            Value::Int(17) => {
                Err(Error::refused(Code::BudgetExhausted, "an account on the path has no room for the amount"))
            }
            v => Err(bad_reply(&v)),
        }
    }

    fn settle(&self, held: &Held, kind: Settlement, charged: u64) -> Result<Settled> {
        // Idempotent by id: a reply lost on the way back is retried once on a new
        // connection without charging twice.
        let attempt = || self.run(|s, conn| s.settle_on(conn, &held.path[0], &held.id, kind, charged));
        attempt().or_else(|_| attempt())
    }

    fn seen(&self, root: &AccountId, nonce: &[u8; 16], timestamp: u64, now: u64) -> Result<bool> {
        let mut keys = root_keys(root).to_vec();
        keys.push(format!("{}n:{}", prefix(root), hex(nonce)));
        let args = ["seen".to_string(), h64(now), h64(self.replay_window()), h64(timestamp)];
        match self.run(|s, conn| s.call(conn, &keys, &args))? {
            Value::Int(n) => Ok(n != 0),
            v => Err(bad_reply(&v)),
        }
    }

    fn account(&self, root: Option<&AccountId>, id: &AccountId) -> Result<Option<Account>> {
        let root = root.ok_or_else(|| {
            Error::input("root", "a Redis ledger keeps accounts under their root: pass the path's first account id")
        })?;
        let key = format!("{}acct", prefix(root));
        let v: Option<String> =
            self.run(|_, conn| redis::cmd("HGET").arg(&key).arg(hex(id)).query(conn.like()).map_err(err))?;
        v.map(|v| parse_account(&v).ok_or_else(|| failed("redis", format!("{key} holds a damaged account"))))
            .transpose()
    }

    fn accounts(&self) -> Result<Vec<(AccountId, Account)>> {
        self.run(|_, conn| {
            let Conn::Single(c) = conn else {
                return Err(Error::input(
                    "ledger",
                    "listing every account of a Redis Cluster is not offered; ask account(id, root=...)",
                ));
            };
            let keys = scan(c, "hg1:{*}:acct")?;
            let mut out = Vec::new();
            for key in keys {
                let fields: Vec<(String, String)> = redis::cmd("HGETALL").arg(&key).query(c).map_err(err)?;
                for (id, v) in fields {
                    let damaged = || failed("redis", format!("{key} holds a damaged account"));
                    out.push((unhex::<32>(&id).ok_or_else(damaged)?, parse_account(&v).ok_or_else(damaged)?));
                }
            }
            Ok(out)
        })
    }

    fn nonces_len(&self, _now: u64) -> Result<usize> {
        self.run(|_, conn| {
            let Conn::Single(c) = conn else {
                return Err(Error::input("ledger", "counting the nonces of a Redis Cluster is not offered"));
            };
            Ok(scan(c, "hg1:{*}:n:*")?.len())
        })
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        lock(&self.conn).take();
    }
}
