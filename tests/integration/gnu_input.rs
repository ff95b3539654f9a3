//! GNU Parallel's input options (issue 12), each run side by side with GNU Parallel 20221122
//! (`parallel`, from .ci/run's install list) on the same input: several items per job (`-N`,
//! `-n`, `-m`, `-X`, `--xargs`), linked sources (`--link`, `:::+`, `::::+`), delimiters (`-0`,
//! `-d`), `-a`, `--arg-sep`, `--arg-file-sep`. bakapara runs with `--braces`, so that both get
//! the very same command line; the outputs of their real `/bin/bash` jobs are compared, in
//! input order (`-k`).

use std::process::Stdio;

use serde_json::Value;

use crate::common::bin::{bakapara, parse_lines};
use crate::common::gnu::{folder, gnu, ours, run_with_stdin, stdout_of};

/// Asserts that both tools print the same for each case (arguments, stdin), in a folder
/// holding the files `f` (`f1`, `f2`) and `g` (`x`, `y`, `z`).
fn same_as_gnu(cases: &[(&[&str], &[u8])]) {
    let bakapara_args = |args: &[&str]| -> Vec<String> {
        // `--plus` is GNU's switch for its extra replacement strings; bakapara always has them.
        args.iter()
            .filter(|a| **a != "--plus")
            .map(std::string::ToString::to_string)
            .collect()
    };
    let dir = folder();
    std::fs::write(dir.path().join("f"), "f1\nf2\n").expect("writing f");
    std::fs::write(dir.path().join("g"), "x\ny\nz\n").expect("writing g");
    let mut wrong = Vec::new();
    for (args, stdin) in cases {
        let expected = gnu(dir.path(), args, stdin);
        let ours_args = bakapara_args(args);
        let ours_args: Vec<&str> = ours_args.iter().map(String::as_str).collect();
        let got = stdout_of(&ours(dir.path(), &ours_args, stdin));
        if got != expected {
            wrong.push(format!(
                "{args:?} (stdin {:?}):\n  GNU:      {expected:?}\n  bakapara: {got:?}",
                String::from_utf8_lossy(stdin)
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "bakapara differs from GNU Parallel:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn several_items_per_job_match_gnu() {
    same_as_gnu(&[
        (&["-N2", "echo {1}-{2}", ":::", "a", "b", "c"], b""),
        (&["-N2", "echo", ":::", "a", "b c", "d"], b""),
        (&["-N3", "echo {1} {-1}", ":::", "a", "b", "c", "d"], b""),
        (&["-N1", "echo", ":::", "a", "b"], b""),
        (&["-N0", "echo foo", ":::", "a", "b", "c"], b""),
        (&["-n2", "echo", ":::", "a", "b", "c"], b""),
        (&["-n0", "echo foo", ":::", "a", "b"], b""),
        (&["-N2", "printf '[%s]'"], b"a b\nc'd\n$(x)\n"),
        (
            &["-j1", "-m", "echo pre-{}-post", ":::", "a", "b", "c"],
            b"",
        ),
        (&["-j1", "-m", "echo {} {.} {1}", ":::", "a.x", "b.y"], b""),
        (&["-j1", "-m", "printf '[%s]'", ":::", "a b", "c'd"], b""),
        (
            &["-j1", "-X", "echo pre-{}-post {#}", ":::", "a", "b", "c"],
            b"",
        ),
        (&["-j1", "-X", "echo x{} {2}", ":::", "a", "b", "c"], b""),
        (&["-j1", "-X", "printf '[%s]' {.}.gz"], b"a.txt\nb c.txt\n"),
        (&["--xargs", "echo", ":::", "a", "b", "c"], b""),
        (&["--xargs", "printf '[%s]'"], b"1\n2\n3\n"),
    ]);
}

/// The job's `input` is the array of its items, and `{}` each of them as its own word.
#[test]
fn a_job_of_several_items_keeps_them_apart() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let results = ours(
        dir.path(),
        &["-N2", "printf '[%s]'", ":::", "a b", "c", "d"],
        b"",
    );
    let inputs: Vec<&Value> = results.iter().map(|r| &r["input"]).collect();
    assert_eq!(
        inputs,
        [&serde_json::json!(["a b", "c"]), &serde_json::json!(["d"])]
    );
    assert_eq!(stdout_of(&results), "[a b][c][d]");
}

/// `-m` and `--xargs` fill each job up to the command-line limit, as GNU Parallel does: every
/// item once, in order, in more than one job, none of which is too long to start.
#[test]
fn many_items_fill_jobs_up_to_the_command_line_limit() {
    let items: String = (1..=60_000).map(|i| format!("{i}\n")).collect();
    let dir = folder();
    for option in ["-m", "--xargs"] {
        let results = ours(dir.path(), &["-j1", option, "echo"], items.as_bytes());
        assert!(
            (2..=10).contains(&results.len()),
            "{option}: {} jobs for 60000 items",
            results.len()
        );
        for r in &results {
            assert_eq!(r["result"]["code"], 0, "{option}: {r}");
            assert!(
                r["cmd"].as_str().map_or(0, str::len) < 128 * 1024,
                "{option}: a command past the kernel's limit"
            );
        }
        let words = |s: &str| s.split_whitespace().map(str::to_string).collect::<Vec<_>>();
        let expected = gnu(dir.path(), &["-j1", option, "echo"], items.as_bytes());
        assert_eq!(
            words(&stdout_of(&results)),
            words(&expected),
            "{option}: every item once, in order"
        );
    }
}

#[test]
fn linked_sources_match_gnu() {
    same_as_gnu(&[
        (
            &["--link", "echo", ":::", "a", "b", "c", ":::", "1", "2"],
            b"",
        ),
        (
            &[
                "--link", "echo", ":::", "1", "2", ":::", "x", "y", "z", ":::", "A", "B", "C", "D",
                "E",
            ],
            b"",
        ),
        (
            &["--xapply", "echo", ":::", "1", "2", ":::", "x", "y", "z"],
            b"",
        ),
        (&["--link", "echo", "::::", "f", "::::", "g"], b""),
        (
            &["--link", "echo", "::::", "-", ":::", "x", "y", "z"],
            b"1\n",
        ),
        (
            &[
                "echo", ":::", "a", "b", ":::", "1", "2", ":::+", "x", "y", "z",
            ],
            b"",
        ),
        (&["echo", ":::", "1", "2", "3", ":::+", "x", "y"], b""),
        (&["echo", "::::", "f", "::::+", "g"], b""),
        (
            &["echo", "::::", "-", ":::+", "x", "y", "z"],
            b"1\n2\n3\n4\n",
        ),
        (&["echo", "{2} {1}", "::::", "g", ":::+", "x", "y"], b""),
    ]);
}

#[test]
fn delimiters_and_argument_files_match_gnu() {
    same_as_gnu(&[
        (&["-0", "printf '[%s]'"], b"a\nb\0c d\0"),
        (&["--null", "printf '[%s]'"], b"a\0b"),
        (&["-d", ",", "printf '[%s]'"], b"a,b,,c\n"),
        (&["-d", "\\t", "printf '[%s]'"], b"a\tb\tc"),
        (&["-d", "XY", "printf '[%s]'"], b"aXYbXXYc"),
        (&["-d", "\\001", "printf '[%s]'"], b"a\x01b"),
        (&["-d", "\\n", "printf '[%s]'"], b"a\n\nb\n"),
        (&["-a", "f", "echo"], b""),
        (&["--arg-file", "f", "echo", ":::", "x", "y"], b""),
        (&["-a", "f", "-a", "g", "echo"], b""),
        (&["-a", "-", "echo"], b"s1\ns2\n"),
        (
            &["--arg-sep", ",,", "echo", ",,", "a", "b", ",,", "1", "2"],
            b"",
        ),
        (
            &["--arg-sep", ",,", "echo", ",,", "a", "b", ",,+", "1", "2"],
            b"",
        ),
        (&["--arg-sep", ",,", "echo", ",,", ":::", "b"], b""),
        (&["--arg-file-sep", "//", "echo", "//", "f", "g"], b""),
        (
            &["--arg-file-sep", "//", "echo", "//", "f", "//+", "g"],
            b"",
        ),
    ]);
}

/// `-d` takes the escapes of printf, `\xHH` included, as GNU Parallel's manual says (GNU
/// Parallel 20221122 itself takes `\x01` as four characters).
#[test]
fn a_delimiter_may_be_a_hexadecimal_escape() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let results = ours(dir.path(), &["-d", "\\x01", "printf '[%s]'"], b"a\x01b");
    assert_eq!(stdout_of(&results), "[a][b]");
}

/// A bad value of these options is a usage error (255) before any job runs, naming it.
#[test]
fn bad_input_options_are_usage_errors() {
    for (args, needle) in [
        (&["-d", "", "echo"][..], "-d/--delimiter"),
        (&["-d", "\\q", "echo"], "-d/--delimiter"),
        (&["-d", "\\x", "echo"], "-d/--delimiter"),
        (&["-N2", ":::", "echo a"], "TEMPLATE"),
        (&["-m", "--jsonl", "echo"], "TEMPLATE"),
        (&["-N", "x", "echo"], "max-replace-args"),
        (&["-N2", "-m", "echo"], "-m"),
        (&["-a", "no-such-file", "echo"], "no-such-file"),
        (&["--header", "(", "echo <a>", ":::", "a"], "--header"),
        (&["--header", ":", ":::", "a"], "--header"),
        (&["--arg-sep", ",,", "echo", ",,"], ""),
    ] {
        let output = bakapara()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running bakapara");
        let stderr = String::from_utf8_lossy(&output.stderr);
        if needle.is_empty() {
            // An empty source is no error: nothing to run.
            assert_eq!(output.status.code(), Some(0), "{args:?}: {stderr}");
            continue;
        }
        assert_eq!(output.status.code(), Some(255), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(output.stdout.is_empty(), "{args:?} ran something");
    }
}

/// GNU Parallel's `--plus` replacement strings, with `--braces` (bakapara has them without
/// `--plus`), on paths with zero to four extensions, from `:::` and from stdin.
#[test]
fn plus_replacement_strings_match_gnu() {
    let values = [
        "a.tar.gz",
        "dir.x/b.c.d.e",
        "c",
        "/r/x.y",
        ".bashrc",
        "d/",
        "a b/c.d",
        "a.b/c",
        "",
    ];
    let tokens = [
        "{..}", "{...}", "{/..}", "{/...}", "{+/}", "{+.}", "{+..}", "{+...}",
    ];
    let template = format!("printf '[%s]' {} {{##}} {{0#}}", tokens.join(" "));
    let mut with_args: Vec<&str> = vec!["--plus", &template, ":::"];
    with_args.extend(values);
    // With two sources, the positional forms (`{}` would be one word here, two in GNU).
    let positional = "printf '[%s]' {1..} {2+.} {-1..} {1+/} {##} {0#}";
    let mut two_sources: Vec<&str> = vec!["--plus", positional, ":::"];
    two_sources.extend(values);
    two_sources.extend([":::", "q.r.s.t", "u"]);
    let lines: String = values.iter().map(|v| format!("{v}\n")).collect();
    let stdin_template = "printf '[%s]' {..} {+.} {/..} {##} {0#}".to_string();
    same_as_gnu(&[
        (&with_args, b""),
        (&two_sources, b""),
        (&["--plus", &stdin_template], lines.as_bytes()),
        (&["--plus", "-N2", "echo {##} {0#} {+.}"], lines.as_bytes()),
    ]);
}

/// The same tokens in the default syntax; `<##>` holds a streamed job until input has ended.
#[test]
fn plus_tokens_in_the_default_syntax() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let lines: String = (1..=12).map(|i| format!("d/f{i}.tar.gz\n")).collect();
    let output = run_with_stdin(
        {
            let mut c = bakapara();
            c.args(["--json", "-k", "echo <0#>/<##> <..> <+/> <+..> </..>"])
                .current_dir(dir.path());
            c
        },
        lines.as_bytes(),
    );
    assert_eq!(output.status.code(), Some(0));
    let results = parse_lines(&output.stdout);
    assert_eq!(results.len(), 12);
    assert_eq!(
        results[0]["result"]["stdout"], "01/12 d/f1 d tar.gz f1\n",
        "{}",
        results[0]
    );
    assert_eq!(
        results[11]["result"]["stdout"],
        "12/12 d/f12 d tar.gz f12\n"
    );
}

/// `--dry-run --text` prints the command lines GNU Parallel's `--dry-run` prints (on values
/// that both quote alike), running nothing; `--dryrun` is the same option.
#[test]
fn dry_run_with_text_prints_the_command_lines_as_gnu() {
    let dir = folder();
    let marker = dir.path().join("ran");
    let touch = format!("touch {} && echo", marker.display());
    let cases: [&[&str]; 5] = [
        &[&touch, "{}", ":::", "a", "b c", "dir/x.y"],
        &[&touch, "{/.}-{#}", ":::", "dir/x.y", "z"],
        &["-N2", &touch, ":::", "a", "b c", "d"],
        &["-j1", "-X", &touch, "p{}", ":::", "a", "b"],
        &[
            "--link", &touch, "{2}", "{1}", ":::", "a", "b", ":::", "1", "2", "3",
        ],
    ];
    for (i, args) in cases.iter().enumerate() {
        let expected = gnu(dir.path(), &[&["--dry-run"][..], args].concat(), b"");
        let option = if i % 2 == 0 { "--dry-run" } else { "--dryrun" };
        let output = bakapara()
            .args(["--braces", "-k", "--text", option])
            .args(*args)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("running bakapara");
        assert_eq!(output.status.code(), Some(0), "{args:?}");
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            expected,
            "{args:?}"
        );
    }
    assert!(!marker.exists(), "a dry run ran a job");
}

/// `--header :`: the first item of each source names its values, as `{name}` (`<name>`).
#[test]
fn header_names_match_gnu() {
    same_as_gnu(&[
        (
            &[
                "--header",
                ":",
                "echo {a} {b}",
                ":::",
                "a",
                "1",
                "2",
                ":::",
                "b",
                "x",
                "y",
            ],
            b"",
        ),
        (
            &[
                "--header",
                ":",
                "--link",
                "echo {b} {a}",
                ":::",
                "a",
                "1",
                "2",
                ":::",
                "b",
                "x",
                "y",
                "z",
            ],
            b"",
        ),
        (
            &["--header", ":", "--colsep", ",", "echo {v}-{n} {1}"],
            b"n,v\nx,1\ny,2\n",
        ),
        (&["--header", ":", "echo {name}"], b"name\nx\ny\n"),
        (
            &[
                "--header",
                ":",
                "echo {f1} {b}",
                "::::",
                "f",
                ":::",
                "b",
                "x",
            ],
            b"",
        ),
    ]);
    let dir = tempfile::tempdir().expect("temporary folder");
    let results = ours(
        dir.path(),
        &["--header", ":", "-N2", "echo {x}"],
        b"x\n1\n2\n3\n",
    );
    assert_eq!(stdout_of(&results), "1\n3\n", "a name is the first value's");
}

/// `--trim` and the trimming `--colsep` implies, as GNU Parallel's.
#[test]
fn trimming_matches_gnu() {
    let line: &[u8] = b" a ,\tb \n  c  , d\n";
    same_as_gnu(&[
        (&["--colsep", ",", "printf '[%s]' {1} {2} {-1}"], line),
        (
            &["--colsep", ",", "--trim", "n", "printf '[%s]' {1} {2}"],
            line,
        ),
        (
            &["--colsep", ",", "--trim", "l", "printf '[%s]' {1} {2}"],
            line,
        ),
        (&["--trim", "r", "printf '[%s]' {}"], line),
        (&["--trim", "lr", "printf '[%s]' {}"], line),
        (
            &["--trim", "rl", "printf '[%s]' {}", ":::", " x ", "y\t"],
            b"",
        ),
        (&["printf '[%s]' {}"], line),
    ]);
}
