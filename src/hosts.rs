//! Host lists (SPEC §4): parsing of `-S/--sshlogin` lists and `--sshloginfile` text into
//! [`HostSpec`]s, and matching a job's `host` value against them (pure code, no I/O).
//!
//! # Entry syntax
//!
//! An entry is `[user@]host[:port][/N]`, or GNU Parallel's order `N/[user@]host[:port]`:
//!
//! | entry | meaning |
//! |---|---|
//! | `node01` | SSH to `node01`, slots = its CPU count |
//! | `alice@node01:2222/4` or `4/alice@node01:2222` | user `alice`, port 2222, 4 slots |
//! | `[::1]:2222/2`, `::1` | IPv6 addresses (brackets are needed to give a port) |
//! | `:`, `:/4`, `4/:`, `localhost`, `localhost/4` | this machine, without SSH |
//!
//! | `alice@node[01-12]:2222/4` | a host range ([`crate::hostlist`]): one entry per host, each with the user, port and slots |
//! | `node[1-4]=docker exec -i <host>` | a launcher: the agent starts through that command, not SSH |
//! | `@slurm`, `@slurm/2` | the nodes of the Slurm allocation this runs in ([`crate::slurm`]), slots from it or `/N` |
//!
//! `localhost` with a user or a port (`alice@localhost`, `localhost:22`) is an SSH host like
//! any other. Whitespace around an entry is ignored.
//!
//! # Lists and launchers
//!
//! A `-S` list is split at the commas outside brackets (`n[1-3,7],m1` is two entries). An
//! entry `ENTRY=CMD` gives its hosts the launcher `CMD` ([`HostSpec::launcher`]): a command
//! template in which `<host>` stands for the host name, whitespace allowed; it runs to the end
//! of the entry, which in `-S` is the next comma (brackets no longer count after the `=`), so
//! a launcher holding a comma goes in an `--sshloginfile`, where `ENTRY=CMD` takes the rest of
//! its line (up to a `#` comment). A launcher entry is never this machine: `:=CMD` is an error.
//! `@slurm` takes the launcher [`crate::slurm::LAUNCHER`] unless it names its own.
//!
//! # Names
//!
//! Every host has a [`HostSpec::name`]: the entry as written without its slot count
//! (`alice@node01:2222`), except that both local forms are named `localhost`, the name result
//! lines report for local jobs (SPEC §3).
//!
//! # Duplicates
//!
//! A name given twice (`-S node01/2,node01/4`, or `:` and `localhost`) is an error
//! ([`HostError::Duplicate`]) rather than GNU Parallel's silent merge: which slot count would
//! win is a guess, and a typo that repeats a host is better caught than doubled. Entries that
//! differ in user or port (`node01`, `alice@node01`, `node01:2222`) are different hosts and
//! allowed together. [`check_unique`] applies the rule across several `-S` options.
//!
//! # Matching a job's `host`
//!
//! See [`HostSpec::matches`]: a job names a host by its full name, or by its bare host name.

use std::collections::HashSet;
use std::fmt;

/// One entry of a host list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSpec {
    /// The entry as written without the slot count (`alice@node01:2222`, `node01`,
    /// `[::1]:22`); `localhost` for this machine (whether written `:` or `localhost`).
    pub name: String,
    /// The login user, when given as `user@`.
    pub user: Option<String>,
    /// The host to connect to (`node01`, `127.0.0.1`, `::1` without brackets); `localhost`
    /// for this machine.
    pub hostname: String,
    /// The SSH port, when given as `:port`.
    pub port: Option<u16>,
    /// The slot count `N`; `None` = ask the host for its CPU count.
    pub slots: Option<usize>,
    /// This machine (`:` or `localhost` without user or port): jobs run without SSH.
    pub local: bool,
    /// How the host's agent starts when not over SSH: a command template in which `<host>`
    /// stands for the shell-quoted host name (`srun --overlap -u -N1 -n1 -w <host> --`,
    /// `docker exec -i <host>`). `None`: over SSH (or locally, for this machine).
    pub launcher: Option<String>,
}

