//! Property tests of the parsers: templates, job objects, and whole input streams fed to the
//! binary.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::cargo::CommandCargoExt;
use bakapara::job::Spec;
use bakapara::template::{shell_quote, Context, Quoting, Template};
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use serde_json::{Map, Value};

/// Proptest settings: no regression files are written next to the tests.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------
// (1) Template::parse never panics
// ---------------------------------------------------------------------------------------

/// Strings close to the template language (tokens, operators, regexes, escapes), and any
/// string at all.
fn template_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[<>/.#%a-z0-9\\\\$()\\[\\]*+?|{}^ _-]{0,40}",
        prop::collection::vec(
            prop_oneof![
                Just("<>".to_string()),
                Just("<".to_string()),
                Just(">".to_string()),
                Just("</>".to_string()),
                Just("<//>".to_string()),
                Just("<.>".to_string()),
                Just("</.>".to_string()),
                Just("<#>".to_string()),
                Just("<%>".to_string()),
                Just("<1>".to_string()),
                Just("<99999999999999999999999>".to_string()),
                Just("<0>".to_string()),
                Just("<name>".to_string()),
                Just("</a/b>".to_string()),
                Just("<//a/$1>".to_string()),
                Just("</(/x>".to_string()),
                Just("</\\//x>".to_string()),
                Just("</[/>".to_string()),
                Just("<#.>".to_string()),
                "[^ <>]{0,6}".prop_map(|s| format!("<{s}>")),
                "[^<>]{0,6}",
                "\\PC{0,4}",
            ],
            0..8
        )
        .prop_map(|parts| parts.concat()),
    ]
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn template_parse_never_panics(text in template_text()) {
        let _ = Template::parse(&text);
    }

    #[test]
    fn template_expand_never_panics(
        text in template_text(),
        args in prop::collection::vec(any::<String>(), 0..3),
        seq in any::<u64>(),
        slot in any::<usize>(),
        fields in prop::option::of(prop::collection::vec(("[a-z]{1,4}", any::<String>()), 0..3)),
    ) {
        if let Ok(t) = Template::parse(&text) {
            let fields: Option<Map<String, Value>> = fields.map(|f| {
                f.into_iter().map(|(k, v)| (k, Value::String(v))).collect()
            });
            let ctx = Context { args: &args, fields: fields.as_ref(), seq, slot, total: None };
            let _ = t.expand(&ctx, Quoting::Shell);
            let _ = t.expand(&ctx, Quoting::Verbatim);
        }
    }
}

// ---------------------------------------------------------------------------------------
// (2) Any argument reaches the command byte for byte
// ---------------------------------------------------------------------------------------

/// Runs `cmd` as bakapara runs a job.
fn bash(cmd: &str) -> std::process::Output {
    Command::new("/bin/bash")
        .args(["-o", "pipefail", "-c", cmd])
        .stdin(Stdio::null())
        .output()
        .expect("/bin/bash runs")
}

/// Arguments without NUL: any characters, and ones full of shell syntax.
fn argument() -> impl Strategy<Value = String> {
    prop_oneof![
        "[^\u{0}]{0,24}",
        "[ -~\t\n]{0,24}",
        "['\"\\\\$`!*?~#&;|<>(){}\\[\\] \t\n=%-]{0,16}",
    ]
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn printf_of_the_expanded_item_prints_exactly_the_argument(arg in argument()) {
        let t = Template::parse("printf %s <>").unwrap();
        let args = [arg.clone()];
        let ctx = Context { args: &args, fields: None, seq: 1, slot: 1, total: None };
        let cmd = t.expand(&ctx, Quoting::Shell).unwrap();
        let out = bash(&cmd);
        prop_assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
        prop_assert_eq!(String::from_utf8_lossy(&out.stdout), arg.as_str(), "{:?}", cmd);
    }

    #[test]
    fn two_columns_reach_the_command_as_words(a in argument(), b in argument()) {
        let t = Template::parse("printf '%s\\0' <1> <2> <>").unwrap();
        let args = [a.clone(), b.clone()];
        let ctx = Context { args: &args, fields: None, seq: 1, slot: 1, total: None };
        let cmd = t.expand(&ctx, Quoting::Shell).unwrap();
        let out = bash(&cmd);
        prop_assert!(out.status.success());
        let want = format!("{a}\0{b}\0{a} {b}\0");
        prop_assert_eq!(String::from_utf8_lossy(&out.stdout), want.as_str());
    }
}

