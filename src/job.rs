//! Jobs and their results: the JSON job object that comes in, the result object that goes out.

use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, Local};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::exec::{Captured, Ending, Outcome};
use crate::timefmt;

/// One job: the object as read (keys in their order, carried to the output), and what to run.
#[derive(Debug, Clone)]
pub struct Job {
    /// Position in the input, from 1.
    pub seq: u64,
    /// The job object; the result line is this object plus `"result"`.
    pub object: Map<String, Value>,
    pub body: Body,
    pub submitted: DateTime<Local>,
    /// How many times the job was started so far.
    pub attempts: u32,
    /// How many of those starts ended with a lost host (they do not count against retries).
    pub host_losses: u32,
    /// The host (index in the run's host list) of the last failed run: a retry prefers another.
    pub last_host: Option<usize>,
    /// `--pipe`: the block of input the job gets on its stdin (else `/dev/null`).
    pub stdin: Option<crate::pipe::Block>,
}

/// What a job runs, or why it cannot run.
#[derive(Debug, Clone)]
pub enum Body {
    /// Validated known keys, ready to run.
    Ready(Spec),
    /// Built from a template; expanded when the job gets its slot (`<%>` needs it). Holds the
    /// item's sources or columns (empty for a `--jsonl` object, whose fields are in `object`).
    Pending(Vec<String>),
    /// Not a job: why (a bad JSON line, a missing `cmd`, a field of the wrong type...).
    Invalid(String),
}

/// The known keys of a job, validated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Spec {
    pub cmd: String,
    pub cd: Option<String>,
    pub out: Option<String>,
    pub err: Option<String>,
    /// Hosts the job may run on (names as written in `-S`); `None`: any.
    pub hosts: Option<Vec<String>>,
    pub env: Vec<(String, String)>,
    pub timeout: Option<Duration>,
    pub retries: Option<u32>,
    /// Files copied to a remote host before the job runs (`transfer` key, `--transferfile`).
    pub transfer: Vec<String>,
    /// Files copied back from a remote host after it ends (`return` key, `--return`).
    pub returns: Vec<String>,
}

impl Spec {
    /// Reads and checks the known keys of a job object. The error names the key and says what
    /// it should be.
    pub fn from_object(object: &Map<String, Value>) -> Result<Spec, String> {
        let cmd = match object.get("cmd") {
            Some(Value::String(s)) => s.clone(),
            Some(other) => return Err(wrong_type("cmd", "a string", other)),
            None => return Err("the job has no `cmd`".to_string()),
        };
        let hosts = match object.get("host") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(vec![s.clone()]),
            Some(Value::Array(list)) if list.is_empty() => {
                return Err(
                    "`host` is an empty host list: no host may run the job (leave `host` out \
                     to let any host run it)"
                        .to_string(),
                )
            }
            Some(Value::Array(list)) => {
                let mut names = Vec::with_capacity(list.len());
                for v in list {
                    match v {
                        Value::String(s) => names.push(s.clone()),
                        other => {
                            return Err(wrong_type("host", "a host name or a list of names", other))
                        }
                    }
                }
                Some(names)
            }
            Some(other) => return Err(wrong_type("host", "a host name or a list of names", other)),
        };
        let env = match object.get("env") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Object(vars)) => {
                let mut env = Vec::with_capacity(vars.len());
                for (name, v) in vars {
                    if name.is_empty() || name.contains('=') || name.contains('\0') {
                        return Err(format!("`env` has a bad variable name {name:?}"));
                    }
                    let value = match v {
                        Value::String(s) => s.clone(),
                        Value::Number(n) => n.to_string(),
                        Value::Bool(b) => b.to_string(),
                        other => {
                            return Err(wrong_type(
                                &format!("env.{name}"),
                                "a string, number or boolean",
                                other,
                            ))
                        }
                    };
                    env.push((name.clone(), value));
                }
                env
            }
            Some(other) => return Err(wrong_type("env", "an object of variables", other)),
        };
        let timeout = match object.get("timeout") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => match n.as_f64().map(Duration::try_from_secs_f64) {
                Some(Ok(d)) if d > timefmt::MAX_DURATION => {
                    return Err(format!("`timeout`: {}", timefmt::too_long(&n.to_string())))
                }
                Some(Ok(d)) if !d.is_zero() => Some(d),
                _ => {
                    return Err(format!(
                        "`timeout` must be a positive number of seconds, not {n}"
                    ))
                }
            },
            Some(Value::String(s)) => match timefmt::parse_duration(s) {
                Ok(d) if !d.is_zero() => Some(d),
                Ok(_) => return Err(format!("`timeout` must be a positive duration, not {s:?}")),
                Err(e) => return Err(format!("`timeout`: {e}")),
            },
            Some(other) => return Err(wrong_type("timeout", "a number of seconds", other)),
        };
        let retries = match object.get("retries") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => match n.as_u64().and_then(|n| u32::try_from(n).ok()) {
                Some(r) => Some(r),
                None => return Err(format!("`retries` must be a whole number >= 0, not {n}")),
            },
            Some(other) => return Err(wrong_type("retries", "a whole number", other)),
        };
        Ok(Spec {
            cmd,
            cd: opt_string(object, "cd")?,
            out: opt_string(object, "out")?,
            err: opt_string(object, "err")?,
            hosts,
            env,
            timeout,
            retries,
            transfer: path_list(object, "transfer")?,
            returns: path_list(object, "return")?,
        })
    }
}

