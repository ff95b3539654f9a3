//! The man page `man/bakapara.1` and the shell completions in `completions/` are generated from
//! the clap definition [`bakapara::cli::Cli`] (by `bakapara::generate`, which `bakapara --generate
//! man|bash|zsh|fish` prints) and committed (SPEC §6). `generated_files_are_fresh` fails when
//! they are stale; `BAKAPARA_BLESS=1 cargo test --test integration generated_docs` rewrites them.
//! The other tests check that the committed files work for a person: the page renders without
//! groff warnings and the completions load and complete in bash, zsh and fish.

use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Once;
use std::thread;
use std::time::{Duration, Instant};

use bakapara::cli::Cli;
use bakapara::generate::{after_help_sections, completion, man_page};
use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::roff::Roff;

/// Set this (to anything but empty or `0`) to rewrite the generated files instead of checking.
const BLESS_VAR: &str = "BAKAPARA_BLESS";
const BLESS_COMMAND: &str = "BAKAPARA_BLESS=1 cargo test --test integration generated_docs";

const MAN_PAGE: &str = "man/bakapara.1";
const BASH_COMPLETION: &str = "completions/bakapara.bash";
const ZSH_COMPLETION: &str = "completions/_bakapara";
const FISH_COMPLETION: &str = "completions/bakapara.fish";

/// How long a shell or groff may take before the test calls it hung.
const TOOL_TIMEOUT: Duration = Duration::from_secs(60);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn command() -> clap::Command {
    let mut cmd = Cli::command();
    cmd.build();
    cmd
}

/// Every generated file, as (path relative to the crate root, content).
fn generate_all() -> Vec<(&'static str, String)> {
    vec![
        (MAN_PAGE, man_page()),
        (BASH_COMPLETION, completion(Shell::Bash)),
        (ZSH_COMPLETION, completion(Shell::Zsh)),
        (FISH_COMPLETION, completion(Shell::Fish)),
    ]
}

/// What `bakapara --generate KIND` prints, by the built binary.
fn generated_by_binary(kind: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_bakapara"))
        .args(["--generate", kind])
        .stdin(Stdio::null())
        .output()
        .expect("running bakapara --generate");
    assert!(
        output.status.success() && output.stderr.is_empty(),
        "{}",
        describe(&format!("bakapara --generate {kind}"), &output)
    );
    String::from_utf8(output.stdout).expect("generated text is UTF-8")
}

// ---------------------------------------------------------------------------------------------
// Freshness

fn bless_requested() -> bool {
    std::env::var_os(BLESS_VAR).is_some_and(|v| !v.is_empty() && v != "0")
}

static BLESS: Once = Once::new();

/// With `BAKAPARA_BLESS` set, writes every generated file that changed, once per test run,
/// before any test reads them (so the bless run checks the new files too).
fn bless_if_requested() {
    if bless_requested() {
        BLESS.call_once(|| {
            for (rel, text) in generate_all() {
                let path = root().join(rel);
                if fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                    write_atomically(&path, &text);
                    eprintln!("{BLESS_VAR}: wrote {rel}");
                }
            }
        });
    }
}

/// Replaces the file in one step, so a test reading it at the same time never sees half of it.
fn write_atomically(path: &Path, text: &str) {
    let dir = path.parent().expect("generated files live in a folder");
    fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .unwrap_or_else(|e| panic!("temporary file in {}: {e}", dir.display()));
    tmp.write_all(text.as_bytes())
        .unwrap_or_else(|e| panic!("writing {}: {e}", tmp.path().display()));
    tmp.persist(path)
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    // NamedTempFile creates 0600; the committed files are ordinary 0644 files.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(0o644))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
    }
}

fn first_difference(old: &str, new: &str) -> String {
    let mut old_lines = old.lines();
    let mut new_lines = new.lines();
    for number in 1.. {
        match (old_lines.next(), new_lines.next()) {
            (Some(a), Some(b)) if a == b => {}
            (None, None) => break,
            (a, b) => {
                return format!(
                    "first difference at line {number}:\n    committed: {}\n    generated: {}",
                    a.unwrap_or("(end of file)"),
                    b.unwrap_or("(end of file)")
                )
            }
        }
    }
    "they differ only in the final newline".to_owned()
}

