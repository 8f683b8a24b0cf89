//! One client connection: read → node → journal → flush.
//!
//! Each connection reads what the socket has, answers every complete line in order into one buffer,
//! writes it, and only then reads again — so replies never overtake each other, pipelined lines are
//! answered with one write, and a client that never reads stops being read from instead of growing
//! the server's memory.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use herd_proto::{CodecError, HerdCodec, Timestamp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Decoder;
use tokio_util::sync::WaitForCancellationFuture;
use tracing::{debug, info, warn};

use crate::driver::gate::AdmissionSlot;
use crate::driver::peers::{self, is_hello, Hello};
use crate::driver::shared::Shared;
use crate::log::{show, LogBuf, HAND_OVER_AT};
use crate::node::limits::Limit;
use crate::node::Step;
use crate::places::Answer;
use crate::store::NotDurable;

/// Flush the reply buffer once it holds this much, even mid-batch.
const FLUSH_AT: usize = 64 * 1024;
/// Most lines decoded and answered per batch.
const BATCH_LINES: usize = 256;

/// Serves one admitted client connection until it ends, or hands it to [`peers::accept`] when its
/// first line is a neighbour's greeting.
pub(super) async fn handle(
    shared: Arc<Shared>,
    stream: TcpStream,
    addr: SocketAddr,
    ticket: AdmissionSlot,
) {
    let id = shared.conn_id();
    let _ = stream.set_nodelay(true);
    info!(conn = id, peer = %addr, "connection opened");
    shared.stats.connection(true);
    let mut c = Connection::new(&shared, stream, id, addr);
    let served = c.serve().await;
    shared.stats.connection(false);
    // The lines of a batch that an error cut short are still logged.
    shared.spec.log.submit(&mut c.log).await;
    let mut stream = match served {
        Ok(Some(hello)) => {
            let (stream, buf) = c.into_parts();
            let _ticket = ticket.into_peer();
            peers::accept(shared.clone(), stream, id, addr, hello, buf).await;
            return;
        }
        Ok(None) => c.into_parts().0,
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
            shared.gate.refused(Limit::LineTimeout, addr);
            info!(conn = id, peer = %addr, refusal = %Limit::LineTimeout,
                "replies not taken within the line time-out; closing");
            c.into_parts().0
        }
        Err(e) => {
            debug!(conn = id, cause = %e, "connection error");
            c.into_parts().0
        }
    };
    // The slot is free before the client sees the close, so it can connect again at once.
    drop(ticket);
    let _ = stream.shutdown().await;
    info!(conn = id, "connection closed");
}

/// What [`Connection::read_batch`] found.
enum Batch {
    /// Complete lines to answer are in `lines` (and perhaps a line over the limit in `too_long`).
    Lines,
    /// The first line was a peer's greeting: the connection is a peer link.
    Peer(Hello),
    /// End of stream, the idle time-out or shutdown: nothing more to answer.
    End,
}

