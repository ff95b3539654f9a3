//! A TCP relay on 127.0.0.1 in front of a server (a harness sshd), whose link can be slowed
//! down or cut while connections through it stay open: the partition and slow-link half of the
//! failure injection (the sshd harness has the crash half).
//!
//! ```ignore
//! let cluster = SshCluster::start(&["h1", "h2"]);
//! let relay = Relay::in_front_of(&cluster, "h2"); // ssh_config's h2 now goes through it
//! relay.cut();                                     // a pulled cable
//! relay.restore();                                 // plugged back in: queued bytes flow
//! relay.set(Mode::Delay(Duration::from_millis(100))); // 100 ms round trip
//! ```
//!
//! Modes ([`Mode`]):
//! - `Pass`: bytes move as they come.
//! - `Delay(rtt)`: each direction holds every chunk for half the round trip, measured from the
//!   moment it was read, and keeps the order: a slow link, not a slow reader (throughput is
//!   not limited, only latency added).
//! - `Cut`: a partition. No byte moves in either direction and the relay stops reading, so
//!   the senders' socket buffers fill up and their writes block, as with no acknowledgements
//!   coming back. Both sockets stay open: neither end sees an error, a reset or an EOF, only
//!   silence, as with a pulled cable (not a crashed host). New connections are accepted (the
//!   kernel completes the handshake anyway) but carry nothing until the link comes back.
//!   Bytes read just before the cut are delivered after [`restore`](Relay::restore), as TCP
//!   retransmission would deliver them.
//!
//! Why a relay and not a network namespace with a veth pair and packet filtering: this machine
//! has `ip` but neither iptables nor nft, a namespace needs root and kernel support the test
//! machines may not give, and a relay is deterministic (a cut takes effect between two reads,
//! no kernel timer or retransmission back-off decides when bytes flow again). It only needs
//! std threads.
//!
//! Threads: one acceptor, and per connection one reader and one writer per direction. Each
//! reader polls with a short read timeout, so that it notices a cut or the end of the relay.
//! Dropping the [`Relay`] shuts every connection down (both ends then see an EOF) and stops
//! the threads.
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// How often a blocked reader or the acceptor looks at the mode and the stop flag.
const POLL: Duration = Duration::from_millis(10);
/// Chunks a direction may hold (read, not yet written) before its reader waits: the relay's
/// own "socket buffer", so a slow writer slows the sender down instead of growing memory.
const QUEUE_CHUNKS: usize = 256;
const CHUNK: usize = 64 * 1024;

/// What the relay does with the bytes (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Pass,
    /// The round-trip time added: each direction delays by half of it.
    Delay(Duration),
    Cut,
}

#[derive(Debug)]
struct State {
    mode: Mode,
    /// The mode to go back to on [`Relay::restore`].
    before_cut: Mode,
    stopped: bool,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    /// Both sockets of every connection, to shut down on drop.
    sockets: Mutex<Vec<TcpStream>>,
    accepted: AtomicUsize,
    /// Bytes moved (written on), both directions together.
    moved: AtomicUsize,
    stop: AtomicBool,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn mode(&self) -> Mode {
        self.state().mode
    }