#[test]
fn generated_files_are_fresh() {
    let generated = generate_all();
    assert_eq!(
        generated,
        generate_all(),
        "generating twice gave different text: generation must be deterministic"
    );
    if bless_requested() {
        bless_if_requested();
        return;
    }
    let mut problems = Vec::new();
    for (rel, text) in &generated {
        match fs::read_to_string(root().join(rel)) {
            Ok(old) if old == *text => {}
            Ok(old) => problems.push(format!("{rel} is stale: {}", first_difference(&old, text))),
            Err(e) => problems.push(format!("{rel} cannot be read: {e}")),
        }
    }
    assert!(
        problems.is_empty(),
        "the generated man page / completions do not match the clap definition in src/cli.rs:\n\
         {}\nRun `{BLESS_COMMAND}` to regenerate them, then commit the files.",
        problems.join("\n")
    );
}

/// Every option in the man page's OPTIONS has its description (the roff line after the
/// option's own line under `.TP`).
#[test]
fn man_page_describes_every_option() {
    let page = man_page();
    let lines: Vec<&str> = page.lines().collect();
    let mut bare = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if *line == ".TP" {
            let option = lines.get(i + 1).copied().unwrap_or_default();
            let description = lines.get(i + 2).copied().unwrap_or_default();
            if option.contains("\\-\\-")
                && (description.trim().is_empty() || description.starts_with('.'))
            {
                bare.push(option);
            }
        }
    }
    assert!(
        bare.is_empty(),
        "options without a description in the man page: {bare:?}"
    );
}

/// After `cargo install` there is no `man/` nor `completions/`: the binary prints the same files.
#[test]
fn generate_prints_the_committed_files() {
    bless_if_requested();
    for (kind, rel) in [
        ("man", MAN_PAGE),
        ("bash", BASH_COMPLETION),
        ("zsh", ZSH_COMPLETION),
        ("fish", FISH_COMPLETION),
    ] {
        let committed = fs::read_to_string(root().join(rel))
            .unwrap_or_else(|e| panic!("{rel} cannot be read: {e}"));
        let printed = generated_by_binary(kind);
        assert!(
            printed == committed,
            "`bakapara --generate {kind}` differs from {rel}: {}",
            first_difference(&committed, &printed)
        );
    }
    let bad = Command::new(env!("CARGO_BIN_EXE_bakapara"))
        .args(["--generate", "powershell"])
        .stdin(Stdio::null())
        .output()
        .expect("running bakapara --generate powershell");
    let err = text(&bad.stderr);
    assert!(
        bad.status.code() == Some(255)
            && bad.stdout.is_empty()
            && err.contains("man, bash, zsh, fish"),
        "{}",
        describe("an unknown --generate kind", &bad)
    );
}

// ---------------------------------------------------------------------------------------------
// The files work for a person

/// Runs a tool; a tool that is not installed fails the test, naming its Debian package.
/// Runs a tool in the crate root; a tool that is not installed fails the test, naming its
/// Debian package, and so does one that hangs.
fn run(package: &str, cmd: &mut Command) -> Output {
    let program = cmd.get_program().to_string_lossy().into_owned();
    cmd.current_dir(root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "`{program}` is not installed: install the `{package}` package \
             (apt-get install {package}; .ci/run does this on CI)"
        ),
        Err(e) => panic!("running `{program}`: {e}"),
    };
    let collect = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = collect(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = collect(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = Instant::now() + TOOL_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("`{program}` did not finish within {TOOL_TIMEOUT:?}: {cmd:?}");
            }
            Err(e) => panic!("waiting for `{program}`: {e}"),
        }
    };
    Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