/// A client connection: its stream and the buffers it owns — bytes read and not yet decoded, the
/// batch of lines being answered, replies not yet written and log lines not yet handed over.
///
/// It reads what the socket has ([`read_batch`](Self::read_batch)), answers every complete line in
/// order into the reply and log buffers ([`answer_batch`](Self::answer_batch)), hands the log buffer
/// over and writes the replies ([`flush`](Self::flush)), and only then reads again.
struct Connection<'a> {
    shared: &'a Shared,
    stream: TcpStream,
    id: u64,
    /// The client's address, for the refusals' log lines.
    addr: SocketAddr,
    codec: HerdCodec,
    /// Bytes read and not yet decoded; grows on first use, so an idle connection costs little.
    buf: BytesMut,
    /// The batch being answered.
    lines: Vec<Bytes>,
    /// A line over the limit ended the batch: it is answered, then the connection closes.
    too_long: Option<Bytes>,
    /// Replies not yet written.
    out: Vec<u8>,
    /// Log lines not yet handed to the log's writer.
    log: LogBuf,
    /// Lines in and out are logged.
    logging: bool,
    /// No line has been read yet (the first one may be a peer's greeting).
    /// The store position the records acknowledged by replies in `out` (not yet written) end at.
    journal_end: Option<u64>,
    first: bool,
    eof: bool,
    /// It has sent something: reads go in 4 KiB steps.
    active: bool,
    // Made once per connection: a fresh `cancelled()` or `timeout()` per read costs a waiter
    // registration or a timer insertion on every request.
    cancelled: Pin<Box<WaitForCancellationFuture<'a>>>,
    /// One timer for both time-outs: the line time-out while a line is partly read (from the read
    /// that brought its first byte), the idle time-out otherwise. It is moved earlier only when a
    /// partial line starts before it would fire, and re-armed when it fires early, so a busy
    /// connection does not pay a timer update per read.
    idle: Pin<Box<tokio::time::Sleep>>,
    /// When the timer is set to fire.
    timer_at: tokio::time::Instant,
    last_read: tokio::time::Instant,
    /// When the first byte of the partial line in `buf` arrived.
    partial_since: Option<tokio::time::Instant>,
    /// A line ended since the last read.
    line_ended: bool,
    /// Limit refusals already logged on this connection (one log line per kind, not per line).
    logged: Vec<Limit>,
    /// What this connection may still spend on upstream Places calls (made at its first WHATSAT).
    budget: Option<crate::places::ClientBudget>,
    /// An `OVER_QUERY_LIMIT` was logged on this connection (once per connection).
    budget_logged: bool,
}

impl<'a> Connection<'a> {
    fn new(shared: &'a Shared, stream: TcpStream, id: u64, addr: SocketAddr) -> Self {
        let spec = &shared.spec;
        let now = tokio::time::Instant::now();
        let timer_at = now + spec.limits.idle_timeout;
        Connection {
            shared,
            stream,
            id,
            addr,
            codec: HerdCodec::new_with_max_length(spec.limits.max_line),
            buf: BytesMut::new(),
            lines: Vec::new(),
            too_long: None,
            out: Vec::new(),
            log: spec.log.buffer(id, None),
            logging: spec.log_lines && spec.log.is_on(),
            journal_end: None,
            first: true,
            eof: false,
            active: false,
            cancelled: Box::pin(shared.life.shutdown.cancelled()),
            idle: Box::pin(tokio::time::sleep_until(timer_at)),
            timer_at,
            last_read: now,
            partial_since: None,
            line_ended: false,
            logged: Vec::new(),
            budget: None,
            budget_logged: false,
        }
    }

    /// The stream and the bytes read but not decoded (a peer link's first records).
    fn into_parts(self) -> (TcpStream, BytesMut) {
        (self.stream, self.buf)
    }

    /// Serves client lines until EOF, the idle time-out, an over-long line or shutdown. Returns the
    /// greeting if the connection turns out to be a peer link.
    async fn serve(&mut self) -> std::io::Result<Option<Hello>> {
        loop {
            match self.read_batch().await? {
                Batch::Lines => {}
                Batch::Peer(hello) => return Ok(Some(hello)),
                Batch::End => return Ok(None),
            }
            let closing = self.too_long.is_some();
            self.answer_batch().await?;
            self.flush().await?;
            if closing {
                return Ok(None);
            }
        }
    }

    /// Decodes up to [`BATCH_LINES`] complete lines into `lines`, reading from the socket only when
    /// none is buffered.
    async fn read_batch(&mut self) -> std::io::Result<Batch> {
        loop {
            self.lines.clear();
            while self.lines.len() < BATCH_LINES {
                let next = if self.eof {
                    self.codec.decode_eof(&mut self.buf)
                } else {
                    self.codec.decode(&mut self.buf)
                };
                match next {
                    Ok(Some(line)) => {
                        self.line_ended = true;
                        // The first line decides whether this is a peer link; nothing after it is
                        // read here.
                        if std::mem::take(&mut self.first) && is_hello(&line) {
                            return Ok(Batch::Peer(line));
                        }
                        self.lines.push(line);
                    }
                    Ok(None) => break,
                    Err(CodecError::LineTooLong { head, .. }) => {
                        self.too_long = Some(head);
                        break;
                    }
                    Err(CodecError::Io(e)) => return Err(e),
                    Err(e) => return Err(std::io::Error::other(e.to_string())),
                }
            }
            if !self.lines.is_empty() || self.too_long.is_some() {
                return Ok(Batch::Lines);
            }
            if self.eof || !self.fill().await? {
                return Ok(Batch::End);
            }
        }
    }

