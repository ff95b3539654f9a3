//! The hostlist syntax of Slurm, pdsh and ClusterShell (pure code, no I/O).
//!
//! # Host ranges
//!
//! | pattern | hosts |
//! |---|---|
//! | `node[01-03]` | `node01 node02 node03` (the lower bound's zero padding is kept) |
//! | `n[1-3,7]` | `n1 n2 n3 n7` |
//! | `n[8-10]` | `n8 n9 n10` |
//! | `r[1-2]n[1-2]` | `r1n1 r1n2 r2n1 r2n2` (several groups: cartesian, the last one fastest) |
//! | `n[1-2]-ib` | `n1-ib n2-ib` |
//! | `a,b[1-2]` | a list: `a b1 b2` (commas outside brackets separate entries) |
//!
//! Bad patterns are errors naming the pattern: an unclosed `[`, a `]` without `[`, an empty
//! group, a reversed range (`n[5-3]`), anything but digits, `-` and `,` in a group, a number
//! of more than 18 digits, and a pattern or list that expands to more than [`MAX_HOSTS`]
//! hosts (counted before anything is allocated, so no value makes us allocate forever).
//!
//! # Counts
//!
//! `SLURM_TASKS_PER_NODE` and `SLURM_JOB_CPUS_PER_NODE` compress a list of numbers as
//! `2(x3),1` (= `2 2 2 1`): [`expand_counts`] and [`compress_counts`].

use std::fmt;

/// The most hosts one pattern or list may expand to (far more than any cluster has nodes).
pub const MAX_HOSTS: u64 = 100_000;

/// A pattern that could not be expanded; the message names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad host range `{pattern}`: {reason}")]
pub struct HostlistError {
    /// The pattern (one entry of a list) as given.
    pub pattern: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Splits a list at the commas outside brackets: `a,n[1-2,5],b` gives `a`, `n[1-2,5]`, `b`.
/// Pieces are not trimmed; an unclosed bracket keeps the rest of the list in the last piece
/// (for [`expand`] to report).
#[must_use]
pub fn split_list(list: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in list.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                pieces.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    pieces.push(&list[start..]);
    pieces
}

/// One piece of a parsed pattern.
#[derive(Debug)]
enum Part<'a> {
    Text(&'a str),
    /// Inclusive ranges with the zero-padding width of their lower bound.
    Group(Vec<(u64, u64, usize)>),
}

/// Parses one pattern. With `keep_ipv6`, a bracket group holding a `:` is literal text
/// (`[::1]:22`, as in `-S` entries).
fn parse(pattern: &str, keep_ipv6: bool) -> Result<Vec<Part<'_>>, HostlistError> {
    let bad = |reason: String| HostlistError {
        pattern: pattern.to_string(),
        reason,
    };
    let mut parts = Vec::new();
    let mut rest = pattern;
    let mut text_start = 0; // offset in `pattern` of pending literal text
    let mut pos = 0; // offset in `pattern` of `rest`
    while let Some(i) = rest.find(['[', ']']) {
        if rest.as_bytes()[i] == b']' {
            return Err(bad("`]` without `[`".into()));
        }
        let after = &rest[i + 1..];
        let close = after
            .find(']')
            .ok_or_else(|| bad("`[` without a closing `]`".into()))?;
        let inside = &after[..close];
        if inside.contains('[') {
            return Err(bad("`[` inside brackets".into()));
        }
        let consumed = i + 1 + close + 1;
        if keep_ipv6 && inside.contains(':') {
            // literal text: leave it in the pending text run
            pos += consumed;
            rest = &rest[consumed..];
            continue;
        }
        if pos + i > text_start {
            parts.push(Part::Text(&pattern[text_start..pos + i]));
        }
        parts.push(Part::Group(parse_group(inside).map_err(bad)?));
        pos += consumed;
        rest = &rest[consumed..];
        text_start = pos;
    }
    if pattern.len() > text_start {
        parts.push(Part::Text(&pattern[text_start..]));
    }
    Ok(parts)
}

fn parse_number(s: &str) -> Result<u64, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "`{s}` is not a number (a group holds numbers, ranges like 1-4, and commas)"
        ));
    }
    if s.len() > 18 {
        return Err(format!("`{s}` has more than 18 digits"));
    }
    s.parse::<u64>().map_err(|e| format!("`{s}`: {e}"))
}

fn parse_group(inside: &str) -> Result<Vec<(u64, u64, usize)>, String> {
    if inside.is_empty() {
        return Err("empty `[]`".into());
    }
    let mut ranges = Vec::new();
    for item in inside.split(',') {
        let (lo_text, hi_text) = item.split_once('-').unwrap_or((item, item));
        let lo = parse_number(lo_text)?;
        let hi = parse_number(hi_text)?;
        if hi < lo {
            return Err(format!("reversed range `{item}`"));
        }
        ranges.push((lo, hi, lo_text.len()));
    }
    Ok(ranges)
}