/// A key holding one path or a list of paths (`transfer`, `return`).
fn path_list(object: &Map<String, Value>, key: &str) -> Result<Vec<String>, String> {
    let want = "a path or a list of paths";
    match object.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(list)) => list
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                other => Err(wrong_type(key, want, other)),
            })
            .collect(),
        Some(other) => Err(wrong_type(key, want, other)),
    }
}

fn opt_string(object: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(wrong_type(key, "a string", other)),
    }
}

fn wrong_type(key: &str, want: &str, got: &Value) -> String {
    let kind = match got {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    format!("`{key}` must be {want}, not {kind}")
}

/// How a job ended, as the result's `status` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Error,
    Aborted,
}

/// The `"result"` object of an output line.
#[derive(Debug, Clone, Serialize)]
pub struct JobResult {
    pub status: Status,
    pub code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub seq: u64,
    /// Where it ran; null when it never started.
    pub host: Option<String>,
    pub engine_id: Option<usize>,
    pub attempts: u32,
    pub submitted: String,
    /// Null when it never started.
    pub started: Option<String>,
    pub completed: Option<String>,
    pub received: String,
    pub elapsed: Option<f64>,
    pub msg_id: String,
    /// A remote job's file copies (`--transferfile`, `--return`): counts, bytes, seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transfer: Option<crate::transfer::TransferStats>,
    #[serde(flatten)]
    pub stdout: Option<Stream>,
    #[serde(flatten)]
    pub stderr: Option<Stream>,
}

/// A captured stream, as `stdout` / `stdout_base64` / `stdout_truncated` (or `stderr...`).
#[derive(Debug, Clone)]
pub struct Stream {
    pub name: &'static str,
    pub captured: Captured,
}

impl Serialize for Stream {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(None)?;
        if let Ok(text) = std::str::from_utf8(&self.captured.bytes) {
            map.serialize_entry(self.name, text)?;
        } else {
            let key = if self.name == "stdout" {
                "stdout_base64"
            } else {
                "stderr_base64"
            };
            let b64 = base64::engine::general_purpose::STANDARD.encode(&self.captured.bytes);
            map.serialize_entry(key, &b64)?;
        }
        if self.captured.truncated {
            let key = if self.name == "stdout" {
                "stdout_truncated"
            } else {
                "stderr_truncated"
            };
            map.serialize_entry(key, &true)?;
        }
        map.end()
    }
}

/// Where a job ran: host name and global slot index.
#[derive(Debug, Clone)]
pub struct Placement {
    pub host: String,
    pub engine_id: usize,
}

/// The start of the `error` of a job that bakapara itself stopped (Ctrl-C, `--halt`...).
pub const STOPPED_BY_BAKAPARA: &str = "stopped before it ended";

