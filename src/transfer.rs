//! Files on hosts without a shared filesystem: `--transferfile`, `--return`, `--cleanup`,
//! `--basefile` and `--workdir ...`, copied through a host's existing master connection.
//!
//! Every copy is one session on the host's multiplexed master (no new login): a small bash
//! script on the host writes what comes on its stdin under a temp name and renames it once the
//! byte count is right (a transfer), or sends a file's size and then the file (a return). A
//! returned file is written here beside its destination under a temp name and renamed only when
//! it arrived whole, so an interrupted return never leaves a truncated file under the real name.
//! The SSH executor calls these around each job; local jobs never see them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use openssh::{Session, Stdio};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

use crate::cli::Cli;
use crate::template::shell_quote;

/// The file options of a command line, checked.
#[derive(Debug, Clone, Default)]
pub struct FileOptions {
    /// `--transferfile` templates (`--transfer` and `--trc` add the input item's).
    pub transfer: Vec<String>,
    /// `--return` templates (`--trc` adds its own).
    pub returns: Vec<String>,
    /// What the SSH hosts need for the whole run.
    pub remote: RemoteFiles,
}

/// The run-wide file settings of SSH hosts.
#[derive(Debug, Clone, Default)]
pub struct RemoteFiles {
    /// `--cleanup`: remove a job's transferred and returned files after it, and the base files
    /// (and a `--workdir ...` directory) at the end of the run.
    pub cleanup: bool,
    /// `--basefile`: copied once to each host before its first job.
    pub basefiles: Vec<String>,
    /// `--workdir` was given: the directory is created on a host where it does not exist.
    pub create_workdir: bool,
    /// `--workdir ...`: the run's own directory, removed with `--cleanup`.
    pub fresh_workdir: bool,
}

impl FileOptions {
    pub fn from_cli(cli: &Cli) -> Result<FileOptions, String> {
        let whole = if cli.braces { "{}" } else { "<>" };
        let mut transfer = cli.transferfile.clone();
        if cli.transfer || !cli.trc.is_empty() {
            transfer.push(whole.to_string());
        }
        let mut returns = cli.return_file.clone();
        returns.extend(cli.trc.iter().cloned());
        if cli.template.is_empty() && !(transfer.is_empty() && returns.is_empty()) {
            return Err(
                "--transferfile, --transfer, --return and --trc need a TEMPLATE (JSON job \
                 lines carry their own `transfer` and `return` keys)"
                    .into(),
            );
        }
        for file in &cli.basefile {
            let meta = std::fs::metadata(file).map_err(|e| format!("--basefile {file}: {e}"))?;
            if !meta.is_file() {
                return Err(format!("--basefile {file}: not a regular file"));
            }
        }
        if cli.nonall && cli.onall {
            return Err(
                "--nonall runs one command with no input; --onall runs every input job \
                 on every host: give one of them"
                    .into(),
            );
        }
        Ok(FileOptions {
            remote: RemoteFiles {
                cleanup: cli.cleanup || !cli.trc.is_empty(),
                basefiles: cli.basefile.clone(),
                // Files go to the working directory, which may not exist on a host that
                // shares nothing with this one.
                create_workdir: cli.workdir.is_some()
                    || !transfer.is_empty()
                    || !returns.is_empty()
                    || !cli.basefile.is_empty(),
                fresh_workdir: cli.workdir.as_deref() == Some("..."),
            },
            transfer,
            returns,
        })
    }
}

/// `--workdir ...`: a directory of this run's own under the login directory, the same name
/// on every host (this machine's name, the process id and the time make it unique).
#[must_use]
pub fn fresh_workdir() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_or_else(|_| "local".into(), |h| h.trim().to_string());
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(".bakapara/tmp/{host}-{}-{nanos:09}", std::process::id())
}

/// What a job's transfers did, for its result's `transfer` key.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TransferStats {
    /// Files copied to the host before the job, and their bytes.
    pub sent: u32,
    pub sent_bytes: u64,
    /// Files copied back after it, and their bytes.
    pub returned: u32,
    pub returned_bytes: u64,
    /// Seconds spent copying (both ways).
    pub seconds: f64,
}