/// A host entry that could not be parsed. Every message names the offending entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// An empty entry: an empty list, `a,,b`, or a trailing comma.
    #[error("empty host entry in host list `{list}`")]
    EmptyEntry { list: String },
    /// `N` is not a positive whole number.
    #[error(
        "bad slot count `{slots}` in host entry `{entry}`: expected a whole number of at least 1"
    )]
    BadSlots { entry: String, slots: String },
    /// The port is not a number in 1..=65535.
    #[error("bad port `{port}` in host entry `{entry}`: expected a number from 1 to 65535")]
    BadPort { entry: String, port: String },
    /// No host name (`alice@`, `/4`, `:2222`).
    #[error("no host name in host entry `{entry}`")]
    EmptyHost { entry: String },
    /// `@host`: the user is empty.
    #[error("empty user name in host entry `{entry}`")]
    EmptyUser { entry: String },
    /// Any other malformed entry (whitespace inside, a leading `-`, unbalanced brackets...).
    #[error("bad host entry `{entry}`: {reason}")]
    BadEntry { entry: String, reason: String },
    /// `@slurm` (or `--slurm`) outside an allocation, or an allocation that does not parse.
    #[error("host entry `{entry}`: {reason}")]
    Slurm { entry: String, reason: String },
    /// The same host name appears twice.
    #[error("host `{name}` given twice")]
    Duplicate { name: String },
    /// An error on one line of an `--sshloginfile`.
    #[error("line {line}: {source}")]
    Line {
        line: usize,
        #[source]
        source: Box<HostError>,
    },
}

impl HostSpec {
    /// This machine with `slots` slots (`None` = its CPU count), named `localhost`.
    #[must_use]
    pub fn local(slots: Option<usize>) -> HostSpec {
        HostSpec {
            name: "localhost".to_string(),
            user: None,
            hostname: "localhost".to_string(),
            port: None,
            slots,
            local: true,
            launcher: None,
        }
    }

    /// The nodes of the Slurm allocation that `env` describes (see [`crate::slurm`]), each with
    /// the Slurm launcher; `slots` overrides the allocation's counts. `entry` names the host
    /// entry (or option) in errors.
    pub fn slurm_nodes(
        entry: &str,
        slots: Option<usize>,
        env: EnvLookup<'_>,
    ) -> Result<Vec<HostSpec>, HostError> {
        let nodes = crate::slurm::allocation(env).map_err(|reason| HostError::Slurm {
            entry: entry.to_string(),
            reason,
        })?;
        Ok(nodes
            .into_iter()
            .map(|n| HostSpec {
                name: n.name.clone(),
                user: None,
                hostname: n.name,
                port: None,
                slots: slots.or(n.slots),
                // a node of the allocation is reached through srun even when it is this machine
                local: false,
                launcher: Some(crate::slurm::LAUNCHER.to_string()),
            })
            .collect())
    }

    /// Parses one entry (no commas). See the module documentation for the syntax.
    pub fn parse(entry: &str) -> Result<HostSpec, HostError> {
        parse_entry(entry)
    }

    /// Whether a job's `host` value `wanted` names this host. It does when `wanted` is
    ///
    /// - the host's [`name`](Self::name), exactly (`alice@node01:2222`), or
    /// - its bare [`hostname`](Self::hostname), ignoring ASCII case as DNS does (`node01`,
    ///   `NODE01`), or
    /// - for this machine: `localhost` or `:`.
    ///
    /// A bare host name shared by several entries (`alice@node01`, `bob@node01`) matches all of
    /// them: a job's `host` is a restriction, "any of these", so naming the machine lets the job
    /// run under either login; write the full name to pick one. A user name alone or
    /// `user@host` without the written port does not match.
    #[must_use]
    pub fn matches(&self, wanted: &str) -> bool {
        if wanted == self.name {
            return true;
        }
        if self.local {
            return wanted == ":" || wanted.eq_ignore_ascii_case("localhost");
        }
        let bare = wanted
            .strip_prefix('[')
            .and_then(|w| w.strip_suffix(']'))
            .unwrap_or(wanted);
        bare.eq_ignore_ascii_case(&self.hostname)
    }

    /// The destination to hand to `ssh`/the `openssh` crate: `ssh://[user@]host[:port]`
    /// (IPv6 addresses in brackets). Meaningless for a local host.
    #[must_use]
    pub fn ssh_destination(&self) -> String {
        let mut s = String::from("ssh://");
        if let Some(user) = &self.user {
            s.push_str(user);
            s.push('@');
        }
        if self.hostname.contains(':') {
            s.push('[');
            s.push_str(&self.hostname);
            s.push(']');
        } else {
            s.push_str(&self.hostname);
        }
        if let Some(port) = self.port {
            s.push(':');
            s.push_str(&port.to_string());
        }
        s
    }
}

impl fmt::Display for HostSpec {
    /// The entry in canonical form: `name`, then `/N` when a slot count was given.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if let Some(n) = self.slots {
            write!(f, "/{n}")?;
        }
        if let Some(cmd) = &self.launcher {
            write!(f, "={cmd}")?;
        }
        Ok(())
    }
}