impl JobResult {
    /// The result of a job run that got to a slot.
    pub fn from_outcome(
        job: &Job,
        place: &Placement,
        outcome: Outcome,
        msg_id: String,
    ) -> JobResult {
        let (status, code, signal, error) = match outcome.ending {
            Ending::Exited(code) => (Status::Ok, Some(code), None, None),
            Ending::Signaled(sig) => (
                Status::Aborted,
                None,
                Some(signal_name(sig)),
                Some(format!("killed by {}", signal_name(sig))),
            ),
            Ending::TimedOut { code, signal } => (
                Status::Error,
                code,
                signal.map(signal_name),
                Some("timed out".to_string()),
            ),
            Ending::Aborted { code, signal } => (
                Status::Aborted,
                code,
                signal.map(signal_name),
                Some(STOPPED_BY_BAKAPARA.to_string()),
            ),
            Ending::CouldNotRun(why) | Ending::HostLost(why) | Ending::GivenBack(why) => {
                (Status::Error, None, None, Some(why))
            }
        };
        JobResult {
            status,
            code,
            signal,
            error,
            seq: job.seq,
            host: Some(place.host.clone()),
            engine_id: Some(place.engine_id),
            attempts: job.attempts,
            submitted: timefmt::rfc3339(&job.submitted),
            started: outcome.ran.map(|(started, _)| timefmt::rfc3339(&started)),
            completed: outcome
                .ran
                .map(|(_, completed)| timefmt::rfc3339(&completed)),
            received: timefmt::rfc3339(&Local::now()),
            elapsed: outcome
                .ran
                .map(|(started, completed)| timefmt::seconds_between(&started, &completed)),
            msg_id,
            transfer: outcome.transfer,
            stdout: outcome.stdout.map(|captured| Stream {
                name: "stdout",
                captured,
            }),
            stderr: outcome.stderr.map(|captured| Stream {
                name: "stderr",
                captured,
            }),
        }
    }

    /// The result of a job that never started: `status` error or aborted, and why.
    #[must_use]
    pub fn not_started(job: &Job, status: Status, why: String, msg_id: String) -> JobResult {
        JobResult {
            status,
            code: None,
            signal: None,
            error: Some(why),
            seq: job.seq,
            host: None,
            engine_id: None,
            attempts: job.attempts,
            submitted: timefmt::rfc3339(&job.submitted),
            started: None,
            completed: None,
            received: timefmt::rfc3339(&Local::now()),
            elapsed: None,
            msg_id,
            transfer: None,
            stdout: None,
            stderr: None,
        }
    }

    /// True when the job counts as failed for the exit status: not ok, or a code other than 0.
    #[must_use]
    pub fn failed(&self) -> bool {
        self.status != Status::Ok || self.code != Some(0)
    }
}

/// `SIGKILL` for 9; `SIG42` for a number with no name.
#[must_use]
pub fn signal_name(sig: i32) -> String {
    match nix::sys::signal::Signal::try_from(sig) {
        Ok(s) => s.as_str().to_string(),
        Err(_) => format!("SIG{sig}"),
    }
}

/// Writes one output line: the job object without its old `result`, then `"result":{...}`,
/// then a newline.
pub fn encode_line(object: &Map<String, Value>, result: &JobResult, buf: &mut Vec<u8>) {
    buf.push(b'{');
    let mut first = true;
    for (key, value) in object {
        if key == "result" {
            continue;
        }
        if !first {
            buf.push(b',');
        }
        first = false;
        // Serializing a String key and a Value into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *buf, key);
        buf.push(b':');
        let _ = serde_json::to_writer(&mut *buf, value);
    }
    if !first {
        buf.push(b',');
    }
    buf.extend_from_slice(b"\"result\":");
    let _ = serde_json::to_writer(&mut *buf, result);
    buf.extend_from_slice(b"}\n");
}

/// The keys of a job object that bakapara reads (SPEC §3).
pub const KNOWN_KEYS: [&str; 10] = [
    "cmd", "cd", "out", "err", "host", "env", "timeout", "retries", "transfer", "return",
];

/// Keys bakapara writes into job objects itself (a template's `input`, a result fed back in, a
/// line that was not a job): never taken for misspellings.
const OWN_KEYS: [&str; 5] = ["input", "result", "line", "line_base64", "input_base64"];

/// Other names users give a known key (`command` for `cmd`...), after [`normalized_key`].
const OTHER_NAMES: [(&str, &str); 12] = [
    ("command", "cmd"),
    ("cwd", "cd"),
    ("dir", "cd"),
    ("workdir", "cd"),
    ("stdout", "out"),
    ("output", "out"),
    ("stderr", "err"),
    ("hostname", "host"),
    ("environment", "env"),
    ("environ", "env"),
    ("retry", "retries"),
    ("timeoutsecs", "timeout"),
];