fn require_file(path: &str, package: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: install the `{package}` package \
         (apt-get install {package}; .ci/run does this on CI)"
    );
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn describe(what: &str, output: &Output) -> String {
    format!(
        "{what}: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    )
}

/// A shell environment that reads no personal configuration.
fn isolated(cmd: &mut Command, home: &Path) {
    cmd.env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_DATA_HOME", home.join("data"))
        .env("XDG_CACHE_HOME", home.join("cache"))
        .env("XDG_RUNTIME_DIR", home)
        .env("LANG", "C.UTF-8")
        .env("LC_ALL", "C.UTF-8")
        .env_remove("ZDOTDIR")
        .env_remove("BASH_ENV")
        .env_remove("ENV");
}

/// Every long option of the CLI, as `--name`.
fn long_options() -> Vec<String> {
    command()
        .get_arguments()
        .filter(|a| !a.is_hide_set())
        .filter_map(|a| a.get_long())
        .map(|l| format!("--{l}"))
        .collect()
}

/// Checks what `man` shows (as a person gets it, through man-db) and what a strict groff run
/// (`-ww`: every warning, not only man-db's default `mac`) says about the source.
#[test]
fn man_page_renders_without_warnings() {
    bless_if_requested();
    let page = root().join(MAN_PAGE);

    let mut groff = Command::new("groff");
    groff
        .args(["-ww", "-z", "-b", "-man", "-Tutf8", "-rLL=80n", "-rLT=80n"])
        .arg(&page);
    let strict = run("groff-base", &mut groff);
    assert!(
        strict.status.success() && strict.stderr.is_empty(),
        "{}",
        describe("groff -ww reports problems in the man page source", &strict)
    );

    let mut man = Command::new("man");
    man.args(["--warnings=w", "-l", "-E", "UTF-8"])
        .arg(&page)
        .env("MANWIDTH", "80")
        .env("LANG", "C.UTF-8")
        .env("LC_ALL", "C.UTF-8")
        .env_remove("MANPAGER")
        .env_remove("PAGER")
        .env_remove("MAN_KEEP_FORMATTING")
        .env_remove("MANOPT")
        .env_remove("GROFF_SGR");
    let shown = run("man-db", &mut man);
    assert!(
        shown.status.success() && shown.stderr.is_empty(),
        "{}",
        describe("man --warnings reports problems", &shown)
    );
    let out = text(&shown.stdout);
    assert!(
        !out.contains('\u{8}'),
        "man wrote overstrike (backspace) formatting to a pipe:\n{out}"
    );

    // What the page must tell a reader, in text a reader can copy into a shell: ASCII hyphens
    // and apostrophes, not typographic ones.
    // Filled text is justified (runs of spaces) and wrapped: compare words, not layout.
    let flat = out.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut missing: Vec<String> = long_options()
        .into_iter()
        .filter(|o| !flat.contains(o.as_str()))
        .collect();
    let cmd = command();
    let after = cmd
        .get_after_long_help()
        .expect("the CLI has an after_long_help")
        .to_string();
    let expected = [
        "--keep-order",
        "--jobs",
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "OPTIONS",
        "RUNNING",
        "INPUT",
        "OUTPUT",
        "TEMPLATES",
        "JOB KEYS",
        "RESULT KEYS",
        "EXAMPLES",
        "EXIT STATUS",
        "VERSION",
        "Jobs come in on standard input",
        "bakapara [OPTIONS] [TEMPLATE]... [::: ARG... | :::: FILE...]...",
        "ls a*.txt | bakapara -j 2 'job < <> > </a/b>'",
        "bakapara 'gzip -9 <>' ::: *.log",
        "jq -c 'select(.result.code != 0)' results.jsonl",
        "ls *.fastq | bakapara -S node01/8,node02/8,:/2 'align <> > <.>.bam'",
        "engine_id",
        "msg_id",
    ];
    missing.extend(
        expected
            .iter()
            .filter(|s| !flat.contains(*s))
            .map(std::string::ToString::to_string),
    );
    // Every command line of the examples, verbatim.
    missing.extend(
        after
            .lines()
            .filter(|l| l.starts_with("    "))
            .map(str::trim)
            .filter(|l| !out.contains(l))
            .map(str::to_owned),
    );
    assert!(
        missing.is_empty(),
        "the rendered man page lacks {missing:?}:\n{out}"
    );
    let too_wide: Vec<&str> = out.lines().filter(|l| l.chars().count() > 80).collect();
    assert!(
        too_wide.is_empty(),
        "lines wider than MANWIDTH=80:\n{}",
        too_wide.join("\n")
    );
}

/// The words bash completes for `bakapara <words>`, by calling the completion function the way
/// readline does.
fn bash_completions(with_bash_completion: bool, words: &str) -> Output {
    let home = tempfile::tempdir().expect("temporary HOME");
    let setup = if with_bash_completion {
        ". /usr/share/bash-completion/bash_completion || exit 3\n"
    } else {
        ""
    };
    let script = format!(
        "{setup}source {BASH_COMPLETION} || exit 4\n\
         complete -p bakapara || exit 5\n\
         func=$(complete -p bakapara | sed -n 's/.* -F \\([^ ]*\\) .*/\\1/p')\n\
         [ -n \"$func\" ] || {{ echo 'no -F function registered' >&2; exit 6; }}\n\
         COMP_LINE='bakapara {words}'\n\
         COMP_POINT=${{#COMP_LINE}}\n\
         read -r -a COMP_WORDS <<< \"$COMP_LINE\"\n\
         COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))\n\
         COMP_TYPE=9\n\
         \"$func\" bakapara \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\" || exit 7\n\
         printf 'reply:%s\\n' \"${{COMPREPLY[@]}}\"\n"
    );
    let mut bash = Command::new("bash");
    bash.args(["--norc", "--noprofile", "-c", &script]);
    isolated(&mut bash, home.path());
    run("bash", &mut bash)
}

#[test]
fn bash_completion_loads() {
    bless_if_requested();
    require_file(
        "/usr/share/bash-completion/bash_completion",
        "bash-completion",
    );
    for with_bash_completion in [false, true] {
        let what = if with_bash_completion {
            "with bash-completion loaded"
        } else {
            "in plain bash"
        };
        let output = bash_completions(with_bash_completion, "--kee");
        assert!(
            output.status.success() && output.stderr.is_empty(),
            "{}",
            describe(&format!("{BASH_COMPLETION} fails {what}"), &output)
        );
        let out = text(&output.stdout);
        assert!(
            out.contains(" -F "),
            "{}",
            describe("`complete -p bakapara` shows no function", &output)
        );
        assert!(
            out.lines().any(|l| l == "reply:--keep-order"),
            "{}",
            describe(&format!("bash does not offer --keep-order {what}"), &output)
        );
    }
}

/// Runs a zsh script with the completion system initialised from `completions/`.
fn zsh(script: &str) -> Output {
    let home = tempfile::tempdir().expect("temporary HOME");
    let mut zsh = Command::new("zsh");
    zsh.args(["-f", "-c", script]);
    isolated(&mut zsh, home.path());
    // Fewer escape sequences in the zpty transcript that a failure shows.
    zsh.env("TERM", "dumb");
    run("zsh", &mut zsh)
}

#[test]
fn zsh_completion_loads() {
    bless_if_requested();
    // The file parses.
    let mut parse = Command::new("zsh");
    parse.args(["-n", "-f", ZSH_COMPLETION]);
    let parsed = run("zsh", &mut parse);
    assert!(
        parsed.status.success() && parsed.stderr.is_empty(),
        "{}",
        describe(&format!("zsh -n {ZSH_COMPLETION}"), &parsed)
    );

    // compinit finds it through fpath (its #compdef line), and it loads as a function.
    let loaded = zsh("fpath=(completions $fpath)\n\
         autoload -Uz compinit && compinit -u -D || exit 3\n\
         print -r -- \"comps:$_comps[bakapara]\"\n\
         autoload +X _bakapara || exit 4\n\
         whence -w _bakapara\n");
    assert!(
        loaded.status.success() && loaded.stderr.is_empty(),
        "{}",
        describe(
            &format!("loading {ZSH_COMPLETION} through compinit"),
            &loaded
        )
    );
    let out = text(&loaded.stdout);
    assert!(
        out.contains("comps:_bakapara") && out.contains("_bakapara: function"),
        "{}",
        describe("compinit did not register _bakapara for bakapara", &loaded)
    );

    // It completes: drive an interactive zsh in a pseudo-terminal and list the candidates for
    // `bakapara --kee`.
    let completed = zsh(ZSH_CAPTURE);
    let out = text(&completed.stdout);
    assert!(
        completed.status.success()
            && completed.stderr.is_empty()
            && out.lines().any(|l| l == "--keep-order"),
        "{}",
        describe(
            "zsh does not offer --keep-order for `bakapara --kee`",
            &completed
        )
    );
}

/// An interactive zsh in a zpty, with `compadd` wrapped to note every candidate it adds in
/// `$HOME/hits`; a widget bound to ^T runs `complete-word` and prints a marker (spelled in two
/// pieces so the terminal's echo of the command line does not match it). The outer zsh prints
/// the hits, or the terminal transcript when there are none.
const ZSH_CAPTURE: &str = r#"
zmodload zsh/zpty || exit 3
zpty z zsh -f -i
zpty -w z 'PROMPT= RPROMPT= ; unset zle_bracketed_paste; fpath=(completions $fpath)'
zpty -w z 'autoload -Uz compinit && compinit -u -D'
zpty -w z 'zstyle ":completion:*" list-grouped false; zstyle ":completion:*" verbose no'
zpty -w z 'compadd () {
  if [[ ${@[1,(i)(-|--)]} == *-(O|A|D)\ * ]]; then builtin compadd "$@"; return $?; fi
  local -a hits; builtin compadd -A hits "$@"
  local h; for h in $hits; do print -r -- "$h" >> $HOME/hits; done
  builtin compadd "$@"
}'
zpty -w z 'capture () { : > $HOME/hits; zle complete-word; print -r -- "<<<DO""NE>>>"; }'
zpty -w z 'zle -N capture; bindkey "^T" capture; print -r -- "<<<REA""DY>>>"'
zpty -r -m z transcript '*<<<READY>>>*' || exit 4
zpty -w -n z $'bakapara --kee\C-t'
zpty -r -m z line '*<<<DONE>>>*' || exit 5
transcript+=$line
zpty -d z
[[ -s $HOME/hits ]] || { print -u2 -r -- "no completion candidates; the terminal showed:"; print -u2 -r -- "$transcript"; exit 6 }
cat $HOME/hits
"#;