    /// Blocks while the link is cut; false once the relay stops.
    fn wait_link(&self) -> bool {
        let mut st = self.state();
        while st.mode == Mode::Cut && !st.stopped {
            st = self
                .changed
                .wait_timeout(st, Duration::from_millis(100))
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        !st.stopped
    }
}

/// A relay listening on 127.0.0.1 (see the module documentation).
#[derive(Debug)]
pub struct Relay {
    port: u16,
    target: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<thread::JoinHandle<()>>,
}

impl Relay {
    /// A relay to `target`, in mode `Pass`.
    pub fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the relay on 127.0.0.1:0");
        let port = listener.local_addr().expect("relay address").port();
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                mode: Mode::Pass,
                before_cut: Mode::Pass,
                stopped: false,
            }),
            changed: Condvar::new(),
            sockets: Mutex::new(Vec::new()),
            accepted: AtomicUsize::new(0),
            moved: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let s = Arc::clone(&shared);
        let acceptor = thread::Builder::new()
            .name(format!("relay-{port}"))
            .spawn(move || accept_loop(listener, target, s))
            .expect("start the relay's acceptor");
        Relay {
            port,
            target,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// A relay to the local port `target`.
    pub fn to_port(target: u16) -> Relay {
        Relay::start(SocketAddr::from(([127, 0, 0, 1], target)))
    }

    /// A relay in front of `cluster`'s host `name`, with the cluster's client config routed
    /// through it (new connections to `name` then go through the relay).
    pub fn in_front_of(cluster: &super::sshd::SshCluster, name: &str) -> Relay {
        let relay = Relay::to_port(cluster.host(name).port());
        cluster.route_through(name, relay.port());
        relay
    }

    /// The port to connect to (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn target(&self) -> SocketAddr {
        self.target
    }

    pub fn mode(&self) -> Mode {
        self.shared.mode()
    }

    /// Switches the mode. Chunks already held keep the delay they were read with.
    pub fn set(&self, mode: Mode) {
        let mut st = self.shared.state();
        if mode == Mode::Cut && st.mode != Mode::Cut {
            st.before_cut = st.mode;
        }
        st.mode = mode;
        drop(st);
        self.shared.changed.notify_all();
    }

    /// A partition: nothing moves until [`restore`](Self::restore).
    pub fn cut(&self) {
        self.set(Mode::Cut);
    }

    /// Ends a cut: back to the mode before it (`Pass` or `Delay`).
    pub fn restore(&self) {
        let before = self.shared.state().before_cut;
        self.set(before);
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Bytes delivered so far, both directions.
    pub fn bytes_moved(&self) -> usize {
        self.shared.moved.load(Ordering::SeqCst)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.state().stopped = true;
        self.shared.changed.notify_all();
        for s in self
            .shared
            .sockets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .drain(..)
        {
            let _ = s.shutdown(Shutdown::Both);
        }
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

#[allow(clippy::needless_pass_by_value)] // each thread owns its handles
fn accept_loop(listener: TcpListener, target: SocketAddr, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        let client = match listener.accept() {
            Ok((c, _)) => c,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                thread::sleep(POLL);
                continue;
            }
            Err(_) => {
                thread::sleep(POLL);
                continue;
            }
        };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        let _ = client.set_nonblocking(false);
        let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(5)) else {
            // The server is down: the client sees its connection closed, as it would see a
            // refusal.
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        if let (Ok(c), Ok(s)) = (client.try_clone(), server.try_clone()) {
            let mut socks = shared
                .sockets
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            socks.push(c);
            socks.push(s);
        }
        if shared.stop.load(Ordering::SeqCst) {
            // Drop ran between accept and now: shut this one down too.
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
            return;
        }
        direction(&client, &server, &shared);
        direction(&server, &client, &shared);
    }
}

