//! The man page `man/bakapara.1` and the shell completions in `completions/` are generated from
//! the clap definition [`bakapara::cli::Cli`] and committed (SPEC §6). `generated_files_are_fresh`
//! fails when they are stale; `BAKAPARA_BLESS=1 cargo test --test generated_docs` rewrites them.
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
use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::roff::{bold, italic, roman, Roff};

/// Set this (to anything but empty or `0`) to rewrite the generated files instead of checking.
const BLESS_VAR: &str = "BAKAPARA_BLESS";
const BLESS_COMMAND: &str = "BAKAPARA_BLESS=1 cargo test --test generated_docs";

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

fn completion(shell: Shell) -> String {
    let mut cmd = command();
    let name = cmd.get_name().to_owned();
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut buf);
    String::from_utf8(buf).expect("completion script is UTF-8")
}

// ---------------------------------------------------------------------------------------------
// The man page

/// The whole page: every section clap_mangen renders, except that `after_long_help` (which
/// clap_mangen would pour, unformatted, into one EXTRA section) becomes real sections.
fn man_page() -> String {
    let cmd = command();
    let version = cmd.get_version().unwrap_or_default().to_owned();
    let man = clap_mangen::Man::new(cmd.clone())
        .title(cmd.get_name().to_uppercase())
        .section("1")
        // No date: it would change with every run. An explicitly empty argument keeps the
        // following .TH arguments in place (clap_mangen writes nothing at all for "").
        .date("\"\"")
        .source(format!("{} {version}", cmd.get_name()))
        .manual("User Commands");

    let mut chunks: Vec<String> = vec![
        render_part(&man, clap_mangen::Man::render_title),
        render_part(&man, clap_mangen::Man::render_name_section),
    ];
    // The usage line of `--help`. clap_mangen would list every option instead and ignore
    // `override_usage`, which is where the CLI spells out its `:::` / `::::` input sources.
    let usage = cmd.clone().render_usage().to_string();
    chunks.push(match usage.strip_prefix("Usage:") {
        Some(usage) => synopsis(cmd.get_name(), usage).render(),
        None => render_part(&man, clap_mangen::Man::render_synopsis_section),
    });
    chunks.push(render_part(
        &man,
        clap_mangen::Man::render_description_section,
    ));
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        chunks.push(render_part(&man, clap_mangen::Man::render_options_section));
    }
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        chunks.push(render_part(
            &man,
            clap_mangen::Man::render_subcommands_section,
        ));
    }
    if let Some(after) = cmd.get_after_long_help().or_else(|| cmd.get_after_help()) {
        chunks.push(after_help_sections(&after.to_string()).render());
    }
    if cmd
        .get_version()
        .or_else(|| cmd.get_long_version())
        .is_some()
    {
        chunks.push(render_part(&man, clap_mangen::Man::render_version_section));
    }
    if cmd.get_author().is_some() {
        chunks.push(render_part(&man, clap_mangen::Man::render_authors_section));
    }

    // Each rendered chunk starts with the same preamble (the apostrophe string); keep one.
    let preamble = Roff::new().render();
    let mut page = String::new();
    for (i, chunk) in chunks.iter().enumerate() {
        match chunk.strip_prefix(&preamble) {
            Some(rest) if i > 0 => page.push_str(rest),
            _ => page.push_str(chunk),
        }
    }
    page
}

fn render_part(
    man: &clap_mangen::Man,
    part: fn(&clap_mangen::Man, &mut dyn Write) -> std::io::Result<()>,
) -> String {
    let mut buf = Vec::new();
    part(man, &mut buf).expect("rendering into memory");
    String::from_utf8(buf).expect("man page is UTF-8")
}

/// The SYNOPSIS from a usage string, one line per usage line: the command name and the `:::`
/// markers in bold (typed as they are), upper-case placeholders in italics.
fn synopsis(name: &str, usage: &str) -> Roff {
    let mut roff = Roff::new();
    roff.control("SH", ["SYNOPSIS"]);
    for (i, line) in usage.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        if i > 0 {
            roff.control("br", []);
        }
        let line = line.trim();
        let (head, rest) = match line.strip_prefix(name) {
            Some(rest) => (Some(name), rest),
            None => (None, line),
        };
        let mut inlines = Vec::new();
        inlines.extend(head.map(bold));
        let mut run = String::new();
        let mut kind = 0; // 0 roman, 1 italic (placeholder), 2 bold (`:`)
        for c in rest.chars() {
            let k = match c {
                'A'..='Z' | '0'..='9' | '_' if kind == 1 || c.is_ascii_uppercase() => 1,
                ':' => 2,
                _ => 0,
            };
            if k != kind && !run.is_empty() {
                inlines.push(inline_of(kind, std::mem::take(&mut run)));
            }
            kind = k;
            run.push(c);
        }
        if !run.is_empty() {
            inlines.push(inline_of(kind, run));
        }
        roff.text(inlines);
    }
    roff
}

fn inline_of(kind: u8, text: String) -> clap_mangen::roff::Inline {
    match kind {
        1 => italic(text),
        2 => bold(text),
        _ => roman(text),
    }
}

