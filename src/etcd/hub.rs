//! One etcd watch stream per gateway, shared by every waiter, hold listener
//! and `Watch` of that gateway.
//!
//! A queued request watches two keys (its predecessor and its own entry), so
//! a gateway with thousands of waiters would otherwise open thousands of
//! gRPC streams. Instead each watch is a create request on one shared stream
//! with a watch id chosen here, and the events etcd sends for that id are
//! routed to the subscriber. When the stream breaks (etcd lost), every
//! subscriber is told and the next subscription opens a new stream. A
//! subscriber that lets `--watch-buffer` batches pile up is cut off, as a
//! lagging watcher of the embedded backend is.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
};

use etcd_client::{EventType, WatchOptions, WatchResponse};
use futures::StreamExt;
use tokio::sync::mpsc;

use super::{error::EtcdError, session::Connector};

/// One change of one key, as the backend needs it.
#[derive(Clone, Debug)]
pub struct Change {
    /// Put (created or modified) or deleted.
    pub deleted: bool,
    /// The key.
    pub key: Vec<u8>,
    /// The new value (empty for a delete).
    pub value: Vec<u8>,
    /// The key's create revision (0 for a delete).
    pub create_rev: i64,
    /// The revision of the change.
    pub mod_rev: i64,
}

/// What the hub passes to a subscription.
enum HubMsg {
    /// The watch is in place: every change after this revision follows.
    Created(i64),
    /// A batch of changes in revision order.
    Changes(Vec<Change>),
}

type HubItem = Result<HubMsg, EtcdError>;

enum Command {
    Watch {
        id: i64,
        key: Vec<u8>,
        end: Option<Vec<u8>>,
        tx: mpsc::Sender<HubItem>,
    },
    Cancel(i64),
}

/// The shared watch stream's handle.
pub struct Hub {
    commands: mpsc::UnboundedSender<Command>,
    next_id: AtomicI64,
    buffer: usize,
}

/// Changes of one key or range, from when etcd set the watch up. Dropping
/// it cancels the watch.
///
/// Watches start "now" rather than at a past revision on purpose: etcd
/// serves a watch that starts in the past from a background loop that runs
/// every 100 ms, so each one would add up to 100 ms to a hand-over under
/// load. Callers read the state once [`created`](Self::created) says from
/// which revision on they will hear everything.
pub struct Subscription {
    id: i64,
    rx: mpsc::Receiver<HubItem>,
    commands: mpsc::UnboundedSender<Command>,
    created: Option<i64>,
    early: Vec<Vec<Change>>,
}

impl Subscription {
    /// Waits until the watch is in place; returns the revision after which
    /// every change is delivered.
    pub async fn created(&mut self) -> Result<i64, EtcdError> {
        loop {
            if let Some(rev) = self.created {
                return Ok(rev);
            }
            match self.recv().await? {
                HubMsg::Created(rev) => self.created = Some(rev),
                HubMsg::Changes(c) => self.early.push(c),
            }
        }
    }

    /// The next batch of changes; an error ends the subscription.
    pub async fn next(&mut self) -> Result<Vec<Change>, EtcdError> {
        if !self.early.is_empty() {
            return Ok(self.early.remove(0));
        }
        loop {
            match self.recv().await? {
                HubMsg::Created(rev) => self.created = Some(rev),
                HubMsg::Changes(c) => return Ok(c),
            }
        }
    }

    async fn recv(&mut self) -> HubItem {
        match self.rx.recv().await {
            Some(item) => item,
            None => Err(EtcdError::Lagged),
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Cancel(self.id));
    }
}

impl Hub {
    /// Starts the hub's task; it opens the stream on first use. Each
    /// subscriber may fall `buffer` batches behind before it is cut off.
    pub fn start(connector: Arc<Connector>, buffer: usize) -> Self {
        let (commands, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(connector, rx));
        Self {
            commands,
            next_id: AtomicI64::new(1),
            buffer: buffer.max(1),
        }
    }

    /// Watches `key` (or `[key, end)`) from now on.
    pub fn subscribe(&self, key: Vec<u8>, end: Option<Vec<u8>>) -> Subscription {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(self.buffer);
        if self
            .commands
            .send(Command::Watch {
                id,
                key,
                end,
                tx: tx.clone(),
            })
            .is_err()
        {
            let _ = tx.try_send(Err(EtcdError::WatchLost(
                "the gateway's watch task stopped".into(),
            )));
        }
        Subscription {
            id,
            rx,
            commands: self.commands.clone(),
            created: None,
            early: Vec::new(),
        }
    }
}

type Sender = etcd_client::WatchRequestSender;
type Responses = etcd_client::WatchResponseStream;