/// A key without case, `-` and `_`: `Time_Out` is `timeout`.
fn normalized_key(key: &str) -> String {
    key.chars()
        .filter(|c| *c != '-' && *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

/// The known key that `key` is most likely a misspelling of, if any. The rule, chosen to catch
/// typos without flagging a user's own keys (`cost` is not `host`, `entries` is not `retries`):
/// `key` is not itself known, and once case, `-` and `_` are ignored it is a known key, that key
/// with an `s` added or removed, or another common name for it (`command`, `cwd`, `dir`,
/// `workdir`, `stdout`, `output`, `stderr`, `hostname`, `environment`, `retry`); or, for the
/// long keys (`timeout`, `retries`, `transfer`, `return`), one edit away: a letter missing,
/// added, changed, or two neighbours swapped (`timout`, `retires`).
#[must_use]
pub fn near_miss(key: &str) -> Option<&'static str> {
    if KNOWN_KEYS.contains(&key) || OWN_KEYS.contains(&key) {
        return None;
    }
    let k = normalized_key(key);
    let singular = k.strip_suffix('s').unwrap_or(&k);
    for known in KNOWN_KEYS {
        if k == known || singular == known || known.strip_suffix('s') == Some(k.as_str()) {
            return Some(known);
        }
    }
    if let Some((_, known)) = OTHER_NAMES
        .iter()
        .find(|(other, _)| k == *other || singular == *other)
    {
        return Some(known);
    }
    KNOWN_KEYS
        .into_iter()
        .filter(|known| known.len() >= 5)
        .find(|known| within_one_edit(&k, known))
}

/// True when `a` becomes `b` by one deletion, insertion, substitution or swap of neighbours.
fn within_one_edit(a: &str, b: &str) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let (a, b) = (&a[prefix..], &b[prefix..]);
    match (a.len(), b.len()) {
        (0, 0) => true,
        (n, m) if n == m + 1 => a[1..] == *b,
        (n, m) if n + 1 == m => *a == b[1..],
        (n, m) if n == m => {
            a[1..] == b[1..] || (n >= 2 && a[0] == b[1] && a[1] == b[0] && a[2..] == b[2..])
        }
        _ => false,
    }
}

/// The near-miss keys already reported in a run: each key name is reported once.
#[derive(Debug, Default)]
pub struct NearMisses {
    reported: std::collections::HashSet<String>,
}