/// Looks up an environment variable (for `@slurm`): `|name| std::env::var(name).ok()`.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Parses a comma-separated `-S` list. Empty entries and duplicated names are errors.
/// `@slurm` reads this process's environment.
pub fn parse_sshlogin_list(list: &str) -> Result<Vec<HostSpec>, HostError> {
    parse_sshlogin_list_env(list, &process_env)
}

/// [`parse_sshlogin_list`] with `@slurm` read from `env`.
pub fn parse_sshlogin_list_env(list: &str, env: EnvLookup<'_>) -> Result<Vec<HostSpec>, HostError> {
    let hosts = parse_list_entries(list, false, env)?;
    check_unique(&hosts)?;
    Ok(hosts)
}

/// Parses the text of an `--sshloginfile`: one entry a line (a line may also hold a comma
/// list), `#` starts a comment that runs to the end of the line, blank lines are ignored.
/// Errors carry the 1-based line number. A file with no entry at all gives an empty list;
/// duplicated names are errors, also across lines.
pub fn parse_sshloginfile(text: &str) -> Result<Vec<HostSpec>, HostError> {
    parse_sshloginfile_env(text, &process_env)
}

/// [`parse_sshloginfile`] with `@slurm` read from `env`.
pub fn parse_sshloginfile_env(text: &str, env: EnvLookup<'_>) -> Result<Vec<HostSpec>, HostError> {
    let mut hosts = Vec::new();
    let mut seen = HashSet::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let wrap = |e: HostError| HostError::Line {
            line: i + 1,
            source: Box::new(e),
        };
        for host in parse_list_entries(line, true, env).map_err(wrap)? {
            if !seen.insert(host.name.clone()) {
                return Err(wrap(HostError::Duplicate { name: host.name }));
            }
            hosts.push(host);
        }
    }
    Ok(hosts)
}

/// Checks that no name appears twice, e.g. across several `-S` options or an `-S` list and an
/// `--sshloginfile`.
pub fn check_unique(hosts: &[HostSpec]) -> Result<(), HostError> {
    let mut seen = HashSet::new();
    for h in hosts {
        if !seen.insert(h.name.as_str()) {
            return Err(HostError::Duplicate {
                name: h.name.clone(),
            });
        }
    }
    Ok(())
}

/// Splits a list into entries at the commas outside brackets. After an entry's `=` (its
/// launcher) brackets no longer count; with `rest_of_line`, the launcher takes the rest of
/// the list, commas included (an `--sshloginfile` line).
fn split_entries(list: &str, rest_of_line: bool) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut depth = 0usize;
    let mut in_launcher = false;
    let mut start = 0;
    for (i, c) in list.char_indices() {
        match c {
            '=' if !in_launcher => in_launcher = true,
            '[' if !in_launcher => depth += 1,
            ']' if !in_launcher => depth = depth.saturating_sub(1),
            ',' if (depth == 0 || in_launcher) && !(in_launcher && rest_of_line) => {
                pieces.push(&list[start..i]);
                start = i + 1;
                depth = 0;
                in_launcher = false;
            }
            _ => {}
        }
    }
    pieces.push(&list[start..]);
    pieces
}

fn parse_list_entries(
    list: &str,
    rest_of_line: bool,
    env: EnvLookup<'_>,
) -> Result<Vec<HostSpec>, HostError> {
    let mut hosts = Vec::new();
    for entry in split_entries(list, rest_of_line) {
        if entry.trim().is_empty() {
            return Err(HostError::EmptyEntry {
                list: list.to_string(),
            });
        }
        hosts.extend(parse_expanding(entry, env)?);
    }
    Ok(hosts)
}

/// One entry of a list: `@slurm`, a range, or a plain entry, each with an optional `=CMD`.
fn parse_expanding(raw: &str, env: EnvLookup<'_>) -> Result<Vec<HostSpec>, HostError> {
    let whole = raw.trim();
    let (entry, launcher) = match whole.split_once('=') {
        None => (whole, None),
        Some((e, cmd)) => {
            let cmd = cmd.trim();
            if cmd.is_empty() {
                return Err(HostError::BadEntry {
                    entry: whole.to_string(),
                    reason: "no launcher command after `=`".to_string(),
                });
            }
            (e.trim(), Some(cmd))
        }
    };
    if let Some(slots) = slurm_entry(entry) {
        let slots = slots.map_err(|s| HostError::BadSlots {
            entry: entry.to_string(),
            slots: s.to_string(),
        })?;
        let mut nodes = HostSpec::slurm_nodes(entry, slots, env)?;
        if let Some(cmd) = launcher {
            for n in &mut nodes {
                n.launcher = Some(cmd.to_string());
            }
        }
        return Ok(nodes);
    }
    if entry.chars().any(char::is_whitespace) {
        // before the range expansion, whose errors would say less
        return parse_entry(entry).map(|h| vec![h]);
    }
    let expanded = crate::hostlist::expand_entry(entry).map_err(|e| HostError::BadEntry {
        entry: entry.to_string(),
        reason: e.reason,
    })?;
    let mut hosts = Vec::with_capacity(expanded.len());
    for one in &expanded {
        let mut host = parse_entry(one)?;
        if let Some(cmd) = launcher {
            if host.local {
                return Err(HostError::BadEntry {
                    entry: whole.to_string(),
                    reason: "a launcher needs a host name (`:` and `localhost` are this \
                             machine, run without one)"
                        .to_string(),
                });
            }
            host.launcher = Some(cmd.to_string());
        }
        hosts.push(host);
    }
    Ok(hosts)
}