/// Starts the reader and writer threads moving bytes `from` → `to`.
fn direction(from: &TcpStream, to: &TcpStream, shared: &Arc<Shared>) {
    let (Ok(from), Ok(to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    let (tx, rx) = mpsc::sync_channel::<Option<(Instant, Vec<u8>)>>(QUEUE_CHUNKS);
    let s = Arc::clone(shared);
    thread::spawn(move || read_side(from, tx, s));
    let s = Arc::clone(shared);
    thread::spawn(move || write_side(to, rx, s));
}

/// Reads chunks and queues them with the time they are due; `None` = EOF (or error) seen.
#[allow(clippy::needless_pass_by_value)] // each thread owns its handles
fn read_side(
    mut from: TcpStream,
    tx: mpsc::SyncSender<Option<(Instant, Vec<u8>)>>,
    shared: Arc<Shared>,
) {
    let _ = from.set_read_timeout(Some(POLL));
    let mut buf = vec![0u8; CHUNK];
    loop {
        // During a cut nothing is read: the sender's buffers fill, its writes block.
        if !shared.wait_link() {
            return;
        }
        match from.read(&mut buf) {
            Ok(0) => {
                let _ = tx.send(None);
                return;
            }
            Ok(n) => {
                let delay = match shared.mode() {
                    Mode::Delay(rtt) => rtt / 2,
                    _ => Duration::ZERO,
                };
                if tx
                    .send(Some((Instant::now() + delay, buf[..n].to_vec())))
                    .is_err()
                {
                    return;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => {
                let _ = tx.send(None);
                return;
            }
        }
    }
}

/// Writes queued chunks in order, each once it is due and the link is up; passes an EOF on
/// as a half-close.
#[allow(clippy::needless_pass_by_value)] // each thread owns its handles
fn write_side(
    mut to: TcpStream,
    rx: mpsc::Receiver<Option<(Instant, Vec<u8>)>>,
    shared: Arc<Shared>,
) {
    for item in rx {
        let Some((due, chunk)) = item else {
            if shared.wait_link() {
                let _ = to.shutdown(Shutdown::Write);
            }
            return;
        };
        let now = Instant::now();
        if due > now {
            thread::sleep(due - now);
        }
        if !shared.wait_link() {
            return;
        }
        if to.write_all(&chunk).is_err() {
            let _ = to.shutdown(Shutdown::Both);
            return;
        }
        shared.moved.fetch_add(chunk.len(), Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------------------------------------
// Tests of the relay itself, run with the integration binary: `cargo test --test integration
// common::relay::`.

#[cfg(test)]
mod relay_tests {
    use super::*;

    /// An echo server on 127.0.0.1: every connection gets its bytes back.
    fn echo_server() -> (u16, thread::JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let t = thread::spawn(move || {
            for c in l.incoming().flatten() {
                thread::spawn(move || {
                    let mut r = c.try_clone().expect("clone");
                    let mut w = c;
                    let _ = std::io::copy(&mut r, &mut w);
                    let _ = w.shutdown(Shutdown::Write);
                });
            }
        });
        (port, t)
    }

    fn connect(relay: &Relay) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", relay.port())).expect("connect to the relay");
        s.set_nodelay(true).expect("nodelay");
        s
    }

    fn round_trip(s: &mut TcpStream, msg: &[u8]) -> Duration {
        let t = Instant::now();
        s.write_all(msg).expect("write");
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got).expect("read back");
        assert_eq!(got, msg);
        t.elapsed()
    }

    #[test]
    fn pass_moves_bytes_both_ways_and_passes_eof_on() {
        let (port, _t) = echo_server();
        let relay = Relay::to_port(port);
        let mut s = connect(&relay);
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut r = s.try_clone().expect("clone");
        let reader = thread::spawn(move || {
            let mut got = Vec::new();
            r.read_to_end(&mut got).expect("read to the echo's EOF");
            got
        });
        s.write_all(&big).expect("write");
        s.shutdown(Shutdown::Write).expect("half-close");
        let got = reader.join().expect("reader");
        assert!(got == big, "{} bytes back of {}", got.len(), big.len());
        assert_eq!(relay.connections(), 1);
    }

    #[test]
    fn delay_adds_the_round_trip_time_and_keeps_order() {
        let (port, _t) = echo_server();
        let relay = Relay::to_port(port);
        let mut s = connect(&relay);
        let fast = round_trip(&mut s, b"warm");
        relay.set(Mode::Delay(Duration::from_millis(200)));
        let slow = round_trip(&mut s, b"slow");
        assert!(
            slow >= Duration::from_millis(195) && slow < Duration::from_millis(1500),
            "a 200 ms RTT link took {slow:?} (direct {fast:?})"
        );
        // Many small writes in a burst: order kept, and the burst costs one RTT, not one per
        // chunk (latency, not a bandwidth limit).
        let t = Instant::now();
        let mut r = s.try_clone().expect("clone");
        let reader = thread::spawn(move || {
            let mut got = vec![0u8; 100 * 4];
            r.read_exact(&mut got).expect("read back");
            got
        });
        let mut sent = Vec::new();
        for i in 0..100u32 {
            let b = i.to_be_bytes();
            s.write_all(&b).expect("write");
            sent.extend_from_slice(&b);
        }
        let got = reader.join().expect("reader");
        assert_eq!(got, sent, "order kept");
        let burst = t.elapsed();
        assert!(
            burst < Duration::from_millis(1500),
            "100 writes took {burst:?}"
        );
        relay.set(Mode::Pass);
        let back = round_trip(&mut s, b"fast");
        assert!(back < Duration::from_millis(150), "pass again: {back:?}");
    }

    #[test]
    fn cut_moves_nothing_and_shows_no_error_until_restored() {
        let (port, _t) = echo_server();
        let relay = Relay::to_port(port);
        let mut s = connect(&relay);
        round_trip(&mut s, b"before");
        // (The count goes up just after a write: the echo may be read before it does.)
        super::super::sshd::wait_until(Duration::from_secs(10), "12 bytes counted", || {
            relay.bytes_moved() == 12
        });
        relay.cut();
        assert_eq!(relay.mode(), Mode::Cut);
        let moved = relay.bytes_moved();
        s.write_all(b"during")
            .expect("a write into a cut link succeeds");
        s.set_read_timeout(Some(Duration::from_millis(700)))
            .expect("timeout");
        let mut buf = [0u8; 16];
        match s.read(&mut buf) {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            other => panic!("a cut link must give silence, not {other:?}"),
        }
        assert_eq!(relay.bytes_moved(), moved, "nothing moved during the cut");
        // The sender is not told either: it can keep writing until the buffers are full, and
        // a write beyond that blocks (here: times out) instead of failing.
        s.set_write_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        let junk = vec![b'x'; 64 * 1024];
        let mut written = 0usize;
        let blocked = loop {
            match s.write(&junk) {
                Ok(n) => written += n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    break true
                }
                Err(e) => panic!("a cut link gave the sender an error: {e}"),
            }
            if written > 256 * 1024 * 1024 {
                break false;
            }
        };
        assert!(blocked, "the sender's writes block during a cut");
        assert!(
            written < 64 * 1024 * 1024,
            "the relay stopped reading ({written} bytes taken)"
        );
        // New connections during the cut are silent too.
        let mut s2 = connect(&relay);
        s2.write_all(b"new").expect("write");
        s2.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        assert!(s2.read(&mut buf).is_err(), "a new connection is silent");
        relay.restore();
        assert_eq!(relay.mode(), Mode::Pass);
        // Everything written meanwhile arrives, in order, after the restore.
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let mut got = vec![0u8; 6];
        s.read_exact(&mut got).expect("the held bytes arrive");
        assert_eq!(&got, b"during");
        s2.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let mut got = vec![0u8; 3];
        s2.read_exact(&mut got).expect("the new connection's bytes");
        assert_eq!(&got, b"new");
    }

    #[test]
    fn restore_returns_to_the_delay_before_the_cut() {
        let (port, _t) = echo_server();
        let relay = Relay::to_port(port);
        relay.set(Mode::Delay(Duration::from_millis(100)));
        relay.cut();
        relay.restore();
        assert_eq!(relay.mode(), Mode::Delay(Duration::from_millis(100)));
    }

    #[test]
    fn dropping_the_relay_closes_its_connections() {
        let (port, _t) = echo_server();
        let relay = Relay::to_port(port);
        let mut s = connect(&relay);
        round_trip(&mut s, b"x");
        relay.cut();
        drop(relay);
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut buf = [0u8; 4];
        match s.read(&mut buf) {
            Ok(0) | Err(_) => {}
            Ok(n) => panic!("{n} bytes from a dropped relay"),
        }
    }
}