// ---------------------------------------------------------------------------------------
// (3) Job objects: Spec::from_object never panics; the binary gives one line per line
// ---------------------------------------------------------------------------------------

const KNOWN_KEYS: &[&str] = &[
    "cmd", "cd", "out", "err", "host", "env", "timeout", "retries", "result", "input", "transfer",
    "return",
];

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("a finite number", |f| {
            serde_json::Number::from_f64(f).map(Value::Number)
        }),
        prop::sample::select(vec![
            0.0,
            -0.0,
            0.5,
            -1.0,
            1e-10,
            1e-300,
            1e300,
            4_294_967_296.0,
            // Past the longest duration bakapara takes (100 years), and past u64 seconds.
            3.2e9,
            1e19,
            1.844_674_407_370_955_2e19
        ])
        .prop_map(Value::from),
        "\\PC{0,10}".prop_map(Value::String),
        any::<String>().prop_map(Value::String),
        prop::sample::select(vec![
            "",
            "0",
            "0s",
            "1",
            "1.5",
            "500ms",
            "1h30m",
            "1e400",
            "NaN",
            "inf",
            "-1s",
            "ms",
            "99999999999999999999999d",
            "1e19",
            "36501d",
            "3153600001",
            "1.2.3s",
            "localhost",
            ":",
            "a=b",
            "\u{0}",
        ])
        .prop_map(|s| Value::String(s.to_string())),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(KNOWN_KEYS).prop_map(str::to_string),
        1 => "\\PC{0,6}",
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..5)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn job_object() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::vec((key(), json_value()), 0..8).prop_map(|kv| kv.into_iter().collect())
}

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn spec_from_object_never_panics(object in job_object()) {
        if let Ok(spec) = Spec::from_object(&object) {
            prop_assert_eq!(Some(spec.cmd.as_str()), object["cmd"].as_str());
            prop_assert!(spec.timeout.is_none_or(|t| t <= bakapara::timefmt::MAX_DURATION));
        }
    }

    /// Any number or string as `timeout`: a duration a clock reading can take (so no job
    /// task can overflow on it), or an error naming the key.
    #[test]
    fn a_timeout_key_is_bounded_or_an_error_naming_it(
        timeout in prop_oneof![
            any::<f64>().prop_filter_map("a finite number", |f| {
                serde_json::Number::from_f64(f).map(Value::Number)
            }),
            any::<u64>().prop_map(Value::from),
            (0u64..4_000_000_000).prop_map(Value::from),
            "[0-9]{1,12}(\\.[0-9]{0,3})?(ms|s|m|h|d)?".prop_map(Value::String),
        ],
    ) {
        let mut object = Map::new();
        object.insert("cmd".into(), Value::String("true".into()));
        object.insert("timeout".into(), timeout.clone());
        match Spec::from_object(&object) {
            Ok(spec) => {
                let t = spec.timeout.expect("a timeout");
                prop_assert!(t <= bakapara::timefmt::MAX_DURATION, "{timeout}: {t:?}");
                prop_assert!(std::time::Instant::now().checked_add(t).is_some());
                prop_assert!(tokio::time::Instant::now().checked_add(t).is_some());
            }
            Err(why) => prop_assert!(why.contains("`timeout`"), "{timeout}: {why}"),
        }
    }
}

/// Makes a generated job object safe to run for real: a string `cmd` becomes `printf %s` of
/// it (a builtin that exits 0, so nothing is retried), `cd` / `out` / `err` strings become
/// plain relative names, and `retries` stays small. Values of the wrong type are kept.
fn defuse(mut object: Map<String, Value>) -> Map<String, Value> {
    for (key, value) in &mut object {
        match (key.as_str(), &*value) {
            ("cmd", Value::String(s)) => {
                *value = Value::String(format!("printf %s {}", shell_quote(s)));
            }
            ("cd" | "out" | "err", Value::String(s)) => {
                let safe: String = s.chars().filter(char::is_ascii_alphanumeric).collect();
                *value = Value::String(safe);
            }
            ("retries", Value::Number(_)) => *value = Value::from(1),
            _ => {}
        }
    }
    object
}