/// One block of the `after_long_help` text.
#[derive(Debug)]
enum Block {
    /// Lines at the section's base indentation: one filled paragraph.
    Prose(Vec<String>),
    /// Lines of `TERM  definition  TERM  definition...` cells (split at two or more spaces).
    Terms(Vec<(String, String)>),
    /// Deeper-indented lines (commands) or other column layouts: kept as they are.
    Literal { indent: usize, lines: Vec<String> },
}

/// Renders the `after_long_help` text as man sections. It understands the layout the help
/// text uses: a line `HEADING:` at column 0 starts a section; within it, lines at the base
/// indentation are prose (consecutive ones form one paragraph, a blank line ends it), lines
/// made of an even number of cells separated by two or more spaces are term/definition pairs,
/// and deeper-indented lines are literal (examples), shown unfilled with their extra indent.
fn after_help_sections(text: &str) -> Roff {
    let mut sections: Vec<(String, Vec<&str>)> = Vec::new();
    for line in text.lines() {
        let heading = line
            .strip_suffix(':')
            .filter(|h| !h.is_empty() && !line.starts_with(char::is_whitespace))
            .filter(|h| {
                h.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == ' ')
            });
        match (heading, sections.last_mut()) {
            (Some(h), _) => sections.push((h.to_owned(), Vec::new())),
            (None, Some((_, lines))) => lines.push(line),
            (None, None) if line.trim().is_empty() => {}
            (None, None) => sections.push(("NOTES".to_owned(), vec![line])),
        }
    }

    let mut roff = Roff::new();
    for (heading, lines) in sections {
        roff.control("SH", [heading.as_str()]);
        let blocks = blocks(&lines);
        let term_width = blocks
            .iter()
            .flat_map(|b| match b {
                Block::Terms(pairs) => pairs.iter().map(|(t, _)| t.chars().count()).max(),
                _ => None,
            })
            .max()
            .unwrap_or(0)
            + 2;
        let term_width = term_width.to_string();
        let mut previous: Option<&Block> = None;
        for block in &blocks {
            match block {
                Block::Prose(lines) => {
                    if previous.is_some() {
                        roff.control("PP", []);
                    }
                    for line in lines {
                        roff.text([roman(line.as_str())]);
                    }
                }
                Block::Terms(pairs) => {
                    // A compact table: no blank line between the entries.
                    roff.control("PD", ["0"]);
                    for (term, definition) in pairs {
                        roff.control("TP", [term_width.as_str()]);
                        roff.text([bold(term.as_str())]);
                        roff.text([roman(definition.as_str())]);
                    }
                    roff.control("PD", []);
                }
                Block::Literal { indent, lines } => {
                    if matches!(previous, Some(Block::Terms(_))) {
                        roff.control("PP", []);
                    }
                    let indent = indent.to_string();
                    roff.control("RS", [indent.as_str()]);
                    roff.control("nf", []);
                    for line in lines {
                        roff.text([roman(line.as_str())]);
                    }
                    roff.control("fi", []);
                    roff.control("RE", []);
                }
            }
            previous = Some(block);
        }
    }
    roff
}

fn blocks(lines: &[&str]) -> Vec<Block> {
    let indent_of = |l: &str| l.len() - l.trim_start().len();
    let base = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| indent_of(l))
        .min()
        .unwrap_or(0);
    let mut blocks: Vec<Block> = Vec::new();
    let mut paragraph_ended = true;
    for line in lines {
        if line.trim().is_empty() {
            paragraph_ended = true;
            continue;
        }
        let indent = indent_of(line) - base;
        let cells: Vec<&str> = split_cells(line.trim());
        let last = if paragraph_ended {
            None
        } else {
            blocks.last_mut()
        };
        paragraph_ended = false;
        if indent > 0 {
            match last {
                Some(Block::Literal {
                    indent: block_indent,
                    lines,
                }) if indent >= *block_indent => lines.push(format!(
                    "{}{}",
                    " ".repeat(indent - *block_indent),
                    line.trim()
                )),
                _ => blocks.push(Block::Literal {
                    indent,
                    lines: vec![line.trim().to_owned()],
                }),
            }
        } else if cells.len() >= 2 && cells.len() % 2 == 0 {
            let pairs = cells.chunks(2).map(|c| (c[0].to_owned(), c[1].to_owned()));
            match last {
                Some(Block::Terms(existing)) => existing.extend(pairs),
                _ => blocks.push(Block::Terms(pairs.collect())),
            }
        } else if cells.len() >= 2 {
            match last {
                Some(Block::Literal { indent: 0, lines }) => lines.push(line.trim().to_owned()),
                _ => blocks.push(Block::Literal {
                    indent: 0,
                    lines: vec![line.trim().to_owned()],
                }),
            }
        } else {
            match last {
                Some(Block::Prose(lines)) => lines.push(line.trim().to_owned()),
                _ => blocks.push(Block::Prose(vec![line.trim().to_owned()])),
            }
        }
    }
    blocks
}

/// Splits at runs of two or more spaces.
fn split_cells(line: &str) -> Vec<&str> {
    let mut cells = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("  ") {
        cells.push(&rest[..at]);
        rest = rest[at..].trim_start_matches(' ');
    }
    cells.push(rest);
    cells.retain(|c| !c.is_empty());
    cells
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
            (Some(a), Some(b)) if a == b => continue,
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
            .map(|s| s.to_string()),
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
