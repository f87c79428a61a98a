//! One application: a client of geostore in one site that runs a random mix, from its own seed, of every
//! KV operation, causal reads at other sites, and lock-protected read-modify-writes with fenced writes
//! (acquire, read after the previous holder's note, sometimes a keep-alive, sometimes a pause past the
//! lease, write under the fencing token, release with a note or let the lease run out).

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;
use std::time::Duration;

use geostore_client::{Client, ConnectOptions, Outcome as ClientOutcome, Value, Wait, pb};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::env::{NODE_PORT, dialer};
use crate::history::{Call, Op, Outcome, Shared};
use crate::plan::{SITES, node_host};

/// Lease length of the workload's locks.
pub const LOCK_TTL: Duration = Duration::from_millis(1500);
/// Locks the applications contend for.
pub const LOCKS: usize = 2;

pub fn guarded_key(lock: &str) -> String {
    format!("guarded/{lock}")
}

pub fn now_ms() -> u64 {
    u64::try_from(turmoil::sim_elapsed().unwrap_or_default().as_millis()).unwrap_or(u64::MAX)
}

/// Every key the applications touched, for the convergence check.
pub type Keys = Rc<RefCell<BTreeSet<String>>>;

pub struct App {
    pub process: usize,
    pub site: usize,
    pub seed: u64,
    pub until: Duration,
    pub recorder: Shared,
    pub keys: Keys,
    /// Applications that have finished.
    pub done: Rc<RefCell<usize>>,
}

struct State {
    app: App,
    rng: StdRng,
    clients: Vec<Option<Client>>,
    counter: u64,
    connections: u64,
    /// Own register keys: the last acknowledged write's value and causal token.
    last_acked: Vec<Option<(String, pb::CausalToken)>>,
    /// Set members this application added (acknowledged), for removes.
    added: Vec<(String, String)>,
}