/// One input line: a (defused) JSON object, broken JSON, bytes that are not UTF-8, a
/// comment (a plain command line that does nothing), or a blank line.
fn input_line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => job_object().prop_map(|o| serde_json::to_vec(&Value::Object(defuse(o))).unwrap()),
        // An object with a string `cmd`: most of these run.
        3 => (job_object(), "\\PC{0,10}").prop_map(|(mut o, cmd)| {
            o.insert("cmd".into(), Value::String(cmd));
            serde_json::to_vec(&Value::Object(defuse(o))).unwrap()
        }),
        // Arbitrary bytes after `{`: invalid JSON, often not UTF-8.
        2 => prop::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 0..40)
            .prop_map(|bytes| [b"{".as_slice(), &bytes].concat()),
        // A JSON object cut short, or with garbage after it.
        1 => (job_object(), 0usize..40, "[^\n]{0,4}").prop_map(|(o, cut, tail)| {
            let text = serde_json::to_string(&Value::Object(defuse(o))).unwrap();
            let mut bytes = text.into_bytes();
            bytes.truncate(cut.max(1));
            bytes.extend_from_slice(tail.as_bytes());
            bytes
        }),
        // Leading blanks before `{`, and JSON that is not an object.
        1 => ("[ \t]{1,3}", prop::sample::select(vec!["{}", "{\"cmd\":\"true\"}", "{\"cmd\":[]}", "{1}", "{\"a\":1,}"]))
            .prop_map(|(ws, j)| format!("{ws}{j}").into_bytes()),
        1 => prop::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 0..20)
            .prop_map(|bytes| [b"# ".as_slice(), &bytes].concat()),
        1 => "[ \t]{0,3}".prop_map(String::into_bytes),
    ]
}

/// `value` with every number that is not an integer replaced by its text to 10 digits.
fn fuzzy_floats(value: Value) -> Value {
    match value {
        Value::Number(n) if n.as_i64().is_none() && n.as_u64().is_none() => {
            Value::String(format!("{:.9e}", n.as_f64().unwrap_or(f64::NAN)))
        }
        Value::Array(items) => Value::Array(items.into_iter().map(fuzzy_floats).collect()),
        Value::Object(map) => {
            Value::Object(map.into_iter().map(|(k, v)| (k, fuzzy_floats(v))).collect())
        }
        other => other,
    }
}

fn is_blank(line: &[u8]) -> bool {
    line.iter().all(u8::is_ascii_whitespace)
}