/// `@slurm`, `@slurm/N` or `N/@slurm`: `Some(Ok(slots))`; a bad `N`: `Some(Err(N))`; any
/// other entry: `None`.
fn slurm_entry(entry: &str) -> Option<Result<Option<usize>, &str>> {
    const NAME: &str = "@slurm";
    if entry == NAME {
        return Some(Ok(None));
    }
    let n = entry
        .strip_prefix("@slurm/")
        .or_else(|| entry.strip_suffix("/@slurm"))?;
    Some(match n.parse::<usize>() {
        Ok(k) if k >= 1 && is_digits(n) => Ok(Some(k)),
        _ => Err(n),
    })
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn parse_entry(raw: &str) -> Result<HostSpec, HostError> {
    let entry = raw.trim();
    let bad = |reason: &str| HostError::BadEntry {
        entry: entry.to_string(),
        reason: reason.to_string(),
    };
    if entry.is_empty() {
        return Err(HostError::EmptyEntry {
            list: raw.to_string(),
        });
    }
    if entry.chars().any(char::is_whitespace) {
        return Err(bad(
            "whitespace inside an entry (a custom ssh command is not supported; use --ssh-config)",
        ));
    }

    if entry.matches('/').count() > 1 {
        return Err(bad("more than one `/`"));
    }
    // Slot count: GNU's `N/login` first, then `login/N`.
    let (login, slots_text) = match entry.split_once('/') {
        None => (entry, None),
        Some((a, b)) if is_digits(a) => (b, Some(a)),
        Some((a, b)) => (a, Some(b)),
    };
    let slots = match slots_text {
        None => None,
        Some(s) => match s.parse::<usize>() {
            Ok(n) if n >= 1 && is_digits(s) => Some(n),
            _ => {
                return Err(HostError::BadSlots {
                    entry: entry.to_string(),
                    slots: s.to_string(),
                })
            }
        },
    };
    if login.is_empty() {
        return Err(HostError::EmptyHost {
            entry: entry.to_string(),
        });
    }

    if login == ":" {
        return Ok(HostSpec::local(slots));
    }

    let (user, hostport) = match login.rsplit_once('@') {
        None => (None, login),
        Some(("", _)) => {
            return Err(HostError::EmptyUser {
                entry: entry.to_string(),
            })
        }
        Some((u, h)) => (Some(u), h),
    };
    if let Some(u) = user {
        if u.starts_with('-') {
            return Err(bad("a user name may not start with `-`"));
        }
    }

    let (hostname, port_text) = split_host_port(hostport).map_err(|r| bad(&r))?;
    if hostname.is_empty() {
        return Err(HostError::EmptyHost {
            entry: entry.to_string(),
        });
    }
    if hostname.starts_with('-') {
        return Err(bad("a host name may not start with `-`"));
    }
    if hostname.contains(['[', ']', '@']) {
        return Err(bad("stray `[`, `]` or `@` in the host name"));
    }
    let port = match port_text {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n >= 1 && is_digits(p) => Some(n),
            _ => {
                return Err(HostError::BadPort {
                    entry: entry.to_string(),
                    port: p.to_string(),
                })
            }
        },
    };

    if user.is_none() && port.is_none() && hostname.eq_ignore_ascii_case("localhost") {
        return Ok(HostSpec::local(slots));
    }

    Ok(HostSpec {
        name: login.to_string(),
        user: user.map(str::to_string),
        hostname: hostname.to_string(),
        port,
        slots,
        local: false,
        launcher: None,
    })
}