async fn run(connector: Arc<Connector>, mut commands: mpsc::UnboundedReceiver<Command>) {
    let mut stream: Option<(Sender, Responses)> = None;
    let mut subs: HashMap<i64, mpsc::Sender<HubItem>> = HashMap::new();
    loop {
        tokio::select! {
            cmd = commands.recv() => {
                let Some(cmd) = cmd else { return };
                match cmd {
                    Command::Watch { id, key, end, tx } => {
                        let mut opts = WatchOptions::new().with_watch_id(id);
                        if let Some(end) = end {
                            opts = opts.with_range(end);
                        }
                        let sent = match &mut stream {
                            Some((sender, _)) => sender.watch(key, Some(opts)).await.map_err(EtcdError::from),
                            None => match open(&connector, key, opts).await {
                                Ok(s) => {
                                    stream = Some(s);
                                    Ok(())
                                }
                                Err(e) => Err(e),
                            },
                        };
                        match sent {
                            Ok(()) => {
                                subs.insert(id, tx);
                            }
                            Err(e) => {
                                                                let _ = tx.try_send(Err(EtcdError::WatchLost(e.to_string())));
                                if stream.is_some() {
                                    fail_all(&mut subs, &e.to_string());
                                    stream = None;
                                }
                                connector.probe();
                            }
                        }
                    }
                    Command::Cancel(id) => {
                        if subs.remove(&id).is_some()
                            && let Some((sender, _)) = &mut stream
                            && sender.cancel(id).await.is_err()
                        {
                            fail_all(&mut subs, "the etcd watch stream closed");
                            stream = None;
                        }
                    }
                }
            }
            msg = next_response(&mut stream) => {
                match msg {
                                        Some(Ok(resp)) => {
                        if let Some(lagging) = dispatch(&mut subs, resp)
                            && let Some((sender, _)) = &mut stream
                            && sender.cancel(lagging).await.is_err()
                        {
                            fail_all(&mut subs, "the etcd watch stream closed");
                            stream = None;
                        }
                    }
                    Some(Err(e)) => {
                        fail_all(&mut subs, &format!("the etcd watch stream failed: {e}"));
                        stream = None;
                        connector.probe();
                    }
                    None => {
                        fail_all(&mut subs, "etcd closed the watch stream");
                        stream = None;
                        connector.probe();
                    }
                }
            }
        }
    }
}

async fn open(
    connector: &Connector,
    key: Vec<u8>,
    opts: WatchOptions,
) -> Result<(Sender, Responses), EtcdError> {
    // Waits while the gateway is still connecting for the first time.
    let session = connector.session().await?;
    let mut client = session.client.watch_client();
    let timeout = connector.timeout();
    let ws = tokio::time::timeout(timeout, client.watch(key, Some(opts)))
        .await
        .map_err(|_| EtcdError::Timeout(timeout))??;
    Ok(ws.split())
}

async fn next_response(
    stream: &mut Option<(Sender, Responses)>,
) -> Option<Result<WatchResponse, etcd_client::Error>> {
    match stream {
        Some((_, responses)) => responses.next().await,
        None => std::future::pending().await,
    }
}

/// Routes one response; returns the id of a subscriber that fell behind
/// and was dropped (its etcd watch is to be cancelled).
fn dispatch(subs: &mut HashMap<i64, mpsc::Sender<HubItem>>, resp: WatchResponse) -> Option<i64> {
    let id = resp.watch_id();
    if resp.canceled() {
        if let Some(tx) = subs.remove(&id) {
            let why = if resp.compact_revision() > 0 {
                format!(
                    "etcd compacted the history this watch needed (revision {})",
                    resp.compact_revision()
                )
            } else if resp.cancel_reason().is_empty() {
                "etcd cancelled the watch".into()
            } else {
                format!("etcd cancelled the watch: {}", resp.cancel_reason())
            };
            let _ = tx.try_send(Err(EtcdError::WatchLost(why)));
        }
        return None;
    }
    if resp.created() {
        let rev = resp.header().map_or(0, |h| h.revision());
        if let Some(tx) = subs.get(&id) {
            let _ = tx.try_send(Ok(HubMsg::Created(rev)));
        }
    }
    if resp.events().is_empty() {
        return None;
    }
    let changes: Vec<Change> = resp
        .events()
        .iter()
        .filter_map(|ev| {
            let kv = ev.kv()?;
            Some(Change {
                deleted: ev.event_type() == EventType::Delete,
                key: kv.key().to_vec(),
                value: kv.value().to_vec(),
                create_rev: kv.create_revision(),
                mod_rev: kv.mod_revision(),
            })
        })
        .collect();
    let tx = subs.get(&id)?;
    match tx.try_send(Ok(HubMsg::Changes(changes))) {
        // A closed receiver means the subscriber is gone and its Cancel is
        // on the way; the Cancel removes it and stops etcd's watcher.
        Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => None,
        Err(mpsc::error::TrySendError::Full(_)) => {
            // Dropping the sender ends the subscription as lagged.
            subs.remove(&id);
            Some(id)
        }
    }
}

fn fail_all(subs: &mut HashMap<i64, mpsc::Sender<HubItem>>, why: &str) {
    for (_, tx) in subs.drain() {
        let _ = tx.try_send(Err(EtcdError::WatchLost(why.to_owned())));
    }
}