    /// Reads what the socket has. `Ok(false)`: shutdown, the idle time-out or the line time-out ends
    /// the connection.
    async fn fill(&mut self) -> std::io::Result<bool> {
        // A connection that has sent something reads in 4 KiB steps; one that has not (an idle
        // client) holds no more than the few bytes `read_buf` reserves for itself.
        if self.active {
            self.buf.reserve(4096);
        }
        let deadline = self.deadline();
        // Shutdown is checked with a load here, so the select below can poll the read first: a
        // busy connection's read is ready at once, and the two other futures are polled (to be woken)
        // only when it is not. An unbiased select draws a random order and polls them on every call.
        // The flag is set by the accept loops a moment after the token fires; until then a connection
        // whose read is pending hears the token itself.
        if self.shared.life.stopping() {
            return Ok(false);
        }
        let read = loop {
            tokio::select! {
                biased;
                r = self.stream.read_buf(&mut self.buf) => break r,
                _ = &mut self.cancelled => return Ok(false),
                _ = &mut self.idle => {
                    // The timer is not pushed back on every read; on expiry, check the deadline.
                    if tokio::time::Instant::now() >= deadline {
                        self.timed_out();
                        return Ok(false);
                    }
                    self.timer_at = deadline;
                    self.idle.as_mut().reset(deadline);
                }
            }
        };
        self.last_read = tokio::time::Instant::now();
        match read? {
            0 => self.eof = true,
            _ => self.active = true,
        }
        Ok(true)
    }

    /// When the time-out that applies now fires: the line time-out while a line is partly read, the
    /// idle time-out otherwise. Moves the timer earlier when the deadline is before it.
    fn deadline(&mut self) -> tokio::time::Instant {
        let limits = &self.shared.spec.limits;
        // What is left in the buffer is the start of a line: its clock runs from the read that
        // brought its first byte (the last read, if a line ended since; else whenever it began).
        if self.buf.is_empty() {
            self.partial_since = None;
        } else if self.line_ended || self.partial_since.is_none() {
            self.partial_since = Some(self.last_read);
        }
        self.line_ended = false;
        let deadline = match self.partial_since {
            Some(since) => since + limits.line_timeout,
            None => self.last_read + limits.idle_timeout,
        };
        if deadline < self.timer_at {
            self.timer_at = deadline;
            self.idle.as_mut().reset(deadline);
        }
        deadline
    }

    /// Counts and logs the time-out that ends the connection: a line left unfinished is a refusal
    /// by a limit; silence is only the idle time-out.
    fn timed_out(&self) {
        if self.partial_since.is_some() {
            self.shared.gate.refused(Limit::LineTimeout, self.addr);
            info!(conn = self.id, peer = %self.addr, refusal = %Limit::LineTimeout,
                pending_bytes = self.buf.len(),
                "line not ended within the line time-out; closing");
        } else {
            info!(conn = self.id, "idle time-out");
        }
    }