/// Bytes read from a file at a time for a transfer.
const COPY_BUFFER: usize = 256 * 1024;

/// Why a copy failed: the connection is gone (the host is lost), the copy itself failed
/// (a sentence naming the file and the host), or the run stopped.
#[derive(Debug, Clone)]
pub enum CopyError {
    Lost(String),
    Failed(String),
    /// The run stopped (Ctrl-C, `--halt`) before the copy was done.
    Stopped,
}

/// Copies files between here and one host through one master connection.
pub struct Copier<'a> {
    pub master: &'a Arc<Session>,
    /// The host's name as `-S` gives it (for messages).
    pub host: &'a str,
    /// The remote working directory (`None`: the login directory).
    pub workdir: Option<&'a str>,
}

/// On the host: `cd` to the working directory (`$1`), write stdin to `$2` under a temp name,
/// and rename it once it holds `$3` bytes.
const SEND_SCRIPT: &str = r#"w=$1 f=$2 n=$3
if [ -n "$w" ]; then case $w in /*) ;; *) cd 2>/dev/null ;; esac; cd -- "$w" 2>/dev/null || { echo "cannot enter $w" >&2; exit 3; }; fi
d=${f%/*}
if [ "$d" != "$f" ] && [ -n "$d" ]; then mkdir -p -- "$d" 2>/dev/null || { echo "cannot create $d" >&2; exit 3; }; fi
t=$f.bakapara-part.$$
{ cat >"$t"; } 2>/dev/null || { rm -f -- "$t"; echo "cannot write $f" >&2; exit 4; }
s=$(wc -c <"$t")
if [ "$s" -ne "$n" ]; then rm -f -- "$t"; echo "got $s of $n bytes" >&2; exit 5; fi
mv -f -- "$t" "$f" 2>/dev/null || { rm -f -- "$t"; echo "cannot write $f" >&2; exit 4; }"#;

/// On the host: `cd` to `$1`, print the size of `$2` on a line, then the file.
const RETURN_SCRIPT: &str = r#"w=$1 f=$2
if [ -n "$w" ]; then case $w in /*) ;; *) cd 2>/dev/null ;; esac; cd -- "$w" 2>/dev/null || { echo "cannot enter $w" >&2; exit 3; }; fi
[ -f "$f" ] || { echo "no such file" >&2; exit 4; }
exec 3<"$f" || exit 4
n=$(wc -c <"$f") || exit 4
printf '%s\n' "$n"
exec cat <&3"#;

/// On the host: `cd` to `$1` and remove the other arguments (`-r` first: directories too).
const REMOVE_SCRIPT: &str = r#"w=$1; shift
if [ -n "$w" ]; then case $w in /*) ;; *) cd 2>/dev/null ;; esac; cd -- "$w" 2>/dev/null || exit 0; fi
rm -f "$@" 2>/dev/null; exit 0"#;

/// The command line a login shell runs for `script` with `args`.
fn remote(script: &str, args: &[&str]) -> String {
    let mut s = String::from("exec bash --norc -c ");
    s.push_str(&shell_quote(script));
    s.push_str(" bakapara");
    for arg in args {
        s.push(' ');
        s.push_str(&shell_quote(arg));
    }
    s
}

impl Copier<'_> {
    /// Creates the working directory where it does not exist (`--workdir`).
    pub async fn make_workdir(&self) -> Result<(), CopyError> {
        let Some(dir) = self.workdir else {
            return Ok(());
        };
        let script =
            r#"case $1 in /*) ;; *) cd 2>/dev/null ;; esac; mkdir -p -- "$1" && cd -- "$1""#;
        let out = self.output(&remote(script, &[dir])).await?;
        if out.0 == Some(0) {
            return Ok(());
        }
        Err(CopyError::Failed(format!(
            "cannot create the working directory {dir} on {}: {}",
            self.host,
            out.1.trim()
        )))
    }

    /// Copies the local file `path` to the same path on the host (relative: under the
    /// working directory). Returns its size.
    pub async fn send(&self, path: &str) -> Result<u64, CopyError> {
        let failed = |why: String| {
            CopyError::Failed(format!("cannot transfer {path} to {}: {why}", self.host))
        };
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let size = file
            .metadata()
            .await
            .map_err(|e| failed(e.to_string()))?
            .len();
        let size_text = size.to_string();
        let command = remote(SEND_SCRIPT, &[self.workdir.unwrap_or(""), path, &size_text]);
        let mut child = self.spawn(&command, true, false).await?;
        let mut stdin = child.stdin().take();
        let mut stderr = child.stderr().take();
        let copy = async {
            let result = match &mut stdin {
                Some(pipe) => {
                    // Large reads: fewer wake-ups per MB than `copy`'s 8 KiB.
                    let mut reader = tokio::io::BufReader::with_capacity(COPY_BUFFER, &mut file);
                    tokio::io::copy_buf(&mut reader, pipe).await.map(|_| ())
                }
                None => Ok(()),
            };
            // EOF for the host's `cat`.
            drop(stdin.take());
            result
        };
        let read_err = async {
            let mut text = String::new();
            if let Some(pipe) = &mut stderr {
                let _ = pipe.read_to_string(&mut text).await;
            }
            text
        };
        let (copied, why) = tokio::join!(copy, read_err);
        let status = child.wait().await;
        match status {
            Ok(s) if s.success() && copied.is_ok() => Ok(size),
            Ok(s) if s.code().is_some() => Err(failed(match why.trim() {
                "" => format!("the copy ended with {s}"),
                why => why.to_string(),
            })),
            Ok(_) => Err(self.lost_or(failed("the copy was cut off".into())).await),
            Err(e) => Err(self.lost_or(failed(e.to_string())).await),
        }
    }

    /// Copies the host's file `path` (relative: under the working directory) to `path` here,
    /// through a temp file beside it that is renamed once the whole file is there. Returns
    /// its size.
    pub async fn fetch(&self, path: &str) -> Result<u64, CopyError> {
        let failed = |why: String| {
            CopyError::Failed(format!("cannot return {path} from {}: {why}", self.host))
        };
        let dest = PathBuf::from(path);
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| failed("not a file name".into()))?;
        std::fs::create_dir_all(&dir).map_err(|e| failed(format!("{}: {e}", dir.display())))?;
        let temp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".bakapara-part")
            .tempfile_in(&dir)
            .map_err(|e| {
                failed(format!(
                    "cannot create a temp file in {}: {e}",
                    dir.display()
                ))
            })?;
        let command = remote(RETURN_SCRIPT, &[self.workdir.unwrap_or(""), path]);
        let mut child = self.spawn(&command, false, true).await?;
        let stdout = child.stdout().take();
        let mut stderr = child.stderr().take();
        let receive = async {
            let Some(stdout) = stdout else {
                return Err("no output".to_string());
            };
            receive_sized(stdout, temp.as_file()).await
        };
        let read_err = async {
            let mut text = String::new();
            if let Some(pipe) = &mut stderr {
                let _ = pipe.read_to_string(&mut text).await;
            }
            text
        };
        let (received, why) = tokio::join!(receive, read_err);
        let status = child.wait().await;
        match (status, received) {
            (Ok(s), Ok(size)) if s.success() => {
                temp.as_file()
                    .sync_all()
                    .map_err(|e| failed(e.to_string()))?;
                temp.persist(&dest)
                    .map_err(|e| failed(e.error.to_string()))?;
                Ok(size)
            }
            (Ok(s), _) if s.code().is_some_and(|c| c != 255) && !why.trim().is_empty() => {
                Err(failed(why.trim().to_string()))
            }
            (Ok(_), Err(why)) => Err(self.lost_or(failed(why)).await),
            (Ok(s), Ok(_)) => Err(self
                .lost_or(failed(format!("the copy ended with {s}")))
                .await),
            (Err(e), _) => Err(self.lost_or(failed(e.to_string())).await),
        }
    }

    /// Removes files on the host (relative: under the working directory); best effort.
    pub async fn remove(&self, paths: &[&str], recursive: bool) {
        if paths.is_empty() {
            return;
        }
        let mut args = vec![self.workdir.unwrap_or("")];
        if recursive {
            args.push("-r");
        }
        args.push("--");
        args.extend_from_slice(paths);
        let _ = self.output(&remote(REMOVE_SCRIPT, &args)).await;
    }

    /// Removes a `--workdir ...` directory (from the login directory).
    pub async fn remove_workdir(&self) {
        let Some(dir) = self.workdir else { return };
        let script = r#"cd 2>/dev/null; rm -rf -- "$1"; rmdir -- .bakapara/tmp .bakapara 2>/dev/null; exit 0"#;
        let _ = self.output(&remote(script, &[dir])).await;
    }

    async fn spawn(
        &self,
        command: &str,
        stdin: bool,
        stdout: bool,
    ) -> Result<openssh::Child<Arc<Session>>, CopyError> {
        // sshd may refuse a session for a moment while others are closing (see the executor).
        let mut pause = std::time::Duration::from_millis(10);
        loop {
            let spawned = Session::to_raw_command(Arc::clone(self.master), command)
                .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
                .stdout(if stdout {
                    Stdio::piped()
                } else {
                    Stdio::null()
                })
                .stderr(Stdio::piped())
                .spawn()
                .await;
            match spawned {
                Ok(child) => return Ok(child),
                Err(openssh::Error::SshMux(_)) if pause < std::time::Duration::from_secs(1) => {
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                Err(e) => {
                    return Err(self
                        .lost_or(CopyError::Failed(format!(
                            "cannot start a copy on {}: {e}",
                            self.host
                        )))
                        .await)
                }
            }
        }
    }

    /// Runs a command with no input: its exit code and its stderr.
    async fn output(&self, command: &str) -> Result<(Option<i32>, String), CopyError> {
        let child = self.spawn(command, false, false).await?;
        match child.wait_with_output().await {
            Ok(out) => Ok((
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )),
            Err(e) => Err(self
                .lost_or(CopyError::Failed(format!("{}: {e}", self.host)))
                .await),
        }
    }

    /// `failed`, unless the connection is gone: then the host is lost.
    async fn lost_or(&self, failed: CopyError) -> CopyError {
        match self.master.check().await {
            Ok(()) => failed,
            Err(e) => CopyError::Lost(format!("lost the connection to {} ({e})", self.host)),
        }
    }
}

/// Reads `SIZE\n` and then SIZE bytes into `file`; anything else is an error.
async fn receive_sized(
    stdout: impl tokio::io::AsyncRead + Unpin,
    file: &std::fs::File,
) -> Result<u64, String> {
    let mut reader = tokio::io::BufReader::with_capacity(COPY_BUFFER, stdout);
    let mut header = String::new();
    reader
        .read_line(&mut header)
        .await
        .map_err(|e| e.to_string())?;
    let size: u64 = header
        .trim()
        .parse()
        .map_err(|_| "the host sent no size (cut off?)".to_string())?;
    let mut sink = tokio::fs::File::from_std(file.try_clone().map_err(|e| e.to_string())?);
    let copied = tokio::io::copy(&mut reader, &mut sink)
        .await
        .map_err(|e| e.to_string())?;
    sink.flush().await.map_err(|e| e.to_string())?;
    if copied != size {
        return Err(format!("got {copied} of {size} bytes"));
    }
    Ok(size)
}

/// Stopwatch for [`TransferStats::seconds`].
pub struct Clock(Instant);

impl Clock {
    #[must_use]
    pub fn start() -> Clock {
        Clock(Instant::now())
    }

    pub fn add_to(&self, stats: &mut TransferStats) {
        stats.seconds += self.0.elapsed().as_secs_f64();
    }
}