/// How many hosts `parts` expand to, or `None` past [`MAX_HOSTS`].
fn count(parts: &[Part<'_>]) -> Option<u64> {
    let mut total: u64 = 1;
    for part in parts {
        if let Part::Group(ranges) = part {
            let mut n: u64 = 0;
            for (lo, hi, _) in ranges {
                n = n.checked_add(hi - lo + 1)?;
            }
            total = total.checked_mul(n)?;
        }
        if total > MAX_HOSTS {
            return None;
        }
    }
    Some(total)
}

fn push_expansion(parts: &[Part<'_>], prefix: &mut String, out: &mut Vec<String>) {
    let Some((first, rest)) = parts.split_first() else {
        out.push(prefix.clone());
        return;
    };
    let len = prefix.len();
    match first {
        Part::Text(t) => {
            prefix.push_str(t);
            push_expansion(rest, prefix, out);
        }
        Part::Group(ranges) => {
            for &(lo, hi, width) in ranges {
                for n in lo..=hi {
                    prefix.push_str(&format!("{n:0width$}"));
                    push_expansion(rest, prefix, out);
                    prefix.truncate(len);
                }
            }
        }
    }
    prefix.truncate(len);
}

fn expand_parts(pattern: &str, parts: &[Part<'_>]) -> Result<Vec<String>, HostlistError> {
    let n = count(parts).ok_or_else(|| HostlistError {
        pattern: pattern.to_string(),
        reason: format!("expands to more than {MAX_HOSTS} hosts"),
    })?;
    // `count` is at most MAX_HOSTS, so the capacity always fits.
    let mut out = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
    push_expansion(parts, &mut String::new(), &mut out);
    Ok(out)
}

/// Expands one pattern (no list): `node[01-03]` gives `node01`, `node02`, `node03`. A pattern
/// without brackets is itself.
pub fn expand_pattern(pattern: &str) -> Result<Vec<String>, HostlistError> {
    let parts = parse(pattern, false)?;
    expand_parts(pattern, &parts)
}

/// As [`expand_pattern`], but a bracket group holding a `:` (an IPv6 literal such as
/// `[::1]:22`) is kept as written: for `-S` entries.
pub fn expand_entry(pattern: &str) -> Result<Vec<String>, HostlistError> {
    let parts = parse(pattern, true)?;
    expand_parts(pattern, &parts)
}

/// Expands a list (`SLURM_JOB_NODELIST`): pieces split by [`split_list`], each trimmed and
/// expanded, in order. Empty pieces are errors; so is a list of more than [`MAX_HOSTS`]
/// hosts in all.
pub fn expand(list: &str) -> Result<Vec<String>, HostlistError> {
    let mut out = Vec::new();
    for piece in split_list(list) {
        let piece = piece.trim();
        if piece.is_empty() {
            return Err(HostlistError {
                pattern: list.to_string(),
                reason: "empty entry".into(),
            });
        }
        let parts = parse(piece, false)?;
        let n = count(&parts).unwrap_or(u64::MAX);
        if n.saturating_add(out.len() as u64) > MAX_HOSTS {
            return Err(HostlistError {
                pattern: list.to_string(),
                reason: format!("expands to more than {MAX_HOSTS} hosts"),
            });
        }
        out.extend(expand_parts(piece, &parts)?);
    }
    Ok(out)
}

/// Splits a host name into the text before its trailing digits and those digits.
fn split_digits(host: &str) -> (&str, &str) {
    let cut = host.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    host.split_at(cut)
}

/// Compresses a list of host names into the hostlist syntax, keeping their order:
/// `n1,n2,n3,n7` gives `n[1-3,7]`; names that do not end in digits stay as they are. It is
/// the inverse of [`expand`]: `expand(&compress(h)) == h` for names without brackets or
/// commas whose trailing digits are at most 18.
pub fn compress<S: AsRef<str>>(hosts: &[S]) -> String {
    struct Run<'a> {
        prefix: &'a str,
        width: usize,
        ranges: Vec<(u64, u64)>,
    }
    impl fmt::Display for Run<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            let w = self.width;
            let one = |f: &mut fmt::Formatter<'_>, (lo, hi): (u64, u64)| {
                if lo == hi {
                    write!(f, "{lo:0w$}")
                } else {
                    write!(f, "{lo:0w$}-{hi:0w$}")
                }
            };
            if self.ranges.len() == 1 && self.ranges[0].0 == self.ranges[0].1 {
                write!(f, "{}", self.prefix)?;
                return one(f, self.ranges[0]);
            }
            write!(f, "{}[", self.prefix)?;
            for (i, r) in self.ranges.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                one(f, *r)?;
            }
            f.write_str("]")
        }
    }
    let mut out: Vec<String> = Vec::new();
    let mut run: Option<Run<'_>> = None;
    for host in hosts {
        let host = host.as_ref();
        let (prefix, digits) = split_digits(host);
        let number = if digits.is_empty() || digits.len() > 18 {
            None
        } else {
            digits.parse::<u64>().ok()
        };
        let Some(n) = number else {
            if let Some(r) = run.take() {
                out.push(r.to_string());
            }
            out.push(host.to_string());
            continue;
        };
        if let Some(r) = run.as_mut() {
            let w = r.width;
            if r.prefix == prefix && format!("{n:0w$}") == digits {
                match r.ranges.last_mut() {
                    Some(last) if last.1.checked_add(1) == Some(n) => last.1 = n,
                    _ => r.ranges.push((n, n)),
                }
                continue;
            }
        }
        if let Some(r) = run.take() {
            out.push(r.to_string());
        }
        run = Some(Run {
            prefix,
            // a zero-padded number fixes the width; any other prints as itself at width 1
            width: if digits.starts_with('0') {
                digits.len()
            } else {
                1
            },
            ranges: vec![(n, n)],
        });
    }
    if let Some(r) = run.take() {
        out.push(r.to_string());
    }
    out.join(",")
}

