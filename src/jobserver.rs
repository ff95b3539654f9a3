//! GNU make's jobserver: under `make -jN` (MAKEFLAGS `--jobserver-auth`, a `+` recipe) every
//! job beyond bakapara's first holds one of make's tokens, so all recipes together run at most
//! N jobs. The scheduler asks [`Tokens`] whether a job may start; tokens are read from make on
//! a thread of their own and arrive on a channel, so waiting for one never blocks the run.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

/// The jobserver make passed down, connected.
#[derive(Debug, Clone)]
pub struct Jobserver {
    client: jobserver::Client,
}

impl Jobserver {
    /// Connects to the jobserver named in MAKEFLAGS (`R,W` pipe descriptors, make 4.3, or
    /// `fifo:PATH`, make 4.4). `Ok(None)`: none is named, or make disabled it for this
    /// command. `Err`: one is named but cannot be used (a recipe without `+`: make closed the
    /// pipe), with a sentence saying so; the run then goes on with its own `-j` alone.
    ///
    /// Call it first thing in `main`, before this process opens any file: the descriptors
    /// named in MAKEFLAGS must still be the ones make left open.
    pub fn from_env() -> Result<Option<Jobserver>, String> {
        // SAFETY: `from_env_ext` is unsafe because it reads the descriptors that MAKEFLAGS
        // names, which might belong to someone else in the process. It is called before the
        // process opened any file (see above), so a descriptor that is open is one it
        // inherited; `check_pipe` makes it accept only pipes and FIFOs, and it works on a
        // fresh open of /dev/fd/N or a duplicate (close-on-exec), never closing the inherited
        // descriptor or taking ownership of it.
        let found = unsafe { jobserver::Client::from_env_ext(true) };
        match found.client {
            Ok(client) => Ok(Some(Jobserver { client })),
            Err(e) => match e.kind() {
                jobserver::FromEnvErrorKind::NoEnvVar
                | jobserver::FromEnvErrorKind::NoJobserver
                | jobserver::FromEnvErrorKind::NegativeFd => Ok(None),
                _ => {
                    let var = found.var.map_or("MAKEFLAGS", |(name, _)| name);
                    Err(format!(
                        "{var} names a make jobserver that bakapara cannot use ({e}); \
                         mark the recipe with `+` to share make's -j: running on bakapara's own -j alone"
                    ))
                }
            },
        }
    }
}

/// What the scheduler holds of make's tokens: each running job beyond the first holds one.
#[derive(Debug)]
pub(crate) struct Tokens {
    /// One message per token wanted; the reader thread reads a token for each. Dropped
    /// first when the run ends, so that the reader stops waiting for requests.
    ask_tx: Option<std::sync::mpsc::Sender<()>>,
    arrived_rx: mpsc::UnboundedReceiver<io::Result<jobserver::Acquired>>,
    held: Vec<jobserver::Acquired>,
    /// Tokens asked for and not arrived yet.
    asked: usize,
    /// Set when the jobserver failed (make went away): jobs then start on slots alone.
    failed: bool,
    reader: Option<std::thread::JoinHandle<()>>,
    /// Set by the reader when it cannot poll and blocks in a read instead: it cannot be
    /// joined then.
    blocking: Arc<AtomicBool>,
}

/// How often the reader looks for a token while one is wanted. Polling (rather than a
/// blocking read) lets it stop at once when the run ends, so that no token is read by a
/// process about to exit and lost to make.
const POLL: Duration = Duration::from_millis(5);

impl Tokens {
    /// Starts the thread that reads tokens from make when asked; it ends with the run.
    pub(crate) fn new(jobserver: &Jobserver) -> io::Result<Tokens> {
        let (ask_tx, ask_rx) = std::sync::mpsc::channel::<()>();
        let (arrived_tx, arrived_rx) = mpsc::unbounded_channel();
        let client = jobserver.client.clone();
        let blocking = Arc::new(AtomicBool::new(false));
        let reader = {
            let blocking = Arc::clone(&blocking);
            std::thread::Builder::new()
                .name("bakapara-jobserver".into())
                .spawn(move || {
                    crate::signals::keep_off_this_thread();
                    while ask_rx.recv().is_ok() {
                        let Some(token) = read_token(&client, &arrived_tx, &blocking) else {
                            return; // The run ended.
                        };
                        let failed = token.is_err();
                        // A token nobody takes any more is given back as it drops here.
                        if arrived_tx.send(token).is_err() || failed {
                            return;
                        }
                    }
                })?
        };
        Ok(Tokens {
            ask_tx: Some(ask_tx),
            arrived_rx,
            held: Vec::new(),
            asked: 0,
            failed: false,
            reader: Some(reader),
            blocking,
        })
    }