/// Runs the binary on `input` and returns (exit status, stdout).
fn run_binary(input: Vec<u8>) -> (std::process::ExitStatus, Vec<u8>, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::cargo_bin("bakapara")
        .unwrap()
        .args(["-j", "4", "-q", "--timeout", "5s", "--grace", "100ms"])
        .current_dir(dir.path())
        .env("HOME", dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bakapara starts");
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let start = Instant::now();
    let out = if let Ok(out) = rx.recv_timeout(Duration::from_secs(60)) {
        out.expect("bakapara runs")
    } else {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(pid).expect("a pid is an i32")),
            nix::sys::signal::Signal::SIGKILL,
        );
        panic!("bakapara did not end within {:?}", start.elapsed());
    };
    writer.join().unwrap();
    (
        out.status,
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

proptest! {
    #![proptest_config(config(32))]

    #[test]
    fn the_binary_writes_one_json_line_per_non_blank_input_line(
        lines in prop::collection::vec(input_line(), 1..24),
        final_newline in any::<bool>(),
    ) {
        let mut input = lines.join(&b'\n');
        if final_newline {
            input.push(b'\n');
        }
        let want = lines.iter().filter(|l| !is_blank(l)).count();
        let (status, stdout, stderr) = run_binary(input);
        prop_assert!(status.code().is_some(), "not killed by a signal: {status:?}: {stderr}");
        prop_assert!(status.code() != Some(255), "no fatal error: {stderr}");
        let out: Vec<&[u8]> = stdout.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
        prop_assert_eq!(out.len(), want, "{}", stderr);
        prop_assert!(stdout.is_empty() || stdout.ends_with(b"\n"));
        // The i-th non-blank line is job i; a JSON object's keys come back unchanged.
        let objects: Vec<Option<Map<String, Value>>> = lines
            .iter()
            .filter(|l| !is_blank(l))
            .map(|l| match serde_json::from_slice::<Value>(l) {
                Ok(Value::Object(mut o)) => {
                    o.shift_remove("result");
                    Some(o)
                }
                _ => None,
            })
            .collect();
        let mut seqs = BTreeSet::new();
        for line in &out {
            let v: Value = serde_json::from_slice(line)
                .map_err(|e| TestCaseError::fail(format!("{e}: {}", String::from_utf8_lossy(line))))?;
            let r = &v["result"];
            let status = r["status"].as_str().unwrap_or("");
            prop_assert!(["ok", "error", "aborted"].contains(&status), "{v}");
            if status != "ok" {
                prop_assert!(r["error"].is_string(), "{v}");
            }
            let seq = r["seq"].as_u64().unwrap_or(0);
            seqs.insert(seq);
            if let (Some(Some(sent)), Value::Object(mut got)) =
                (objects.get(usize::try_from(seq).map_or(usize::MAX, |s| s.wrapping_sub(1))), v.clone())
            {
                got.shift_remove("result");
                // Floats are compared to 10 digits: serde_json's default float parsing is not
                // exact (see carried_numbers_come_back_unchanged).
                prop_assert_eq!(
                    fuzzy_floats(Value::Object(got)),
                    fuzzy_floats(Value::Object(sent.clone())),
                    "the job object is carried through"
                );
            }
        }
        let expected: BTreeSet<u64> = (1..=want as u64).collect();
        prop_assert_eq!(seqs, expected);
    }
}

/// SPEC §3: every key other than the known ones is carried through to the output unchanged.
#[test]
fn carried_numbers_come_back_unchanged() {
    let numbers = [
        "12345678901234567890123",
        "-6.486289554384485e+245",
        "18446744073709551616",
        "0.30000000000000004",
        "1.7976931348623157e308",
    ];
    let mut input = String::new();
    for n in numbers {
        input.push_str(&format!("{{\"cmd\":\"true\",\"n\":{n}}}\n"));
    }
    let (status, stdout, stderr) = run_binary(input.into_bytes());
    assert_eq!(status.code(), Some(0), "{stderr}");
    let text = String::from_utf8(stdout).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_by_key(|l| serde_json::from_str::<Value>(l).unwrap()["result"]["seq"].as_u64());
    let mut changed = Vec::new();
    for (line, n) in lines.iter().zip(numbers) {
        // The number reads back as the same value the input text denotes.
        let prefix = "{\"cmd\":\"true\",\"n\":";
        let got = line
            .strip_prefix(prefix)
            .and_then(|rest| rest.split(',').next())
            .unwrap_or("");
        // std's f64 parsing is correctly rounded: a float must denote the same f64; an
        // integer must keep all its digits.
        let same = if n.contains(['.', 'e']) {
            got.parse::<f64>().ok() == n.parse::<f64>().ok()
        } else {
            got == n
        };
        if !same {
            changed.push(format!("{n} came back as {got}"));
        }
    }
    assert!(changed.is_empty(), "{changed:#?}");
}

// ---------------------------------------------------------------------------------------
// (5) Host lists: ranges, launchers, @slurm
// ---------------------------------------------------------------------------------------

/// Strings close to the host-list language (ranges, IPv6 brackets, slots, launchers).
fn host_list_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        "[a-z]{1,4}",
        "[0-9]{1,3}",
        Just("[".to_string()),
        Just("]".to_string()),
        Just(",".to_string()),
        Just("-".to_string()),
        Just(":".to_string()),
        Just("/".to_string()),
        Just("@".to_string()),
        Just("=".to_string()),
        Just(" ".to_string()),
        Just("@slurm".to_string()),
        Just("<host>".to_string()),
        Just("[0-99999999]".to_string()),
    ];
    prop_oneof![
        4 => prop::collection::vec(piece, 0..12).prop_map(|v| v.concat()),
        1 => any::<String>(),
    ]
}