/// Expands Slurm's compressed counts: `2(x3),1` gives `[2, 2, 2, 1]`. Errors name the text;
/// more than [`MAX_HOSTS`] counts in all is an error.
pub fn expand_counts(text: &str) -> Result<Vec<usize>, String> {
    let bad = |why: &str| format!("bad count list `{text}`: {why}");
    let mut out: Vec<usize> = Vec::new();
    for item in text.split(',') {
        let item = item.trim();
        let (value, times) = match item.split_once('(') {
            None => (item, "1"),
            Some((v, rest)) => {
                let times = rest
                    .strip_prefix('x')
                    .and_then(|r| r.strip_suffix(')'))
                    .ok_or_else(|| bad(&format!("`{item}` is not N or N(xK)")))?;
                (v, times)
            }
        };
        let num = |s: &str| -> Result<u64, String> {
            if s.is_empty() || s.len() > 18 || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad(&format!("`{item}` is not N or N(xK)")));
            }
            s.parse::<u64>().map_err(|e| bad(&e.to_string()))
        };
        let value = num(value)?;
        let times = num(times)?;
        if times == 0 {
            return Err(bad(&format!("`{item}` repeats zero times")));
        }
        if times.saturating_add(out.len() as u64) > MAX_HOSTS {
            return Err(bad(&format!("more than {MAX_HOSTS} counts")));
        }
        let value = usize::try_from(value).map_err(|e| bad(&e.to_string()))?;
        let times = usize::try_from(times).map_err(|e| bad(&e.to_string()))?;
        out.extend(std::iter::repeat_n(value, times));
    }
    Ok(out)
}