pub async fn run(app: App) -> turmoil::Result {
    let rng = StdRng::seed_from_u64(app.seed);
    let mut state = State {
        rng,
        clients: vec![None; SITES],
        counter: 0,
        connections: 0,
        last_acked: vec![None; 4],
        added: vec![],
        app,
    };
    while turmoil::sim_elapsed().unwrap_or_default() < state.app.until {
        let pick = state.rng.random_range(0..100);
        match pick {
            0..18 => state.put_own().await,
            18..24 => state.put_shared().await,
            24..27 => state.delete_own().await,
            27..37 => state.increment().await,
            37..45 => state.set_add().await,
            45..49 => state.set_remove().await,
            49..53 => state.put_ttl().await,
            53..61 => state.put_once().await,
            61..68 => state.read_own().await,
            68..76 => state.causal_read().await,
            _ => state.lock_cycle().await,
        }
        let pause = state.rng.random_range(5..60);
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    *state.app.done.borrow_mut() += 1;
    Ok(())
}

fn outcome_of(error: &geostore_client::Error) -> Outcome {
    match error.outcome {
        ClientOutcome::Failed => Outcome::Fail,
        ClientOutcome::Unknown => Outcome::Info,
    }
}

fn register(found: Option<geostore_client::Found>) -> Option<String> {
    match found.map(|f| f.value) {
        Some(Value::Register(bytes)) => Some(String::from_utf8_lossy(&bytes).into_owned()),
        Some(other) => Some(format!("<{}>", other.type_name())),
        None => None,
    }
}

impl State {
    async fn client(&mut self, site: usize) -> Result<Client, geostore_client::Error> {
        if let Some(client) = &self.clients[site] {
            return Ok(client.clone());
        }
        let endpoint = format!("http://{}:{NODE_PORT}", node_host(site));
        // Request ids are (client id, counter from 1): every connection needs its own client id, or a
        // retried id would be answered with an earlier request's outcome.
        self.connections += 1;
        let client_id = format!("app{}-dc{site}-{}", self.app.process, self.connections);
        let options = ConnectOptions { dialer: dialer(), client_id: Some(client_id) };
        let client = Client::connect_with(&[endpoint], options).await?;
        self.clients[site] = Some(client.clone());
        Ok(client)
    }

    fn unique(&mut self) -> String {
        self.counter += 1;
        format!("a{}-{}", self.app.process, self.counter)
    }

    fn touch(&self, key: &str) {
        self.app.keys.borrow_mut().insert(key.to_string());
    }

    /// Makes one call at `site` and records it; returns its result, if it succeeded.
    async fn call<T, F, Fut>(&mut self, site: usize, call: Call, f: F) -> Option<T>
    where
        F: FnOnce(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, geostore_client::Error>>,
    {
        let invoked_ms = now_ms();
        let result = match self.client(site).await {
            Ok(client) => f(client).await,
            Err(error) => Err(error),
        };
        match result {
            Ok(value) => {
                self.record(call, invoked_ms, Outcome::Ok, None, site);
                Some(value)
            }
            Err(error) => {
                if error.code == tonic::Code::Unavailable {
                    // Connect again next time (the node may have restarted).
                    self.clients[site] = None;
                }
                self.record(call, invoked_ms, outcome_of(&error), Some(&error), site);
                None
            }
        }
    }

    /// Records a call made at `site`, completed now.
    fn record(
        &mut self,
        call: Call,
        invoked_ms: u64,
        outcome: Outcome,
        error: Option<&geostore_client::Error>,
        site: usize,
    ) {
        let op = Op {
            process: self.app.process,
            site,
            call,
            invoked_ms,
            completed_ms: Some(now_ms()),
            outcome,
            error: error.map(|error| error.message.clone()).unwrap_or_default(),
            reason: error.and_then(|error| error.reason.clone()),
        };
        self.app.recorder.borrow_mut().record(op);
    }

    fn own_key(&self, slot: usize) -> String {
        format!("own/a{}/{slot}", self.app.process)
    }

    async fn put_own(&mut self) {
        let slot = self.rng.random_range(0..self.last_acked.len());
        let key = self.own_key(slot);
        let value = self.unique();
        self.touch(&key);
        let call = Call::Put { key: key.clone(), value: value.clone() };
        let (k, v) = (key.clone(), value.clone());
        let ack = self.call(self.app.site, call, |c| async move { c.put(k, v, None).await }).await;
        if let Some(ack) = ack {
            self.last_acked[slot] = ack.token.map(|token| (value, token));
        }
    }

    /// A key written once and never again (an event, an upload): if a site misses its change record, only
    /// anti-entropy can bring it.
    async fn put_once(&mut self) {
        let value = self.unique();
        let key = format!("once/{value}");
        self.touch(&key);
        let (k, v) = (key.clone(), value.clone());
        self.call(self.app.site, Call::Put { key, value }, |c| async move { c.put(k, v, None).await }).await;
    }

    async fn put_shared(&mut self) {
        let key = format!("shared/{}", self.rng.random_range(0..3));
        let value = self.unique();
        self.touch(&key);
        let (k, v) = (key.clone(), value.clone());
        self.call(self.app.site, Call::Put { key, value }, |c| async move { c.put(k, v, None).await }).await;
    }

    async fn delete_own(&mut self) {
        let slot = self.rng.random_range(0..self.last_acked.len());
        let key = self.own_key(slot);
        self.touch(&key);
        let k = key.clone();
        let ack = self.call(self.app.site, Call::Delete { key }, |c| async move { c.delete(k).await }).await;
        if ack.is_some() {
            self.last_acked[slot] = None;
        }
    }

    async fn increment(&mut self) {
        let key = format!("counter/{}", self.rng.random_range(0..2));
        let delta = self.rng.random_range(1..=5);
        self.touch(&key);
        let k = key.clone();
        self.call(self.app.site, Call::Increment { key, delta }, |c| async move { c.increment(k, delta).await }).await;
    }

    async fn set_add(&mut self) {
        let key = format!("set/{}", self.rng.random_range(0..2));
        let member = self.unique();
        self.touch(&key);
        let (k, m) = (key.clone(), member.clone());
        let call = Call::SetAdd { key: key.clone(), member: member.clone() };
        let ack = self.call(self.app.site, call, |c| async move { c.set_add(k, vec![m.into_bytes()]).await }).await;
        if ack.is_some() {
            self.added.push((key, member));
        }
    }

    async fn set_remove(&mut self) {
        if self.added.is_empty() {
            return;
        }
        let (key, member) = self.added.swap_remove(self.rng.random_range(0..self.added.len()));
        let (k, m) = (key.clone(), member.clone());
        let call = Call::SetRemove { key, member };
        self.call(self.app.site, call, |c| async move { c.set_remove(k, vec![m.into_bytes()]).await }).await;
    }

    async fn put_ttl(&mut self) {
        let key = format!("cache/a{}/{}", self.app.process, self.rng.random_range(0..2));
        let value = self.unique();
        let ttl_ms = self.rng.random_range(500..5_000);
        self.touch(&key);
        let (k, v) = (key.clone(), value.clone());
        let call = Call::PutTtl { key, value, ttl_ms };
        self.call(self.app.site, call, |c| async move { c.put(k, v, Some(Duration::from_millis(ttl_ms))).await }).await;
    }

    async fn read_own(&mut self) {
        let slot = self.rng.random_range(0..self.last_acked.len());
        let key = self.own_key(slot);
        let invoked_ms = now_ms();
        let site = self.app.site;
        let result = match self.client(site).await {
            Ok(client) => client.get(key.clone()).await,
            Err(error) => Err(error),
        };
        match result {
            Ok(found) => self.record(Call::Read { key, read: register(found) }, invoked_ms, Outcome::Ok, None, site),
            Err(error) => self.record(Call::Read { key, read: None }, invoked_ms, Outcome::Fail, Some(&error), site),
        }
    }

    async fn causal_read(&mut self) {
        let slots: Vec<usize> = (0..self.last_acked.len()).filter(|s| self.last_acked[*s].is_some()).collect();
        if slots.is_empty() {
            return;
        }
        let slot = slots[self.rng.random_range(0..slots.len())];
        let Some((expected, token)) = self.last_acked[slot].clone() else { return };
        let key = self.own_key(slot);
        let site = (self.app.site + self.rng.random_range(1..SITES)) % SITES;
        let invoked_ms = now_ms();
        let result = match self.client(site).await {
            Ok(client) => client.get_after(key.clone(), token, Some(Duration::from_secs(2))).await,
            Err(error) => Err(error),
        };
        match result {
            Ok(found) => {
                let writer_site = found.as_ref().and_then(|found| found.last_write_site.clone());
                let read = register(found);
                let call = Call::CausalRead { key, site, expected, read, writer_site, home: self.app.site };
                self.record(call, invoked_ms, Outcome::Ok, None, site);
            }
            Err(error) => {
                if error.code == tonic::Code::Unavailable {
                    self.clients[site] = None;
                }
                let home = self.app.site;
                let call = Call::CausalRead { key, site, expected, read: None, writer_site: None, home };
                self.record(call, invoked_ms, Outcome::Fail, Some(&error), site);
            }
        }
    }

    /// Acquire, read what the previous holder wrote, maybe stall, write under the fencing token, release
    /// (with the causal token of the write as the note) or let the lease run out.
    async fn lock_cycle(&mut self) {
        let lock = format!("lock/{}", self.rng.random_range(0..LOCKS));
        let site = self.app.site;
        let label = format!("app{}", self.app.process);
        let (l, lab) = (lock.clone(), label.clone());
        let grant = self
            .call(site, Call::Acquire { lock: lock.clone(), token: None }, |c| async move {
                c.acquire(&l, LOCK_TTL, Wait::Up(Duration::from_secs(2)), &lab).await
            })
            .await;
        let Some(grant) = grant else { return };
        // The recorded call has no token yet: note it in a completed copy.
        {
            let mut recorder = self.app.recorder.borrow_mut();
            if let Some(op) = recorder.ops.last_mut() {
                op.call = Call::Acquire { lock: lock.clone(), token: Some(grant.token) };
            }
        }
        let token = grant.token;
        let key = guarded_key(&lock);
        self.touch(&key);
        // Read after the previous holder's last write, wherever it was made.
        let invoked_ms = now_ms();
        let client = match self.client(site).await {
            Ok(client) => client,
            Err(_) => return,
        };
        let read = match grant.previous_after.clone() {
            Some(after) => client.get_after(key.clone(), after, Some(Duration::from_secs(2))).await,
            None => client.get(key.clone()).await,
        };
        let previous = match read {
            Ok(found) => {
                let value = register(found);
                self.record(Call::Read { key: key.clone(), read: value.clone() }, invoked_ms, Outcome::Ok, None, site);
                value.unwrap_or_default()
            }
            Err(error) => {
                self.record(Call::Read { key: key.clone(), read: None }, invoked_ms, Outcome::Fail, Some(&error), site);
                // Could not read the predecessor's work: hand its token on and stop.
                let after = grant.previous_after.clone();
                self.release(&lock, token, after).await;
                return;
            }
        };
        if self.rng.random_range(0..4) == 0 {
            let l = lock.clone();
            self.call(site, Call::Renew { lock: lock.clone(), token }, |c| async move {
                c.keep_alive_once(&l, token).await
            })
            .await;
        }
        if self.rng.random_range(0..6) == 0 {
            // A holder that stalls (a long GC pause, a stopped VM), often past its lease.
            let stall = self.rng.random_range(500..4_000);
            self.app.recorder.borrow_mut().note(
                now_ms(),
                &format!("app{}", self.app.process),
                format!("stalls {stall} ms holding {lock} token {token}"),
            );
            tokio::time::sleep(Duration::from_millis(stall)).await;
        }
        let element = format!("{}@{token}", label);
        let value = if previous.is_empty() { element.clone() } else { format!("{previous},{element}") };
        let fenced = client.with_fence(&lock, token);
        let (k, v) = (key.clone(), value.clone());
        let call = Call::GuardedWrite { lock: lock.clone(), token, element, value };
        let ack = self.call(site, call, |_| async move { fenced.put(k, v, None).await }).await;
        if self.rng.random_range(0..5) == 0 {
            return; // the lease runs out
        }
        let after = match ack {
            Some(ack) => ack.token,
            None => grant.previous_after.clone(),
        };
        self.release(&lock, token, after).await;
    }

    /// Releases `lock`, handing `after` (the causal token of the last write made under it) to the next
    /// holder as a structured token.
    async fn release(&mut self, lock: &str, token: u64, after: Option<pb::CausalToken>) {
        let l = lock.to_string();
        self.call(self.app.site, Call::Release { lock: lock.to_string(), token }, |c| async move {
            match after {
                Some(after) => c.release_after(&l, token, after).await,
                None => c.release(&l, token).await,
            }
        })
        .await;
    }
}