/// Splits `host[:port]`, `[v6]:port`, `[v6]` or a bare IPv6 address (two or more colons, no
/// port). Returns the host without brackets and the port text, if any.
fn split_host_port(s: &str) -> Result<(&str, Option<&str>), String> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| "`[` without a closing `]`".to_string())?;
        if after.is_empty() {
            return Ok((host, None));
        }
        return match after.strip_prefix(':') {
            Some(port) => Ok((host, Some(port))),
            None => Err(format!("unexpected `{after}` after `]`")),
        };
    }
    match s.split_once(':') {
        Some((h, p)) if !p.contains(':') => Ok((h, Some(p))),
        // No colon, or several (a bare IPv6 address): no port.
        _ => Ok((s, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(entry: &str) -> HostSpec {
        HostSpec::parse(entry).unwrap_or_else(|e| panic!("{entry}: {e}"))
    }

    fn err(entry: &str) -> HostError {
        match HostSpec::parse(entry) {
            Ok(h) => panic!("{entry} parsed as {h:?}"),
            Err(e) => e,
        }
    }

    fn remote(
        name: &str,
        user: Option<&str>,
        host: &str,
        port: Option<u16>,
        slots: Option<usize>,
    ) -> HostSpec {
        HostSpec {
            name: name.to_string(),
            user: user.map(str::to_string),
            hostname: host.to_string(),
            port,
            slots,
            local: false,
            launcher: None,
        }
    }

    #[test]
    fn plain_host() {
        assert_eq!(one("node01"), remote("node01", None, "node01", None, None));
    }

    #[test]
    fn full_entry_trailing_slots() {
        assert_eq!(
            one("alice@node01:2222/4"),
            remote(
                "alice@node01:2222",
                Some("alice"),
                "node01",
                Some(2222),
                Some(4)
            )
        );
    }

    #[test]
    fn gnu_leading_slots() {
        assert_eq!(
            one("4/node01"),
            remote("node01", None, "node01", None, Some(4))
        );
        assert_eq!(
            one("8/alice@node02:2200"),
            remote(
                "alice@node02:2200",
                Some("alice"),
                "node02",
                Some(2200),
                Some(8)
            )
        );
    }

    #[test]
    fn user_and_port_alone() {
        assert_eq!(
            one("bob@10.0.0.7"),
            remote("bob@10.0.0.7", Some("bob"), "10.0.0.7", None, None)
        );
        assert_eq!(
            one("127.0.0.1:2222/2"),
            remote("127.0.0.1:2222", None, "127.0.0.1", Some(2222), Some(2))
        );
    }

    #[test]
    fn user_with_at_sign_splits_at_last() {
        let h = one("a@b@node");
        assert_eq!(h.user.as_deref(), Some("a@b"));
        assert_eq!(h.hostname, "node");
    }

    #[test]
    fn ipv6() {
        assert_eq!(
            one("[::1]:22/3"),
            remote("[::1]:22", None, "::1", Some(22), Some(3))
        );
        assert_eq!(one("::1"), remote("::1", None, "::1", None, None));
        assert_eq!(
            one("root@[fe80::1]"),
            remote("root@[fe80::1]", Some("root"), "fe80::1", None, None)
        );
        assert_eq!(
            one("2/fe80::1"),
            remote("fe80::1", None, "fe80::1", None, Some(2))
        );
    }

    #[test]
    fn local_forms() {
        for (e, slots) in [
            (":", None),
            (":/4", Some(4)),
            ("4/:", Some(4)),
            ("localhost", None),
            ("localhost/4", Some(4)),
            ("4/localhost", Some(4)),
            ("LOCALHOST", None),
        ] {
            assert_eq!(one(e), HostSpec::local(slots), "{e}");
        }
    }

    #[test]
    fn localhost_with_user_or_port_is_remote() {
        let h = one("alice@localhost");
        assert!(!h.local);
        assert_eq!(h.name, "alice@localhost");
        let h = one("localhost:22/2");
        assert!(!h.local);
        assert_eq!(h.port, Some(22));
        assert_eq!(h.slots, Some(2));
    }

    #[test]
    fn whitespace_around_is_ignored() {
        assert_eq!(one("  node01/2 "), one("node01/2"));
    }

    #[test]
    fn empty_entries() {
        assert!(matches!(err(""), HostError::EmptyEntry { .. }));
        assert!(matches!(err("  "), HostError::EmptyEntry { .. }));
        let e = parse_sshlogin_list("a,,b").unwrap_err();
        assert!(matches!(e, HostError::EmptyEntry { .. }));
        assert!(e.to_string().contains("`a,,b`"), "{e}");
        assert!(parse_sshlogin_list("a,").is_err());
        assert!(parse_sshlogin_list("").is_err());
    }

    #[test]
    fn bad_slots() {
        for (e, s) in [
            ("node01/0", "0"),
            ("0/node01", "0"),
            ("node01/x", "x"),
            ("node01/", ""),
            ("node01/-1", "-1"),
            ("node01/+3", "+3"),
            ("node01/99999999999999999999999", "99999999999999999999999"),
        ] {
            match err(e) {
                HostError::BadSlots { entry, slots } => {
                    assert_eq!(entry, e);
                    assert_eq!(slots, s);
                }
                other => panic!("{e}: {other:?}"),
            }
        }
        let msg = err("node01/0").to_string();
        assert!(msg.contains("`node01/0`") && msg.contains("`0`"), "{msg}");
    }

    #[test]
    fn bad_ports() {
        for (e, p) in [
            ("node01:", ""),
            ("node01:0", "0"),
            ("node01:65536", "65536"),
            ("node01:ssh", "ssh"),
            ("node01:+22", "+22"),
            ("[::1]:x/2", "x"),
        ] {
            match err(e) {
                HostError::BadPort { entry, port } => {
                    assert_eq!(entry, e);
                    assert_eq!(port, p);
                }
                other => panic!("{e}: {other:?}"),
            }
        }
        assert_eq!(one("node01:65535").port, Some(65535));
    }

    #[test]
    fn empty_host() {
        for e in ["/4", "4/", "alice@", "alice@/2", ":2222", "[]", "[]:22"] {
            match err(e) {
                HostError::EmptyHost { entry } => assert_eq!(entry, e),
                other => panic!("{e}: {other:?}"),
            }
        }
        assert!(err("alice@").to_string().contains("`alice@`"));
    }

    #[test]
    fn empty_user() {
        assert!(matches!(err("@node01"), HostError::EmptyUser { .. }));
    }

    #[test]
    fn malformed_entries() {
        for e in [
            "ssh -p 22 node01",
            "-oProxyCommand=x",
            "-node",
            "alice@-node",
            "-alice@node",
            "4/node/4",
            "a/b/c",
            "[::1",
            "[::1]x",
            "no]de",
        ] {
            match err(e) {
                HostError::BadEntry { entry, .. } => assert_eq!(entry, e),
                other => panic!("{e}: {other:?}"),
            }
        }
    }

    #[test]
    fn list_parsing() {
        let hosts = parse_sshlogin_list("h1/2, 4/h2 ,:,alice@h3:2200").unwrap();
        let names: Vec<_> = hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["h1", "h2", "localhost", "alice@h3:2200"]);
        assert_eq!(hosts[0].slots, Some(2));
        assert_eq!(hosts[1].slots, Some(4));
        assert!(hosts[2].local);
        assert_eq!(hosts[3].slots, None);
    }

    #[test]
    fn list_error_names_the_entry() {
        let e = parse_sshlogin_list("h1/2,h2/zero,h3").unwrap_err();
        assert!(e.to_string().contains("`h2/zero`"), "{e}");
    }

    #[test]
    fn duplicates_are_errors() {
        let e = parse_sshlogin_list("h1/2,h2,h1/4").unwrap_err();
        assert_eq!(
            e,
            HostError::Duplicate {
                name: "h1".to_string()
            }
        );
        assert_eq!(e.to_string(), "host `h1` given twice");
        // both local forms are one host
        assert!(parse_sshlogin_list(":,localhost/2").is_err());
        // different users or ports are different hosts
        assert!(parse_sshlogin_list("h1,alice@h1,h1:2222,bob@h1:2222").is_ok());
    }

    #[test]
    fn check_unique_across_lists() {
        let mut all = parse_sshlogin_list("h1,h2").unwrap();
        all.extend(parse_sshlogin_list("h3").unwrap());
        assert!(check_unique(&all).is_ok());
        all.extend(parse_sshlogin_list("h2/8").unwrap());
        assert!(check_unique(&all).is_err());
    }

    #[test]
    fn loginfile() {
        let text = "\
# cluster A
node01/4
  4/node02   # trailing comment

alice@node03:2222,:/2
#node04
";
        let hosts = parse_sshloginfile(text).unwrap();
        let shown: Vec<String> = hosts.iter().map(std::string::ToString::to_string).collect();
        assert_eq!(
            shown,
            ["node01/4", "node02/4", "alice@node03:2222", "localhost/2"]
        );
    }

    #[test]
    fn loginfile_empty_and_crlf() {
        assert!(parse_sshloginfile("").unwrap().is_empty());
        assert!(parse_sshloginfile("# nothing\n\n   \n").unwrap().is_empty());
        let hosts = parse_sshloginfile("a/2\r\nb\r\n").unwrap();
        assert_eq!(hosts.len(), 2);
        assert_eq!(hosts[1].name, "b");
    }

    #[test]
    fn loginfile_errors_carry_line_numbers() {
        let e = parse_sshloginfile("a\n# c\nb/0\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 3: bad slot count `0` in host entry `b/0`: expected a whole number of at least 1"
        );
        let e = parse_sshloginfile("a\nb\na/3\n").unwrap_err();
        assert_eq!(e.to_string(), "line 3: host `a` given twice");
        let e = parse_sshloginfile("a,,b\n").unwrap_err();
        assert!(e.to_string().starts_with("line 1: empty host entry"), "{e}");
    }

    #[test]
    fn matching() {
        let h = one("alice@node01:2222/4");
        assert!(h.matches("alice@node01:2222"));
        assert!(h.matches("node01"));
        assert!(h.matches("NODE01"));
        assert!(!h.matches("alice@node01"));
        assert!(!h.matches("alice@node01:2222/4"));
        assert!(!h.matches("node011"));
        assert!(!h.matches("alice"));
        assert!(!h.matches(""));

        let plain = one("node01");
        assert!(plain.matches("node01"));
        assert!(!plain.matches("node02"));

        let v6 = one("[::1]:2222");
        assert!(v6.matches("[::1]:2222"));
        assert!(v6.matches("::1"));
        assert!(v6.matches("[::1]"));

        let local = one(":/4");
        assert!(local.matches("localhost"));
        assert!(local.matches(":"));
        assert!(!local.matches("127.0.0.1"));

        // an ssh host that happens to be localhost matches by its bare name too
        let ssh_local = one("alice@localhost");
        assert!(ssh_local.matches("localhost"));
        assert!(ssh_local.matches("alice@localhost"));
    }

    #[test]
    fn shared_bare_name_matches_every_login() {
        let hosts = parse_sshlogin_list("alice@node01,bob@node01,node02").unwrap();
        let hit: Vec<_> = hosts
            .iter()
            .filter(|h| h.matches("node01"))
            .map(|h| h.name.as_str())
            .collect();
        assert_eq!(hit, ["alice@node01", "bob@node01"]);
    }

    #[test]
    fn ssh_destinations() {
        assert_eq!(one("node01").ssh_destination(), "ssh://node01");
        assert_eq!(
            one("alice@node01:2222/4").ssh_destination(),
            "ssh://alice@node01:2222"
        );
        assert_eq!(one("[::1]:22").ssh_destination(), "ssh://[::1]:22");
        assert_eq!(one("root@::1").ssh_destination(), "ssh://root@[::1]");
    }

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: std::collections::HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k: &str| map.get(k).cloned()
    }

    fn names(hosts: &[HostSpec]) -> Vec<&str> {
        hosts.iter().map(|h| h.name.as_str()).collect()
    }

    #[test]
    fn ranges_expand_to_one_entry_per_host() {
        let hosts = parse_sshlogin_list("alice@node[01-03]:2222/4,n[1-2,7],x").unwrap();
        assert_eq!(
            names(&hosts),
            [
                "alice@node01:2222",
                "alice@node02:2222",
                "alice@node03:2222",
                "n1",
                "n2",
                "n7",
                "x"
            ]
        );
        assert_eq!(
            hosts[2],
            remote(
                "alice@node03:2222",
                Some("alice"),
                "node03",
                Some(2222),
                Some(4)
            )
        );
        assert!(hosts[2].matches("node03"));
        let hosts = parse_sshlogin_list("4/r[1-2]n[1-2]").unwrap();
        assert_eq!(names(&hosts), ["r1n1", "r1n2", "r2n1", "r2n2"]);
        assert!(hosts.iter().all(|h| h.slots == Some(4)));
        // IPv6 brackets are not ranges
        assert_eq!(
            names(&parse_sshlogin_list("[::1]:22/2,n[1-2]").unwrap()),
            ["[::1]:22", "n1", "n2"]
        );
    }

    #[test]
    fn range_errors_name_the_entry() {
        for (list, entry, what) in [
            ("a,n[1-3", "n[1-3", "closing"),
            ("n[3-1]/2", "n[3-1]/2", "reversed"),
            ("n[1-x]", "n[1-x]", "not a number"),
            ("n[1-200000]", "n[1-200000]", "more than 100000"),
        ] {
            let e = parse_sshlogin_list(list).unwrap_err();
            match &e {
                HostError::BadEntry { entry: got, reason } => {
                    assert_eq!(got, entry);
                    assert!(reason.contains(what), "{list}: {e}");
                }
                other => panic!("{list}: {other:?}"),
            }
        }
        // duplicates after expansion
        let e = parse_sshlogin_list("n[1-3],n2").unwrap_err();
        assert_eq!(e.to_string(), "host `n2` given twice");
        assert!(parse_sshlogin_list("n[1-2,2]").is_err());
    }

    #[test]
    fn launchers() {
        let hosts = parse_sshlogin_list(
            "c[1-2]/2=docker exec -i <host>, plain,k=kubectl exec -i <host> --",
        )
        .unwrap();
        assert_eq!(names(&hosts), ["c1", "c2", "plain", "k"]);
        assert_eq!(hosts[0].launcher.as_deref(), Some("docker exec -i <host>"));
        assert_eq!(hosts[1].launcher.as_deref(), Some("docker exec -i <host>"));
        assert_eq!(hosts[1].slots, Some(2));
        assert!(!hosts[1].local);
        assert_eq!(hosts[2].launcher, None);
        assert_eq!(
            hosts[3].launcher.as_deref(),
            Some("kubectl exec -i <host> --")
        );
        // brackets inside a launcher do not hold the comma back
        let hosts = parse_sshlogin_list("a=sh -c '[ -x y', b").unwrap();
        assert_eq!(names(&hosts), ["a", "b"]);
        assert_eq!(hosts[0].to_string(), "a=sh -c '[ -x y'");
        for bad in ["a=", "a= ", ":=docker exec -i x", "localhost/2=x"] {
            assert!(
                matches!(parse_sshlogin_list(bad), Err(HostError::BadEntry { .. })),
                "{bad}"
            );
        }
        // whitespace outside the launcher is still an error
        assert!(parse_sshlogin_list("a b=cmd").is_err());
    }

    #[test]
    fn loginfile_launcher_takes_the_rest_of_the_line() {
        let text = "a,b=ssh-like -o x,y <host>  # comment\nc[1-2]\n";
        let hosts = parse_sshloginfile(text).unwrap();
        assert_eq!(names(&hosts), ["a", "b", "c1", "c2"]);
        assert_eq!(hosts[1].launcher.as_deref(), Some("ssh-like -o x,y <host>"));
    }

    #[test]
    fn slurm_entry() {
        let env = env_of(&[
            ("SLURM_JOB_NODELIST", "n[1-2]"),
            ("SLURM_JOB_CPUS_PER_NODE", "2,1"),
        ]);
        let hosts = parse_sshlogin_list_env("@slurm", &env).unwrap();
        assert_eq!(names(&hosts), ["n1", "n2"]);
        assert_eq!(hosts[0].slots, Some(2));
        assert_eq!(hosts[1].slots, Some(1));
        assert!(hosts
            .iter()
            .all(|h| !h.local && h.user.is_none() && h.port.is_none()));
        assert_eq!(hosts[0].launcher.as_deref(), Some(crate::slurm::LAUNCHER));
        let hosts = parse_sshlogin_list_env("@slurm/8,:/1", &env).unwrap();
        assert_eq!(
            hosts.iter().map(|h| h.slots).collect::<Vec<_>>(),
            [Some(8), Some(8), Some(1)]
        );
        assert_eq!(
            parse_sshlogin_list_env("3/@slurm", &env).unwrap()[1].slots,
            Some(3)
        );
        let hosts = parse_sshlogin_list_env("@slurm=srun -w <host> --", &env).unwrap();
        assert_eq!(hosts[1].launcher.as_deref(), Some("srun -w <host> --"));
        assert!(matches!(
            parse_sshlogin_list_env("@slurm/0", &env),
            Err(HostError::BadSlots { .. })
        ));
        // a node named twice is a duplicate as any host
        assert!(parse_sshlogin_list_env("@slurm,n1", &env).is_err());
        // outside an allocation
        let none = env_of(&[]);
        let e = parse_sshlogin_list_env("@slurm", &none).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("host entry `@slurm`: not inside a Slurm allocation"),
            "{e}"
        );
        assert!(e.to_string().contains("SLURM_JOB_NODELIST"), "{e}");
        // `@slurmx` is not the Slurm entry (and not a valid entry either)
        assert!(matches!(
            parse_sshlogin_list_env("@slurmx", &env),
            Err(HostError::EmptyUser { .. })
        ));
    }

    #[test]
    fn display_round_trips() {
        for e in [
            "node01",
            "node01/3",
            "alice@node01:2222/4",
            "[::1]:22/2",
            "localhost/2",
        ] {
            let h = one(e);
            assert_eq!(h.to_string(), e);
            assert_eq!(one(&h.to_string()), h);
        }
        assert_eq!(one("4/alice@n:22").to_string(), "alice@n:22/4");
    }
}