    /// Whether one more job may start while `running` jobs run: the first needs no token,
    /// each other one the token it holds.
    pub(crate) fn may_start(&self, running: usize) -> bool {
        self.failed || running == 0 || self.held.len() >= running
    }

    /// Keeps as many tokens as `running` jobs and `startable` more that wait for one would
    /// hold: asks for the missing ones, gives back the rest to make.
    pub(crate) fn balance(&mut self, running: usize, startable: usize) {
        if self.failed {
            self.held.clear();
            return;
        }
        let wanted = (running + startable).saturating_sub(1);
        self.held.truncate(wanted);
        while self.held.len() + self.asked < wanted {
            if self.ask_tx.as_ref().is_none_or(|ask| ask.send(()).is_err()) {
                self.failed = true;
                return;
            }
            self.asked += 1;
        }
    }

    /// True while a token is on its way.
    pub(crate) fn awaited(&self) -> bool {
        self.asked > 0 && !self.failed
    }

    /// The next token from make (or its failure); pending while none is asked for.
    pub(crate) async fn arrival(&mut self) -> Option<io::Result<jobserver::Acquired>> {
        self.arrived_rx.recv().await
    }

    /// A token came (kept until [`Tokens::balance`] finds it surplus), or reading one failed:
    /// then the error, and jobs start on slots alone from now on.
    pub(crate) fn arrived(
        &mut self,
        token: Option<io::Result<jobserver::Acquired>>,
    ) -> Option<String> {
        self.asked = self.asked.saturating_sub(1);
        match token {
            Some(Ok(token)) => {
                self.held.push(token);
                None
            }
            Some(Err(e)) => {
                self.failed = true;
                self.held.clear();
                Some(e.to_string())
            }
            None => {
                self.failed = true;
                self.held.clear();
                Some("its reader thread ended".to_string())
            }
        }
    }
}

impl Drop for Tokens {
    fn drop(&mut self) {
        self.ask_tx = None;
        self.arrived_rx.close();
        if let Some(reader) = self.reader.take() {
            // A polling reader sees the closed channel within POLL; a blocking one is left to
            // end when a token comes (which it then gives back).
            if !self.blocking.load(Ordering::SeqCst) {
                let _ = reader.join();
            }
        }
    }
}

/// Reads one token: polls until one comes, or returns `None` once nobody waits for it (the
/// run ended). Where the descriptor cannot be made non-blocking, blocks in a read instead.
fn read_token(
    client: &jobserver::Client,
    arrived: &mpsc::UnboundedSender<io::Result<jobserver::Acquired>>,
    blocking: &AtomicBool,
) -> Option<io::Result<jobserver::Acquired>> {
    loop {
        if arrived.is_closed() {
            return None;
        }
        match client.try_acquire() {
            Ok(Some(token)) => return Some(Ok(token)),
            Ok(None) => std::thread::sleep(POLL),
            Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                blocking.store(true, Ordering::SeqCst);
                return Some(client.acquire());
            }
            Err(e) => return Some(Err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_held_for_jobs_beyond_the_first_and_given_back() {
        let client = jobserver::Client::new(2).expect("a jobserver of 2 tokens");
        let mut tokens = Tokens::new(&Jobserver {
            client: client.clone(),
        })
        .expect("the reader thread");
        assert!(tokens.may_start(0), "the first job needs no token");
        assert!(!tokens.may_start(1));
        tokens.balance(1, 2);
        assert!(tokens.awaited());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        for _ in 0..2 {
            let token = runtime.block_on(tokens.arrival());
            assert_eq!(tokens.arrived(token), None);
        }
        assert!(!tokens.awaited());
        assert_eq!(client.available().ok(), Some(0));
        assert!(tokens.may_start(2));
        assert!(!tokens.may_start(3), "two tokens, three jobs running");
        tokens.balance(2, 0);
        assert_eq!(
            client.available().ok(),
            Some(1),
            "one job ended: its token is back"
        );
        tokens.balance(0, 0);
        assert_eq!(client.available().ok(), Some(2));
    }
}