impl NearMisses {
    /// A warning for each key of `object` that looks like a misspelt known key and was not
    /// reported before in this run. The key itself is left alone: it is carried through.
    pub fn check(&mut self, object: &Map<String, Value>) -> Vec<String> {
        let mut warnings = Vec::new();
        for key in object.keys() {
            if let Some(known) = near_miss(key) {
                if self.reported.insert(key.clone()) {
                    warnings.push(format!(
                        "bakapara: warning: job key {key:?} is not one bakapara reads (did you \
                         mean {known:?}?); it is carried through unchanged"
                    ));
                }
            }
        }
        warnings
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn near_miss_keys() {
        for (key, known) in [
            ("timout", "timeout"),
            ("timeuot", "timeout"),
            ("Timeout", "timeout"),
            ("time_out", "timeout"),
            ("timeouts", "timeout"),
            ("retires", "retries"),
            ("retry", "retries"),
            ("retrys", "retries"),
            ("Retries", "retries"),
            ("Cd", "cd"),
            ("CD", "cd"),
            ("cwd", "cd"),
            ("dir", "cd"),
            ("CMD", "cmd"),
            ("command", "cmd"),
            ("cmds", "cmd"),
            ("hosts", "host"),
            ("Host", "host"),
            ("hostname", "host"),
            ("ENV", "env"),
            ("environment", "env"),
            ("stdout", "out"),
            ("stderr", "err"),
            ("Out", "out"),
        ] {
            assert_eq!(near_miss(key), Some(known), "{key}");
        }
        for key in KNOWN_KEYS
            .into_iter()
            .chain(OWN_KEYS)
            .chain([
                "cost", "post", "hose", "entries", "retried2", "timer", "id", "name",
            ])
            .chain([
                "path", "sample", "", "_", "s", "c", "outfile", "error", "msg_id",
            ])
        {
            assert_eq!(near_miss(key), None, "{key:?}");
        }
    }

    #[test]
    fn near_misses_are_reported_once_per_key_name() {
        let mut seen = NearMisses::default();
        let first = seen.check(&obj(json!({"cmd": "x", "timout": 1, "Cd": "/", "tag": 1})));
        assert_eq!(first.len(), 2, "{first:?}");
        assert!(first[0].contains("\"timout\"") && first[0].contains("\"timeout\""));
        assert!(first[1].contains("\"Cd\"") && first[1].contains("\"cd\""));
        assert!(seen.check(&obj(json!({"timout": 2, "Cd": "/"}))).is_empty());
        assert_eq!(seen.check(&obj(json!({"CD": "/", "timout": 3}))).len(), 1);
    }

    #[test]
    fn spec_reads_every_known_key() {
        let spec = Spec::from_object(&obj(json!({
            "cmd": "echo hi", "cd": "d", "out": "o", "err": "e", "host": ["a", "b"],
            "env": {"A": "1", "N": 2, "B": true}, "timeout": 1.5, "retries": 3, "extra": [1]
        })))
        .unwrap();
        assert_eq!(spec.cmd, "echo hi");
        assert_eq!(spec.cd.as_deref(), Some("d"));
        assert_eq!(spec.hosts, Some(vec!["a".to_string(), "b".to_string()]));
        assert_eq!(spec.env.len(), 3);
        assert_eq!(spec.env[1], ("N".to_string(), "2".to_string()));
        assert_eq!(spec.timeout, Some(Duration::from_millis(1500)));
        assert_eq!(spec.retries, Some(3));
        let single =
            Spec::from_object(&obj(json!({"cmd": "x", "host": "a", "timeout": "2m"}))).unwrap();
        assert_eq!(single.hosts, Some(vec!["a".to_string()]));
        assert_eq!(single.timeout, Some(Duration::from_secs(120)));
    }

    #[test]
    fn spec_names_the_bad_key() {
        let cases = [
            (json!({}), "no `cmd`"),
            (json!({"cmd": 1}), "`cmd` must be a string, not a number"),
            (json!({"cmd": "x", "cd": []}), "`cd` must be a string"),
            (json!({"cmd": "x", "host": 3}), "`host` must be a host name"),
            (json!({"cmd": "x", "host": ["a", 1]}), "`host` must be"),
            (json!({"cmd": "x", "env": "A=1"}), "`env` must be an object"),
            (json!({"cmd": "x", "env": {"A": [1]}}), "`env.A` must be"),
            (
                json!({"cmd": "x", "env": {"A=B": "1"}}),
                "bad variable name",
            ),
            (
                json!({"cmd": "x", "timeout": -1}),
                "`timeout` must be a positive",
            ),
            (json!({"cmd": "x", "timeout": "soon"}), "`timeout`"),
            (
                json!({"cmd": "x", "timeout": 1e19}),
                "is too long (at most 100 years",
            ),
            (
                json!({"cmd": "x", "timeout": "1e19"}),
                "`timeout`: `1e19` is too long",
            ),
            (
                json!({"cmd": "x", "host": []}),
                "`host` is an empty host list",
            ),
            (
                json!({"cmd": "x", "retries": 4_294_967_296_u64}),
                "`retries` must be a whole number",
            ),
            (
                json!({"cmd": "x", "retries": 1.5}),
                "`retries` must be a whole number",
            ),
            (
                json!({"cmd": "x", "retries": "2"}),
                "`retries` must be a whole number",
            ),
        ];
        for (v, want) in cases {
            let err = Spec::from_object(&obj(v.clone())).unwrap_err();
            assert!(err.contains(want), "{v}: {err}");
        }
    }

    #[test]
    fn encode_keeps_key_order_and_replaces_result() {
        let object = obj(json!({"z": 1, "cmd": "true", "result": {"old": 1}, "a": "x"}));
        let job = Job {
            seq: 7,
            object: object.clone(),
            body: Body::Invalid("x".into()),
            submitted: Local::now(),
            attempts: 0,
            host_losses: 0,
            last_host: None,
            stdin: None,
        };
        let r = JobResult::not_started(&job, Status::Error, "why".into(), "m".into());
        let mut buf = Vec::new();
        encode_line(&object, &r, &mut buf);
        let text = String::from_utf8(buf).unwrap();
        assert!(
            text.starts_with(r#"{"z":1,"cmd":"true","a":"x","result":{"status":"error""#),
            "{text}"
        );
        assert!(text.ends_with("}\n"));
        let back: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back["result"]["seq"], 7);
        assert_eq!(back["result"]["started"], Value::Null);
    }

    #[test]
    fn streams_encode_as_text_base64_and_truncated() {
        let s = Stream {
            name: "stdout",
            captured: Captured {
                bytes: b"hi\n".to_vec(),
                truncated: true,
                ..Default::default()
            },
        };
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"stdout":"hi\n","stdout_truncated":true}"#
        );
        let s = Stream {
            name: "stderr",
            captured: Captured {
                bytes: vec![0xff, 0],
                truncated: false,
                ..Default::default()
            },
        };
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"stderr_base64":"/wA="}"#
        );
    }

    #[test]
    fn signal_names() {
        assert_eq!(signal_name(9), "SIGKILL");
        assert_eq!(signal_name(15), "SIGTERM");
        assert_eq!(signal_name(99), "SIG99");
    }
}