/// An `-S` entry with a range: (entry text, expected names, user, port, slots).
fn range_entry() -> impl Strategy<
    Value = (
        String,
        Vec<String>,
        Option<String>,
        Option<u16>,
        Option<usize>,
    ),
> {
    (
        prop::option::of("[a-z]{1,5}"),
        "[a-z]{1,4}",
        0u64..200,
        1u64..20,
        1usize..4,
        prop::option::of(1u16..65535),
        prop::option::of(1usize..64),
    )
        .prop_map(|(user, prefix, lo, len, width, port, slots)| {
            let hi = lo + len - 1;
            let mut entry = String::new();
            if let Some(u) = &user {
                entry.push_str(&format!("{u}@"));
            }
            entry.push_str(&format!("{prefix}[{lo:0width$}-{hi:0width$}]"));
            if let Some(p) = port {
                entry.push_str(&format!(":{p}"));
            }
            if let Some(n) = slots {
                entry.push_str(&format!("/{n}"));
            }
            let names = (lo..=hi)
                .map(|n| {
                    let mut name = String::new();
                    if let Some(u) = &user {
                        name.push_str(&format!("{u}@"));
                    }
                    name.push_str(&format!("{prefix}{n:0width$}"));
                    if let Some(p) = port {
                        name.push_str(&format!(":{p}"));
                    }
                    name
                })
                .collect();
            (entry, names, user, port, slots)
        })
}

proptest! {
    #![proptest_config(config(512))]

    /// No host list (nor `SLURM_*` value) makes the parser panic or allocate without bound.
    #[test]
    fn host_list_parse_never_panics(text in host_list_text(), nodes in host_list_text(), counts in "[0-9x(),]{0,12}") {
        let env = |k: &str| match k {
            "SLURM_JOB_NODELIST" => Some(nodes.clone()),
            "SLURM_JOB_CPUS_PER_NODE" => Some(counts.clone()),
            _ => None,
        };
        let _ = bakapara::hosts::parse_sshlogin_list_env(&text, &env);
        let _ = bakapara::hosts::parse_sshloginfile_env(&text, &env);
    }

    /// A range entry expands to one entry per host, each keeping the user, port and slots;
    /// its names re-compress to a list that expands back to them.
    #[test]
    fn range_entries_expand_per_host((entry, names, user, port, slots) in range_entry()) {
        let hosts = bakapara::hosts::parse_sshlogin_list(&entry).expect("a valid range");
        let got: Vec<String> = hosts.iter().map(|h| h.name.clone()).collect();
        prop_assert_eq!(&got, &names);
        for h in &hosts {
            prop_assert_eq!(&h.user, &user);
            prop_assert_eq!(h.port, port);
            prop_assert_eq!(h.slots, slots);
            prop_assert!(h.launcher.is_none() && !h.local);
        }
        let bare: Vec<&str> = hosts.iter().map(|h| h.hostname.as_str()).collect();
        let again = bakapara::hostlist::expand(&bakapara::hostlist::compress(&bare)).expect("compressed");
        prop_assert_eq!(again, bare);
    }

    /// `ENTRY=CMD` keeps CMD (trimmed, whitespace inside kept) for every host of ENTRY.
    #[test]
    fn launcher_entries_keep_their_command(
        (entry, names, ..) in range_entry(),
        cmd in "[a-z<>' -]{0,8}[a-z]",
    ) {
        let list = format!("{entry}= {cmd} ,other");
        let hosts = bakapara::hosts::parse_sshlogin_list(&list).expect("a valid list");
        prop_assert_eq!(hosts.len(), names.len() + 1);
        for h in &hosts[..names.len()] {
            prop_assert_eq!(h.launcher.as_deref(), Some(cmd.trim()));
        }
        prop_assert!(hosts[names.len()].launcher.is_none());
    }
}
