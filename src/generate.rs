//! `--generate`: the man page and the shell completions, rendered from the clap definition
//! [`crate::cli::Cli`]. The committed `man/` and `completions/` files are this output
//! (tests/integration/generated_docs.rs fails when they are stale); after `cargo install` the binary prints
//! them itself, as ripgrep's `--generate` does.

use std::io::Write;

use clap_complete::Shell;
use clap_mangen::roff::{bold, italic, roman, Roff};

use crate::cli::{Cli, Generate};

/// What `--generate KIND` prints.
#[must_use]
pub fn generate(kind: Generate) -> String {
    match kind {
        Generate::Man => man_page(),
        Generate::Bash => completion(Shell::Bash),
        Generate::Zsh => completion(Shell::Zsh),
        Generate::Fish => completion(Shell::Fish),
    }
}

fn command() -> clap::Command {
    let mut cmd = Cli::clap_command();
    cmd.build();
    cmd
}

/// The completion script for `shell`.
#[must_use]
pub fn completion(shell: Shell) -> String {
    let mut cmd = command();
    let name = cmd.get_name().to_owned();
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// The whole page: every section `clap_mangen` renders, except that `after_long_help` (which
/// `clap_mangen` would pour, unformatted, into one EXTRA section) becomes real sections.
pub fn man_page() -> String {
    // clap_mangen describes an option by its long help, else by its short help unless that is
    // hidden; the options `-h` leaves out (hide_short_help) with a one-paragraph doc have no
    // long help, so give them their help as long help.
    let cmd = command().mut_args(|arg| match (arg.get_long_help(), arg.get_help()) {
        (None, Some(help)) if arg.is_hide_short_help_set() => {
            let help = help.clone();
            arg.long_help(help)
        }
        _ => arg,
    });
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
    // Writing into memory cannot fail.
    let _ = part(man, &mut buf);
    String::from_utf8_lossy(&buf).into_owned()
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
#[must_use]
pub fn after_help_sections(text: &str) -> Roff {
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
            .filter_map(|b| match b {
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