    /// Answers the batch in order into `out`, and logs each line and its reply into `log`. The node
    /// is locked once for a run of lines, not once per line, and never across the await of a Places
    /// look-up; the clock is read once per batch (and again after a look-up).
    async fn answer_batch(&mut self) -> std::io::Result<()> {
        let mut now = (self.shared.spec.clock)();
        if self.logging {
            self.log.stamp();
        }
        let mut i = 0;
        let mut stored = false;
        // Counted here and added to the shared counters once per batch.
        let (mut iamats, mut whatsats) = (0u64, 0u64);
        // The batch's last IAMAT answered, offered to the live page's samples once per batch.
        let mut last_iamat = None;
        while i < self.lines.len() {
            let (decided, refused) = self.answer_run(i, now, stored);
            stored |= decided.stored;
            iamats += decided.iamats;
            last_iamat = decided.last_iamat.map(|j| i + j).or(last_iamat);
            i += decided.answered;
            if let Some(why) = refused {
                self.logged.push(why);
                // The line is the client's bytes: escaped, as every logged line is, so it cannot
                // break the entry or forge another.
                info!(conn = self.id, peer = %self.addr, refusal = %why,
                    line = %show(&self.lines[i - 1]),
                    "IAMAT refused by a limit (logged once per connection)");
            }
            if let Some(q) = decided.lookup {
                self.answer_lookup(i, &q, now).await;
                whatsats += 1;
                i += 1;
                now = (self.shared.spec.clock)();
            }
            if self.out.len() >= FLUSH_AT || self.log.len() >= HAND_OVER_AT {
                self.flush().await?;
            }
        }
        self.end_batch(iamats, whatsats, last_iamat, stored, now);
        Ok(())
    }

    /// Answers the lines from `from` on with the node locked, until a look-up, a refusal not yet
    /// logged on this connection, or full buffers; journals what they stored before the node is
    /// unlocked. Returns what the node decided and the refusal to log. `stored`: the batch stored a
    /// record before this run.
    fn answer_run(
        &mut self,
        from: usize,
        now: Timestamp,
        stored: bool,
    ) -> (crate::node::Decided, Option<Limit>) {
        let shared = self.shared;
        let (log, logged, logging) = (&mut self.log, &self.logged, self.logging);
        let mut out_len = self.out.len();
        let mut refused = None;
        let mut node = shared.node();
        let decided = node.client_lines(
            &self.lines[from..],
            now,
            &mut self.out,
            |line, step, reply| {
                if let Step::Invalid(why) = step {
                    shared.stats.invalid(*why);
                }
                if logging {
                    log.pair(line, reply);
                }
                if let Step::Refused(why) = step {
                    if !logged.contains(why) {
                        refused = Some(*why);
                        return false;
                    }
                }
                out_len += reply.len();
                out_len < FLUSH_AT && log.len() < HAND_OVER_AT
            },
        );
        if let Some(t) = shared.journal(&mut node) {
            self.journal_end = Some(t);
        } else if let Some(store) = shared
            .store
            .as_ref()
            .filter(|_| from + decided.answered > 0)
        {
            if store.fsync().replies_wait_for_disk() {
                // Replies that show records stored by others wait for those too.
                self.journal_end = Some(store.position());
            }
        }
        // The cap may be reached by this batch, or (when a line is refused by it) by a peer's
        // records since.
        let cap_reached = if stored || decided.stored || refused == Some(Limit::ClientCap) {
            node.take_cap_reached()
        } else {
            None
        };
        drop(node);
        if let Some(clients) = cap_reached {
            shared.cap_reached(clients);
        }
        (decided, refused)
    }

    /// Answers the WHATSAT at line `i` with a Places look-up `q`, spending this connection's budget.
    async fn answer_lookup(&mut self, i: usize, q: &crate::node::Lookup, now: Timestamp) {
        let (answer, spent, began) = self.shared.places_lookup(q, now, &mut self.budget).await;
        if let Some(spent) = spent {
            if !std::mem::replace(&mut self.budget_logged, true) {
                info!(conn = self.id, peer = %self.addr, budget = spent.as_str(),
                    "WHATSAT answered OVER_QUERY_LIMIT: Places budget spent (logged once per connection)");
            }
        }
        let start = self.out.len();
        herd_proto::write_whatsat(&q.record, answer.to_pretty(), &mut self.out);
        if self.logging {
            self.log.stamp();
            self.log_whatsat(i, start, &answer, began);
        }
    }

