//! What a newcomer meets first. The README's two commands, as pasted into a fresh clone: the
//! first one (install and the a→b example) is taken from README.md and run with the built binary
//! on PATH in place of `cargo install`; the test command is `bash .ci/run`, which installs the
//! test tools and runs `cargo test --locked`. A README that drifts from what works fails here.
//! Then `-h`, a short screen, and `--help`, the whole text.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use bakapara::cli::Cli;
use clap::CommandFactory;
use serde_json::Value;

/// How the README's first command starts; the test runs the rest of the line.
const INSTALL: &str = "cargo install --locked --path . && ";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn readme() -> String {
    fs::read_to_string(root().join("README.md")).expect("reading README.md")
}

/// The command lines of the README's indented code blocks (four spaces), in order.
fn indented_commands(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|l| l.strip_prefix("    "))
        .filter(|l| !l.starts_with(' ') && !l.is_empty())
        .collect()
}

#[test]
fn first_readme_command_makes_its_inputs_and_shows_a_to_b() {
    let text = readme();
    let first = indented_commands(&text)
        .into_iter()
        .next()
        .expect("README.md has an indented command");
    let example = first.strip_prefix(INSTALL).unwrap_or_else(|| {
        panic!("the README's first command should start with `{INSTALL}`, it is: {first}")
    });

    // A fresh clone's shell: the installed binary on PATH, a private TMPDIR so that the
    // directory `mktemp -d` makes can be found, and the clone as the working directory.
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_bakapara"))
        .parent()
        .expect("the binary is in a folder")
        .to_path_buf();
    let path = std::env::join_paths(std::iter::once(bin_dir).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .expect("a PATH");
    let tmp = tempfile::tempdir().expect("temporary folder");
    let output = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", example])
        .current_dir(root())
        .env("PATH", path)
        .env("TMPDIR", tmp.path())
        .stdin(Stdio::null())
        .output()
        .expect("running bash");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the README's first command failed ({}):\n{example}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        output.status
    );

    let dirs: Vec<PathBuf> = fs::read_dir(tmp.path())
        .expect("listing TMPDIR")
        .map(|e| e.expect("a directory entry").path())
        .collect();
    assert_eq!(
        dirs.len(),
        1,
        "mktemp -d should have made one directory: {dirs:?}"
    );
    let dir = &dirs[0];
    for i in 1..=4 {
        let a = fs::read_to_string(dir.join(format!("a0{i}.txt")))
            .unwrap_or_else(|e| panic!("a0{i}.txt was not made: {e}"));
        let b = fs::read_to_string(dir.join(format!("b0{i}.txt")))
            .unwrap_or_else(|e| panic!("b0{i}.txt was not made: {e}\n{stderr}"));
        assert!(!a.trim().is_empty(), "a0{i}.txt is empty");
        assert_eq!(
            b,
            a.to_uppercase(),
            "b0{i}.txt is not a0{i}.txt made upper case"
        );
        // The example shows the results it made.
        assert!(
            stdout.contains(&format!("==> b0{i}.txt <==")) && stdout.contains(b.trim()),
            "the output does not show b0{i}.txt:\n{stdout}"
        );
    }
    let results: Vec<Value> = stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("a result line is JSON"))
        .collect();
    assert_eq!(results.len(), 4, "one result line per job:\n{stdout}");
    for r in &results {
        assert_eq!(r["result"]["status"], "ok", "{r}");
        assert_eq!(r["result"]["code"], 0, "{r}");
    }
}

