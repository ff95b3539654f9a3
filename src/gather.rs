//! `--gather`: hosts whose output is the same, folded into one block headed by their host
//! range (`h[1-3,5]`), as ClusterShell's `clush -b` and `dshbak -c` print it.
//!
//! The output side hands each finished job's stdout here with its host; at the end of the run
//! [`Gathered::render`] gives the blocks, in the order their first host appeared. `--onall
//! --text` uses it too, without folding: each host's output in one piece.

use std::collections::BTreeMap;

/// The output of each host, gathered until the end of the run.
#[derive(Debug, Default)]
pub struct Gathered {
    /// (seq, host, stdout) of each job, in completion order.
    jobs: Vec<(u64, String, Vec<u8>)>,
    /// `--onall --text` without `--gather`: each host's output together, as GNU Parallel's
    /// `--onall --group` prints it, with no header and nothing folded.
    by_host_only: bool,
}

impl Gathered {
    /// `--gather`: identical outputs folded under a host range.
    #[must_use]
    pub fn folded() -> Gathered {
        Gathered::default()
    }

    /// `--onall --text`: each host's output in one piece, hosts in the order of their first
    /// job (the `-S` order).
    #[must_use]
    pub fn by_host() -> Gathered {
        Gathered {
            by_host_only: true,
            ..Gathered::default()
        }
    }

    pub fn add(&mut self, seq: u64, host: String, stdout: Vec<u8>) {
        self.jobs.push((seq, host, stdout));
    }

    /// The blocks to print: each distinct output once, under the folded names of the hosts
    /// that printed it. A host with several jobs (`--onall`) shows their output in input order.
    #[must_use]
    pub fn render(mut self) -> Vec<u8> {
        self.jobs.sort_by_key(|(seq, _, _)| *seq);
        let mut hosts: Vec<(String, Vec<u8>)> = Vec::new();
        for (_, host, out) in self.jobs {
            match hosts.iter_mut().find(|(h, _)| *h == host) {
                Some((_, all)) => all.extend_from_slice(&out),
                None => hosts.push((host, out)),
            }
        }
        if self.by_host_only {
            return hosts.into_iter().flat_map(|(_, out)| out).collect();
        }
        let mut groups: Vec<(Vec<String>, Vec<u8>)> = Vec::new();
        for (host, out) in hosts {
            match groups.iter_mut().find(|(_, o)| *o == out) {
                Some((names, _)) => names.push(host),
                None => groups.push((vec![host], out)),
            }
        }
        let mut text = Vec::new();
        for (names, out) in groups {
            let header = fold(&names);
            let rule = "-".repeat(header.chars().count().clamp(15, 80));
            text.extend_from_slice(format!("{rule}\n{header}\n{rule}\n").as_bytes());
            text.extend_from_slice(&out);
            if !out.is_empty() && !out.ends_with(b"\n") {
                text.push(b'\n');
            }
        }
        text
    }
}

/// Folds host names into ranges of the hostlist syntax: `h1,h2,h3,h5` → `h[1-3,5]`. The last
/// run of digits in a name is its number; names that differ only there share a range, and
/// zero padding is kept (`n01,n02` → `n[01-02]`). A name alone in its group stays as it is.
#[must_use]
pub fn fold(names: &[String]) -> String {
    // (prefix, suffix) → numbers as written, in the order the group first appears.
    let mut order: Vec<(String, String)> = Vec::new();
    let mut groups: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let mut plain: Vec<String> = Vec::new();
    for name in names {
        let Some((prefix, digits, suffix)) = split_number(name) else {
            if !plain.contains(name) {
                plain.push(name.clone());
            }
            continue;
        };
        let key = (prefix.to_string(), suffix.to_string());
        if !groups.contains_key(&key) {
            order.push(key.clone());
        }
        let numbers = groups.entry(key).or_default();
        if !numbers.iter().any(|n| n == digits) {
            numbers.push(digits.to_string());
        }
    }
    let mut parts = Vec::new();
    for key in order {
        let Some(numbers) = groups.remove(&key) else {
            continue;
        };
        let (prefix, suffix) = key;
        if numbers.len() == 1 {
            parts.push(format!("{prefix}{}{suffix}", numbers[0]));
            continue;
        }
        parts.push(format!("{prefix}[{}]{suffix}", ranges(numbers)));
    }
    parts.extend(plain);
    parts.join(",")
}