    /// What a batch ends with: the shared counters, the live page's sample, the links woken, and the
    /// answer to a line over the limit.
    fn end_batch(
        &mut self,
        iamats: u64,
        whatsats: u64,
        last_iamat: Option<usize>,
        stored: bool,
        now: Timestamp,
    ) {
        let shared = self.shared;
        shared.stats.answered(iamats, whatsats);
        if let Some(i) = last_iamat {
            shared.live.offer_iamat(&self.lines[i], now);
        }
        if stored {
            shared.notify_links(None);
        }
        if let Some(head) = &self.too_long {
            shared.stats.line_too_long();
            warn!(
                conn = self.id,
                max = shared.spec.limits.max_line,
                "line too long; closing"
            );
            let start = self.out.len();
            herd_proto::write_invalid(head, &mut self.out);
            if self.logging {
                self.log.pair(head, &self.out[start..]);
            }
        }
    }

    /// Logs a WHATSAT (line `i`) and its answer (at `start` in `out`): the AT line, then one summary
    /// line of the JSON, or the JSON whole where `[log] bodies` asks for it.
    fn log_whatsat(&mut self, i: usize, start: usize, answer: &Answer, began: Instant) {
        let spec = &self.shared.spec;
        let reply = &self.out[start..];
        let at_end = reply
            .iter()
            .position(|&b| b == b'\n')
            .map_or(reply.len(), |p| p + 1);
        let (at, body) = reply.split_at(at_end);
        let body = body.strip_suffix(b"\n\n").unwrap_or(body);
        let results = answer
            .json
            .get("results")
            .and_then(serde_json::Value::as_array)
            .map_or(0, Vec::len);
        self.log.pair(&self.lines[i], at);
        self.log.whatsat(
            spec.places.backend().as_str(),
            answer.status(),
            results,
            body.len(),
            began.elapsed().as_secs_f64() * 1000.0,
            spec.log_bodies.then_some(body),
        );
    }

    /// Hands the log lines over, then writes the replies. The log goes first: a client never sees a
    /// reply whose line is not yet on its way to the log, and a full log queue holds the client back.
    /// With a store, replies that acknowledge stored records wait as the fsync rule says: under
    /// `always` until the records are on disk (if they cannot be, the replies are never sent and the
    /// connection closes); otherwise only while the journal is far behind.
    async fn flush(&mut self) -> std::io::Result<()> {
        if let (Some(t), Some(store)) = (self.journal_end.take(), &self.shared.store) {
            if store.fsync().replies_wait_for_disk() {
                if let Err(e) = store.durable(t).await {
                    warn!(conn = self.id, "{e}: closing without the replies");
                    self.out.clear();
                    return Err(std::io::Error::other(e));
                }
            } else {
                store.keep_up(t).await;
                if !store.acknowledging() {
                    // Persistence has failed for longer than the setting allows: these records
                    // would be acknowledged without being on any disk.
                    warn!(
                        conn = self.id,
                        "persistence is failing: closing without the replies"
                    );
                    self.out.clear();
                    return Err(std::io::Error::other(NotDurable));
                }
            }
        }
        self.shared.spec.log.submit(&mut self.log).await;
        if !self.out.is_empty() {
            // Nearly always the socket takes the whole reply at once: no timer is made for that.
            let sent = match self.stream.try_write(&self.out) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
                Err(e) => return Err(e),
            };
            if sent == self.out.len() {
                self.out.clear();
                // `try_write` spends none of the task's budget: a client that keeps its socket full
                // must still let the loop's other connections, links and admin requests run.
                tokio::task::consume_budget().await;
                return Ok(());
            }
            // A client that does not take its replies within the line time-out is given up on
            // (`TimedOut`), so a client that never reads cannot hold its connection for ever.
            let limit = self.shared.spec.limits.line_timeout;
            let rest = &self.out[sent..];
            match tokio::time::timeout(limit, self.stream.write_all(rest)).await {
                Ok(written) => written?,
                Err(_) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the client did not take its replies",
                    ))
                }
            }
            self.out.clear();
        }
        Ok(())
    }
}
