//! GNU Parallel's --pipe family (issue 12), run side by side with GNU Parallel 20221122
//! (`parallel`, from .ci/run's install list) on the same input: --pipe with --block,
//! --recend, --recstart, --regexp, --remove-rec-sep, -N and --header; --pipe-part; --shuf
//! (as a set). The jobs are real `/bin/bash` commands that mark where their block starts and
//! ends, so the outputs show the cuts; they are compared in input order (`-k`).

use crate::common::gnu::{folder, gnu, ours, stdout_of};

/// Asserts that both tools print the same for each case (arguments, stdin).
fn same_as_gnu(cases: &[(&[&str], &[u8])]) {
    let dir = folder();
    let mut wrong = Vec::new();
    for (args, stdin) in cases {
        let expected = gnu(dir.path(), args, stdin);
        let got = stdout_of(&ours(dir.path(), args, stdin));
        if got != expected {
            wrong.push(format!(
                "{args:?} (stdin {:?}):\n  GNU:      {expected:?}\n  bakapara: {got:?}",
                String::from_utf8_lossy(&stdin[..stdin.len().min(200)])
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "bakapara differs from GNU Parallel:\n{}",
        wrong.join("\n")
    );
}

fn numbers(to: u32) -> Vec<u8> {
    (1..=to)
        .flat_map(|i| format!("{i}\n").into_bytes())
        .collect()
}

/// Marks each block's start and end in the output.
const MARKED: &str = "echo [; cat; echo ]";

#[test]
fn blocks_match_gnu() {
    let long_line = [&[b'a'; 35][..], b"\nb\nc\n"].concat();
    let no_newline_at_end = b"a\nb\nc".to_vec();
    same_as_gnu(&[
        (&["--pipe", MARKED], &numbers(10)),
        (&["--pipe", "--block", "20", "wc -c"], &numbers(40)),
        (&["--pipe", "--block", "7", "wc -c"], &numbers(40)),
        (&["--pipe", "--block", "100", "wc -c"], &numbers(200)),
        (&["--pipe", "--block", "1k", "wc -c"], &numbers(3000)),
        (&["--pipe", "--block", "1K", "wc -c"], &numbers(3000)),
        (&["--pipe", "--block", "1.5k", "wc -c"], &numbers(3000)),
        (&["--pipe", "--block", "10", "wc -c"], &long_line),
        (&["--pipe", "--block", "3", MARKED], &no_newline_at_end),
        (&["--pipe", "--block", "2k", "wc -l"], &numbers(5000)),
        (&["--spreadstdin", "--block", "20", MARKED], &numbers(12)),
    ]);
}

#[test]
fn records_per_job_match_gnu() {
    same_as_gnu(&[
        (&["--pipe", "-N3", MARKED], &numbers(10)),
        (&["--pipe", "-N1", MARKED], &numbers(3)),
        (&["--pipe", "-N100", "wc -l"], &numbers(1000)),
        (&["--pipe", "-N2", "--block", "1", MARKED], &numbers(7)),
    ]);
}

#[test]
fn record_separators_match_gnu() {
    let fasta = b">x\n1\n>y\n2\n22\n>z\n3\n".to_vec();
    same_as_gnu(&[
        (&["--pipe", "-N2", "--recend", ";", MARKED], b"a;b;c;d;e"),
        (
            &["--pipe", "-N2", "--recend", ";", "--rrs", MARKED],
            b"a;b;c;d;e",
        ),
        (&["--pipe", "-N2", "--recstart", ">", MARKED], &fasta),
        (
            &["--pipe", "-N2", "--recstart", ">", "--rrs", MARKED],
            &fasta,
        ),
        (
            &[
                "--pipe",
                "-N1",
                "--recstart",
                ">",
                "--recend",
                "\\n",
                MARKED,
            ],
            &fasta,
        ),
        (
            &[
                "--pipe",
                "-N1",
                "--recstart",
                ">",
                "--recend",
                "\\n",
                "--remove-rec-sep",
                MARKED,
            ],
            &fasta,
        ),
        (
            &["--pipe", "--block", "8", "--recstart", ">", MARKED],
            &fasta,
        ),
        (&["--pipe", "-N1", "--recend", "\\n", MARKED], b"a\\nb\nc\n"),
        (
            &["--pipe", "-N1", "--regexp", "--recend", "\\d+", MARKED],
            b"a1b22c333d",
        ),
        (
            &[
                "--pipe", "-N1", "--regexp", "--recend", "\\d+", "--rrs", MARKED,
            ],
            b"a1b22c333d",
        ),
        (
            &[
                "--pipe",
                "-N2",
                "--regexp",
                "--recstart",
                "[A-Z]",
                "--recend",
                "\\n",
                MARKED,
            ],
            b"Aa\nb\nBc\nCd\ne\nDf\n",
        ),
    ]);
}

#[test]
fn header_is_repeated_to_every_block_as_gnu() {
    same_as_gnu(&[
        (
            &["--pipe", "-N2", "--header", ":", MARKED],
            b"h1\na\nb\nc\nd\ne\n",
        ),
        (
            &["--pipe", "--block", "20", "--header", ":", "wc -c"],
            &numbers(30),
        ),
        (
            &["--pipe", "-N1", "--header", "(.*\\n){2}", MARKED],
            b"h1\nh2\na\nb\nc\n",
        ),
    ]);
}

#[test]
fn pipe_part_gives_every_record_once_as_gnu() {
    let dir = folder();
    let mut text = b"name\n".to_vec();
    text.extend(numbers(20000));
    std::fs::write(dir.path().join("data"), &text).expect("writing data");
    let body = &text[5..];
    {
        let (args, whole) = (
            ["--pipe-part", "--block", "10k", "-a", "data", "cat"],
            &text[..],
        );
        let expected = gnu(dir.path(), &args, b"");
        let results = ours(dir.path(), &args, b"");
        assert_eq!(expected.as_bytes(), whole, "GNU: {args:?}");
        assert_eq!(stdout_of(&results).as_bytes(), whole, "bakapara: {args:?}");
        assert!(
            results.len() > 5,
            "{} ranges of ~10k in 110k",
            results.len()
        );
        for r in &results {
            let out = r["result"]["stdout"].as_str().expect("stdout");
            assert!(out.ends_with('\n'), "a range ends at a record end: {out:?}");
        }
    }
    // With --header: each range gets the first line before it.
    let args = [
        "--pipe-part",
        "--block",
        "10k",
        "--header",
        ":",
        "-a",
        "data",
        "tail -n +2",
    ];
    assert_eq!(gnu(dir.path(), &args, b"").as_bytes(), body);
    assert_eq!(stdout_of(&ours(dir.path(), &args, b"")).as_bytes(), body);
    let args = [
        "--pipe-part",
        "--block",
        "10k",
        "--header",
        ":",
        "-a",
        "data",
        "head -1",
    ];
    for out in [
        gnu(dir.path(), &args, b""),
        stdout_of(&ours(dir.path(), &args, b"")),
    ] {
        assert!(
            out.lines().count() > 1 && out.lines().all(|l| l == "name"),
            "{out}"
        );
    }
}

#[test]
fn shuf_runs_the_same_jobs_as_gnu() {
    let dir = folder();
    let items: Vec<String> = (1..=30).map(|i| i.to_string()).collect();
    let mut args = vec!["--shuf", "echo"];
    args.push(":::");
    args.extend(items.iter().map(String::as_str));
    let sorted = |text: String| {
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        lines.sort();
        lines
    };
    let expected = sorted(gnu(dir.path(), &args, b""));
    let mut orders = Vec::new();
    for _ in 0..3 {
        let got = stdout_of(&ours(dir.path(), &args, b""));
        assert_eq!(sorted(got.clone()), expected);
        orders.push(got);
    }
    let in_order: String = items.iter().map(|i| format!("{i}\n")).collect();
    assert!(
        orders.iter().any(|o| *o != in_order),
        "three shuffles of 30 jobs all kept the input order"
    );
}