/// `a12b` → (`a`, `12`, `b`): the last run of ASCII digits.
fn split_number(name: &str) -> Option<(&str, &str, &str)> {
    let end = name.rfind(|c: char| c.is_ascii_digit())? + 1;
    let start = name[..end]
        .rfind(|c: char| !c.is_ascii_digit())
        .map_or(0, |i| i + 1);
    Some((&name[..start], &name[start..end], &name[end..]))
}

/// Numbers as written (`["1", "3", "2", "05"]`) as ranges: `1-3,05`. Two numbers are
/// neighbours when the second is one more and both have the same width (or neither has a
/// leading zero).
fn ranges(mut numbers: Vec<String>) -> String {
    let value = |n: &str| n.parse::<u128>().unwrap_or(u128::MAX);
    numbers.sort_by(|a, b| value(a).cmp(&value(b)).then(a.len().cmp(&b.len())));
    let padded = |n: &str| n.len() > 1 && n.starts_with('0');
    let neighbours = |a: &str, b: &str| {
        value(a).checked_add(1) == Some(value(b))
            && (a.len() == b.len() || (!padded(a) && !padded(b)))
    };
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < numbers.len() {
        let mut j = i;
        while j + 1 < numbers.len() && neighbours(&numbers[j], &numbers[j + 1]) {
            j += 1;
        }
        out.push(if i == j {
            numbers[i].clone()
        } else {
            format!("{}-{}", numbers[i], numbers[j])
        });
        i = j + 1;
    }
    out.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(std::string::ToString::to_string).collect()
    }

    #[test]
    fn neighbours_fold_into_ranges() {
        assert_eq!(fold(&names(&["h1", "h2", "h3", "h5"])), "h[1-3,5]");
        assert_eq!(fold(&names(&["h5", "h3", "h1", "h2"])), "h[1-3,5]");
        assert_eq!(fold(&names(&["h1"])), "h1");
        assert_eq!(fold(&names(&["h1", "h3"])), "h[1,3]");
    }

    #[test]
    fn padding_prefixes_and_suffixes_are_kept() {
        assert_eq!(fold(&names(&["n01", "n02", "n03"])), "n[01-03]");
        assert_eq!(fold(&names(&["n09", "n10"])), "n[09-10]");
        assert_eq!(fold(&names(&["n9", "n10"])), "n[9-10]");
        assert_eq!(
            fold(&names(&["rack1-n1.lab", "rack1-n2.lab", "web", "db1"])),
            "rack1-n[1-2].lab,db1,web"
        );
        assert_eq!(fold(&names(&["h1", "h1"])), "h1");
    }

    #[test]
    fn by_host_keeps_each_hosts_output_together_in_input_order() {
        let mut g = Gathered::by_host();
        g.add(2, "h2".into(), b"a2\n".to_vec());
        g.add(3, "h1".into(), b"b1\n".to_vec());
        g.add(1, "h1".into(), b"a1\n".to_vec());
        g.add(4, "h2".into(), b"b2\n".to_vec());
        assert_eq!(g.render(), b"a1\nb1\na2\nb2\n");
    }

    #[test]
    fn identical_outputs_share_one_block() {
        let mut g = Gathered::folded();
        g.add(1, "h1".into(), b"same\n".to_vec());
        g.add(3, "h3".into(), b"other\n".to_vec());
        g.add(2, "h2".into(), b"same\n".to_vec());
        g.add(4, "h5".into(), b"same\n".to_vec());
        let text = String::from_utf8(g.render()).unwrap();
        let rule = "-".repeat(15);
        assert_eq!(
            text,
            format!("{rule}\nh[1-2,5]\n{rule}\nsame\n{rule}\nh3\n{rule}\nother\n")
        );
    }
}