#[test]
fn fish_completion_loads() {
    bless_if_requested();
    let home = tempfile::tempdir().expect("temporary HOME");
    let mut fish = Command::new("fish");
    fish.args([
        OsStr::new("--no-config"),
        OsStr::new("-c"),
        OsStr::new(&format!(
            "source {FISH_COMPLETION}; or exit 3; complete -C'bakapara --kee'"
        )),
    ]);
    isolated(&mut fish, home.path());
    let output = run("fish", &mut fish);
    assert!(
        output.status.success() && output.stderr.is_empty(),
        "{}",
        describe(&format!("fish cannot source {FISH_COMPLETION}"), &output)
    );
    let out = text(&output.stdout);
    assert!(
        out.lines()
            .any(|l| l.split('\t').next() == Some("--keep-order")),
        "{}",
        describe(
            "fish does not offer --keep-order for `bakapara --kee`",
            &output
        )
    );
}

/// The after-help renderer hands every character to roff safely: backslashes, dashes, and
/// lines that start with `.` or `'` (which roff would take for requests) come out as written.
#[test]
fn after_help_rendering_escapes_roff() {
    let help = "\
NOTES:
  .profile and 'quoted' words, C:\\dir\\new and \\fB not bold, -x --long.
  'leading apostrophe line
  .leading dot line

EXAMPLES:
  Odd characters:
    .hidden \\ 'arg' --flag \\n
    'quoted' -n
";
    let mut roff = Roff::new();
    roff.control("TH", ["CHECK", "1"]);
    roff.extend([after_help_sections(help)]);
    let source = roff.render();
    for needle in [
        r"\&.profile",
        r"\*(Aqleading",
        r"\&.hidden",
        r"C:\\dir",
        r"\-\-long",
    ] {
        assert!(
            source.contains(needle),
            "{needle:?} not in the roff source:\n{source}"
        );
    }
    let dir = tempfile::tempdir().expect("temporary folder");
    let page = dir.path().join("check.1");
    fs::write(&page, &source).expect("writing the test page");
    let mut groff = Command::new("groff");
    groff
        .args(["-ww", "-b", "-man", "-Tutf8", "-rLL=80n", "-rLT=80n"])
        .arg(&page);
    let output = run("groff-base", &mut groff);
    assert!(
        output.status.success() && output.stderr.is_empty(),
        "{}",
        describe("groff -ww on the rendered after-help", &output)
    );
    let out = text(&output.stdout);
    let flat = out.split_whitespace().collect::<Vec<_>>().join(" ");
    for expected in [
        r".profile and 'quoted' words, C:\dir\new and \fB not bold, -x --long. 'leading apostrophe line .leading dot line",
        "Odd characters:",
    ] {
        assert!(flat.contains(expected), "{expected:?} not in:\n{out}");
    }
    for line in [r".hidden \ 'arg' --flag \n", "'quoted' -n"] {
        assert!(
            out.lines().any(|l| l.trim() == line),
            "literal line {line:?} not in:\n{out}"
        );
    }
}