/// Compresses counts as Slurm does: `[2, 2, 2, 1]` gives `2(x3),1`.
#[must_use]
pub fn compress_counts(counts: &[usize]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < counts.len() {
        let v = counts[i];
        let mut j = i + 1;
        while j < counts.len() && counts[j] == v {
            j += 1;
        }
        out.push(if j - i == 1 {
            v.to_string()
        } else {
            format!("{v}(x{})", j - i)
        });
        i = j;
    }
    out.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ex(s: &str) -> Vec<String> {
        expand(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn err(s: &str) -> String {
        match expand(s) {
            Ok(h) => panic!("{s} expanded to {h:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn plain_names_and_lists() {
        assert_eq!(ex("node01"), ["node01"]);
        assert_eq!(ex("a, b ,c"), ["a", "b", "c"]);
    }

    #[test]
    fn ranges_keep_padding() {
        assert_eq!(ex("node[01-03]"), ["node01", "node02", "node03"]);
        assert_eq!(ex("n[8-10]"), ["n8", "n9", "n10"]);
        assert_eq!(ex("n[08-10]"), ["n08", "n09", "n10"]);
        assert_eq!(ex("n[1-3,7]"), ["n1", "n2", "n3", "n7"]);
        assert_eq!(ex("n[7]"), ["n7"]);
        assert_eq!(ex("n[001-002]x"), ["n001x", "n002x"]);
    }

    #[test]
    fn several_groups_are_cartesian() {
        assert_eq!(ex("r[1-2]n[1-2]"), ["r1n1", "r1n2", "r2n1", "r2n2"]);
        assert_eq!(ex("n[1-2]-ib"), ["n1-ib", "n2-ib"]);
        assert_eq!(ex("[1-2]x"), ["1x", "2x"]);
    }

    #[test]
    fn lists_of_ranges() {
        assert_eq!(ex("a[1-2],b,c[5,7-8]"), ["a1", "a2", "b", "c5", "c7", "c8"]);
        assert_eq!(split_list("a,n[1-2,5],b"), ["a", "n[1-2,5]", "b"]);
    }

    #[test]
    fn errors_name_the_pattern() {
        let e = err("n[1-3");
        assert!(e.contains("`n[1-3`") && e.contains("closing"), "{e}");
        let e = err("n1-3]");
        assert!(e.contains("without `[`"), "{e}");
        let e = err("n[5-3]");
        assert!(e.contains("reversed range `5-3`"), "{e}");
        assert!(err("n[]").contains("empty"));
        assert!(err("n[a-b]").contains("not a number"));
        assert!(err("n[1-]").contains("not a number"));
        assert!(err("n[1-2-3]").contains("not a number"));
        assert!(err("n[[1]]").contains("inside"));
        assert!(err("a,,b").contains("empty entry"));
        assert!(err("n[1-9999999999999999999]").contains("18 digits"));
    }

    #[test]
    fn size_limit_before_allocating() {
        let e = err("n[0-999999999999999999]");
        assert!(e.contains("more than 100000 hosts"), "{e}");
        let e = err("a[1-1000]b[1-1000]");
        assert!(e.contains("more than 100000"), "{e}");
        assert_eq!(expand_pattern("n[1-100000]").map(|v| v.len()), Ok(100_000));
        assert!(expand("n[1-60000],m[1-60000]").is_err());
    }

    #[test]
    fn ipv6_kept_in_entries() {
        assert_eq!(
            expand_entry("[::1]:22/2").unwrap(),
            ["[::1]:22/2".to_string()]
        );
        assert_eq!(
            expand_entry("alice@n[1-2]:22/4").unwrap(),
            ["alice@n1:22/4", "alice@n2:22/4"]
        );
        assert!(expand_pattern("[::1]").is_err());
    }

    #[test]
    fn compression() {
        assert_eq!(compress(&["n1", "n2", "n3", "n7"]), "n[1-3,7]");
        assert_eq!(compress(&["n08", "n09", "n10"]), "n[08-10]");
        assert_eq!(compress(&["n9", "n10"]), "n[9-10]");
        assert_eq!(compress(&["a", "n1", "b"]), "a,n1,b");
        assert_eq!(compress(&["n1", "n01"]), "n1,n01");
        assert_eq!(compress::<&str>(&[]), "");
    }

    #[test]
    fn counts() {
        assert_eq!(expand_counts("2(x3),1").unwrap(), [2, 2, 2, 1]);
        assert_eq!(expand_counts("4").unwrap(), [4]);
        assert_eq!(expand_counts("72(x2),36").unwrap(), [72, 72, 36]);
        for bad in [
            "",
            "x",
            "2(x)",
            "2(3)",
            "2(x0)",
            "2(x3",
            "-1",
            "2(x999999999)",
        ] {
            let e = expand_counts(bad).unwrap_err();
            assert!(e.contains(&format!("`{bad}`")), "{bad}: {e}");
        }
        assert_eq!(compress_counts(&[2, 2, 2, 1]), "2(x3),1");
        assert_eq!(compress_counts(&[1]), "1");
    }

    fn host_name() -> impl Strategy<Value = String> {
        ("[a-z]{1,3}(-[a-z]{1,2})?", prop::option::of("[0-9]{1,4}"))
            .prop_map(|(p, d)| format!("{p}{}", d.unwrap_or_default()))
    }

    proptest! {
        #[test]
        fn compress_then_expand_round_trips(hosts in prop::collection::vec(host_name(), 1..40)) {
            let text = compress(&hosts);
            prop_assert_eq!(expand(&text).unwrap(), hosts);
        }

        #[test]
        fn expand_then_compress_round_trips(
            prefix in "[a-z]{1,4}",
            lo in 0u64..500,
            len in 1u64..50,
            width in 1usize..5,
        ) {
            let pattern = format!("{prefix}[{lo:0width$}-{:0width$}]", lo + len - 1);
            let hosts = expand(&pattern).unwrap();
            prop_assert_eq!(hosts.len() as u64, len);
            prop_assert_eq!(expand(&compress(&hosts)).unwrap(), hosts);
        }

        #[test]
        fn counts_round_trip(counts in prop::collection::vec(1usize..5, 1..30)) {
            prop_assert_eq!(expand_counts(&compress_counts(&counts)).unwrap(), counts);
        }

        #[test]
        fn no_input_panics(s in "[a-z0-9\\[\\],\\-:x()]{0,30}") {
            let _ = expand(&s);
            let _ = expand_entry(&s);
            let _ = expand_counts(&s);
        }
    }
}