#[test]
fn readme_test_command_is_ci_run_and_ci_run_runs_cargo_test() {
    let text = readme();
    let commands = indented_commands(&text);
    assert!(
        commands.contains(&"bash .ci/run"),
        "the README should give `bash .ci/run` as its test command: {commands:?}"
    );
    assert!(
        !commands.iter().any(|c| c.starts_with("cargo test")),
        "the README gives a bare `cargo test`, which fails where the test tools are missing"
    );
    let run = fs::read_to_string(root().join(".ci/run")).expect("reading .ci/run");
    let last = run
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !l.starts_with('#'))
        .expect(".ci/run is not empty");
    assert_eq!(
        last, "cargo test --locked",
        ".ci/run must end by running the tests"
    );
    // The packages whose tools the tests run (each test that needs one names its package).
    let listed: Vec<&str> = run
        .split_once("packages=(")
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(list, _)| {
            list.lines()
                .filter_map(|l| l.split('#').next())
                .flat_map(str::split_whitespace)
                .collect()
        })
        .unwrap_or_default();
    for package in [
        "openssh-server",
        "openssh-client",
        "tmux",
        "man-db",
        "groff-base",
        "zsh",
        "fish",
        "bash-completion",
        "make",
        "parallel",
        "slurmctld",
        "slurmd",
        "slurm-client",
        "munge",
    ] {
        assert!(
            listed.contains(&package),
            ".ci/run does not install {package}: {listed:?}"
        );
    }
}

fn help(flag: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_bakapara"))
        .arg(flag)
        .stdin(Stdio::null())
        .output()
        .expect("running bakapara");
    assert!(
        output.status.success() && output.stderr.is_empty(),
        "bakapara {flag}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("help is UTF-8")
}

/// The long options a help screen lists in its option tables, as `--name`.
fn listed_options(text: &str) -> Vec<String> {
    let option =
        regex::Regex::new(r"^\s+(?:-[A-Za-z0-9], )?(--[a-z][a-z-]*)").expect("a valid regex");
    text.lines()
        .filter_map(|l| option.captures(l))
        .map(|c| c[1].to_string())
        .collect()
}

#[test]
fn short_help_is_one_screen_with_the_main_options_tokens_and_examples() {
    let short = help("-h");
    let lines: Vec<&str> = short.lines().collect();
    assert!(
        lines.len() <= 40,
        "-h should fit a screen, it has {} lines:\n{short}",
        lines.len()
    );
    assert!(
        short.lines().all(|l| l.chars().count() <= 100),
        "-h has lines over 100 columns:\n{short}"
    );
    assert!(
        short.starts_with("Run ") && short.contains("Usage: bakapara"),
        "{short}"
    );
    let mut options = listed_options(&short);
    options.sort();
    assert_eq!(
        options,
        [
            "--dry-run",
            "--help",
            "--jobs",
            "--keep-order",
            "--sshlogin",
            "--text",
            "--version"
        ],
        "-h should list the five most used options (and --help, --version), no more:\n{short}"
    );
    for token in [
        "<>",
        "<N>",
        "<name>",
        "<.>",
        "</>",
        "<//>",
        "</.>",
        "</RE/REP>",
        "<#>",
        "<%>",
    ] {
        assert!(
            short.contains(token),
            "-h does not show the token {token}:\n{short}"
        );
    }
    let examples: Vec<&str> = short
        .split_once("Examples:")
        .map(|(_, rest)| {
            rest.lines()
                .skip(1)
                .take_while(|l| !l.trim().is_empty())
                .filter(|l| l.contains("bakapara "))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        examples.len(),
        3,
        "-h should end with three examples:\n{short}"
    );
    assert!(short.contains("--help"), "-h should say where the rest is");
}

#[test]
fn long_help_has_every_option_and_the_reference_sections() {
    let long = help("--help");
    let short = help("-h");
    assert!(
        long.lines().count() > 3 * short.lines().count(),
        "--help is not the whole text"
    );
    let listed = listed_options(&long);
    let mut missing: Vec<String> = Cli::command()
        .get_arguments()
        .filter(|a| !a.is_hide_set())
        .filter_map(|a| a.get_long())
        .map(|l| format!("--{l}"))
        .filter(|l| !listed.contains(l))
        .collect();
    for section in [
        "TEMPLATES:",
        "JOB KEYS:",
        "RESULT KEYS:",
        "EXAMPLES:",
        "EXIT STATUS:",
    ] {
        if !long.contains(section) {
            missing.push(section.to_string());
        }
    }
    assert!(missing.is_empty(), "--help lacks {missing:?}:\n{long}");
}
