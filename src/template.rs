//! The template language of SPEC §2: parse once, expand per job (pure code).
//!
//! A token is `<`, then no whitespace and no `<`, then `>`; everything else is literal
//! text. A token is `<BASE OP>`:
//!
//! * BASE: empty (the whole item), digits `N` (the N-th column, from 1), `-N` (the N-th
//!   from the end), an identifier `name` (a field of a JSON input object), `#` (sequence
//!   number) or `%` (slot number).
//! * OP: none, `.` (without extension), `/` (basename), `//` (dirname), `/.` (basename
//!   without extension), `/RE/REP` (first match replaced), `//RE/REP` (every match
//!   replaced). `#` and `%` take no OP.
//!
//! The path operators reproduce GNU Parallel's `{.}` `{/}` `{//}` `{/.}` exactly (they are
//! Perl substitutions there: `s:\.[^/.]*$::`, `s:.*/::` and `File::Basename::dirname`).
//!
//! [`Syntax::Braces`] (`--braces`) reads the same tokens written GNU Parallel's way, `{BASE OP}`
//! (`{}` `{.}` `{2/}` `{-1}` `{#}` `{/RE/REP}`...), through the same token parser. There `<`
//! is plain text, and so is a brace group that is not a token (`awk '{print $1}'`, `{a,b}`,
//! `{1..3}`, `${HOME}`), as GNU Parallel leaves such groups alone; only a token whose regex or
//! replacement is wrong is an error.
//!
//! [`Template::parse`] does all the work that does not depend on the job (splitting,
//! regex compilation, resolving `$1` in replacements), so [`Template::expand`] only
//! copies text into one preallocated `String`.

use std::borrow::Cow;
use std::fmt::Write as _;

use regex::Regex;
use serde_json::{Map, Value};

/// Where a template's values come from for one job.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The input item's sources or columns, in order (`<1>`, `<2>`...). `<>` joins them with one space.
    pub args: &'a [String],
    /// The fields of a JSON input object (`<name>`), when the item is one.
    pub fields: Option<&'a Map<String, Value>>,
    /// The job's sequence number, from 1 (`<#>`).
    pub seq: u64,
    /// The slot number the job runs in, from 1 (`<%>`).
    pub slot: usize,
    /// The number of jobs of the run, once input has ended (`<##>`, `<0#>`).
    pub total: Option<u64>,
}

/// How a value is inserted into the expanded text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quoting {
    /// As one shell word (the default for `cmd`).
    Shell,
    /// Verbatim (`--no-quote`, and the path templates `--out` / `--err` / `--cd`).
    Verbatim,
}

/// How a template writes its tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    /// bakapara's `<...>` tokens: anything between `<` and `>` (no whitespace) is a token, and
    /// one that means nothing is an error.
    Angle,
    /// `--braces`: GNU Parallel's `{...}` tokens; a brace group that is not a token is text.
    /// `fields`: whether `{name}` reads a field of the input object (`--jsonl`); without it,
    /// `{name}` is text, as in GNU Parallel.
    Braces { fields: bool },
}

/// A template that failed to parse: names the token and its 1-based column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} in token `{token}` at column {column}")]
pub struct ParseError {
    pub token: String,
    pub column: usize,
    pub message: String,
}

/// A template that could not be expanded for one job (a missing field or column).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ExpandError(pub String);

/// A parsed template: literal text and tokens, ready to expand once per job.
#[derive(Debug, Clone)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
    /// Total length of the literal parts (for preallocation).
    literal_len: usize,
    token_count: usize,
    uses_slot: bool,
    uses_total: bool,
    syntax: Syntax,
    several: Several,
    /// [`Several::Context`]: the template's words, split at whitespace.
    words: Vec<Word>,
}

/// How a template reads a job that holds several input items (`-N`, `-m`, `-X`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Several {
    /// One item per job: `<>` is the item as one shell word.
    No,
    /// `-N`, `-m`: `<>` is every value, each its own shell word, separated by spaces; a `<N>`
    /// past the last value is empty (as GNU Parallel's `{N}` with too few arguments).
    Values,
    /// `-X`: as `Values`, but a word holding a `<>` token is repeated once per value, each
    /// time with that value (GNU Parallel's context replace).
    Context,
}

#[derive(Debug, Clone)]
enum Word {
    Space(String),
    Text { template: Template, repeat: bool },
}

#[derive(Debug, Clone)]
enum Part {
    Literal(String),
    Token(Token),
}

#[derive(Debug, Clone)]
struct Token {
    /// The token as written, `<` and `>` included (for error messages).
    text: String,
    base: Base,
    op: Op,
}

#[derive(Debug, Clone)]
enum Base {
    /// `<>`: the whole item.
    Whole,
    /// `<N>`: the N-th column, from 1.
    Column(usize),
    /// `<-N>`: the N-th column from the end, from 1.
    FromEnd(usize),
    /// `<name>`: a field of a JSON object item.
    Field(String),
    /// `<#>`.
    Seq,
    /// `<%>`.
    Slot,
    /// `<##>`: the number of jobs (GNU Parallel's `--plus` `{##}`).
    Total,
    /// `<0#>`: the sequence number, zero-padded to the width of the total.
    PaddedSeq,
}

#[derive(Debug, Clone)]
enum Op {
    None,
    /// `.`
    NoExtension,
    /// `/`
    Basename,
    /// `//`
    Dirname,
    /// `/.`
    BasenameNoExtension,
    /// `..` / `...`: without two / three extensions (GNU Parallel's `--plus` `{..}`).
    NoExtensions(usize),
    /// `/..` / `/...`: basename without two / three extensions.
    BasenameNoExtensions(usize),
    /// `+/`: what `/` removes (the directory, without the last slash; empty for a bare name).
    Directory,
    /// `+.` / `+..` / `+...`: what `.`, `..`, `...` remove (the extensions, without the dot).
    Extensions(usize),
    /// `/RE/REP` (`all == false`) and `//RE/REP` (`all == true`).
    Replace(Box<Replace>),
}

#[derive(Debug, Clone)]
struct Replace {
    re: Regex,
    rep: Vec<RepPart>,
    /// Whether `rep` refers to a capture group (otherwise the cheaper `find_at` is enough).
    uses_groups: bool,
    all: bool,
}

#[derive(Debug, Clone)]
enum RepPart {
    Literal(String),
    Group(usize),
}

impl Template {
    /// Parses `source` in the `<...>` syntax; fails on an unknown token or a bad regex,
    /// naming the token and its 1-based (character) column.
    pub fn parse(source: &str) -> Result<Template, ParseError> {
        Template::parse_in(source, Syntax::Angle)
    }

    /// Parses `source` in the given syntax. In [`Syntax::Braces`] only a token with a bad
    /// regex or replacement (or an absurd column number) fails; other groups are text.
    pub fn parse_in(source: &str, syntax: Syntax) -> Result<Template, ParseError> {
        let (open, close) = match syntax {
            Syntax::Angle => ('<', '>'),
            Syntax::Braces { .. } => ('{', '}'),
        };
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut literal_len = 0;
        let mut token_count = 0;
        let mut uses_slot = false;
        let mut uses_total = false;
        let mut rest_start = 0; // start of the not yet consumed text
        let mut search = 0; // where to look for the next `<`
        while let Some(off) = source[search..].find(open) {
            let lt = search + off;
            let Some(gt) = token_end(source, lt, open, close) else {
                // An opening character that does not open a token is literal text.
                search = lt + 1;
                continue;
            };
            let text = &source[lt..=gt];
            let error = |message| ParseError {
                token: text.to_string(),
                column: source[..lt].chars().count() + 1,
                message,
            };
            let (base, op) = match (syntax, parse_token(&source[lt + 1..gt])) {
                (_, Ok((Base::Field(_), _))) if syntax == (Syntax::Braces { fields: false }) => {
                    search = lt + 1;
                    continue;
                }
                // `${name}` is the shell's.
                (Syntax::Braces { .. }, Ok(_)) if source[..lt].ends_with('$') => {
                    search = lt + 1;
                    continue;
                }
                (_, Ok(token)) => token,
                (Syntax::Braces { .. }, Err(Rejected::NotAToken(_))) => {
                    search = lt + 1;
                    continue;
                }
                (Syntax::Angle, Err(Rejected::NotAToken(m) | Rejected::Bad(m)))
                | (Syntax::Braces { .. }, Err(Rejected::Bad(m))) => return Err(error(m)),
            };
            literal.push_str(&source[rest_start..lt]);
            if !literal.is_empty() {
                literal_len += literal.len();
                parts.push(Part::Literal(std::mem::take(&mut literal)));
            }
            uses_slot |= matches!(base, Base::Slot);
            uses_total |= matches!(base, Base::Total | Base::PaddedSeq);
            token_count += 1;
            parts.push(Part::Token(Token {
                text: text.to_string(),
                base,
                op,
            }));
            rest_start = gt + 1;
            search = gt + 1;
        }
        literal.push_str(&source[rest_start..]);
        if !literal.is_empty() {
            literal_len += literal.len();
            parts.push(Part::Literal(literal));
        }
        Ok(Template {
            source: source.to_string(),
            parts,
            literal_len,
            token_count,
            uses_slot,
            uses_total,
            syntax,
            several: Several::No,
            words: Vec::new(),
        })
    }

    /// The same template for jobs of several input items (`-N`, `-m`, `-X`).
    #[must_use]
    pub fn for_several(mut self, several: Several) -> Template {
        self.several = several;
        if several == Several::Context {
            self.words = self.context_words();
        }
        self
    }

    /// The words of the template, split at whitespace; tokens never hold whitespace, so each
    /// word parses on its own as it did within the whole.
    fn context_words(&self) -> Vec<Word> {
        let mut words = Vec::new();
        let source = self.source.as_str();
        let mut start = 0;
        while start < source.len() {
            let rest = &source[start..];
            let space = rest.starts_with(char::is_whitespace);
            let len = rest
                .find(|c: char| c.is_whitespace() != space)
                .unwrap_or(rest.len());
            let text = &rest[..len];
            if space {
                words.push(Word::Space(text.to_string()));
            } else {
                let Ok(template) = Template::parse_in(text, self.syntax) else {
                    return Vec::new();
                };
                let repeat = template.parts.iter().any(|part| {
                    matches!(
                        part,
                        Part::Token(Token {
                            base: Base::Whole,
                            ..
                        })
                    )
                });
                words.push(Word::Text {
                    template: template.for_several(Several::Values),
                    repeat,
                });
            }
            start += len;
        }
        words
    }

    /// How many `<>` tokens the template holds and, with [`Several::Context`], the bytes of
    /// literal text in the words that are repeated per value: what each value adds to the
    /// expanded text, besides itself (see [`crate::input::Grouping`]).
    #[must_use]
    pub fn growth_per_value(&self) -> (usize, usize) {
        let copies = self
            .parts
            .iter()
            .filter(|part| {
                matches!(
                    part,
                    Part::Token(Token {
                        base: Base::Whole,
                        ..
                    })
                )
            })
            .count();
        let extra = self
            .words
            .iter()
            .map(|word| match word {
                Word::Text {
                    template,
                    repeat: true,
                } => template.literal_len,
                _ => 0,
            })
            .sum();
        (copies, extra)
    }

    /// The bytes of literal text (what a job's expanded command holds besides values).
    #[must_use]
    pub fn literal_len(&self) -> usize {
        self.literal_len
    }

    /// The template text as given to [`Template::parse`].
    #[must_use]
    pub fn source(&self) -> &str {
        &self.source
    }

    /// True when the template holds at least one token.
    #[must_use]
    pub fn has_tokens(&self) -> bool {
        self.token_count > 0
    }

    /// The `<name>` tokens (fields of a JSON object item), as written, with their 1-based
    /// (character) columns: only `--jsonl` input has fields.
    #[must_use]
    pub fn field_tokens(&self) -> Vec<(&str, usize)> {
        let mut column = 1;
        let mut found = Vec::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => column += text.chars().count(),
                Part::Token(token) => {
                    if let Base::Field(_) = token.base {
                        found.push((token.text.as_str(), column));
                    }
                    column += token.text.chars().count();
                }
            }
        }
        found
    }

    /// The first token as written, if there is one.
    #[must_use]
    pub fn first_token(&self) -> Option<&str> {
        self.parts.iter().find_map(|part| match part {
            Part::Token(token) => Some(token.text.as_str()),
            Part::Literal(_) => None,
        })
    }

    /// True when a token uses `<%>` (the value depends on the slot).
    #[must_use]
    pub fn uses_slot(&self) -> bool {
        self.uses_slot
    }

    /// True when a token uses `<##>` or `<0#>`: the job needs the number of jobs, known
    /// only once input has ended.
    #[must_use]
    pub fn uses_total(&self) -> bool {
        self.uses_total
    }

    /// Expands the template for one job. With [`Quoting::Shell`] every value becomes one
    /// shell word (quoted only when needed); with [`Quoting::Verbatim`] it is inserted as is.
    pub fn expand(&self, ctx: &Context<'_>, quoting: Quoting) -> Result<String, ExpandError> {
        if !self.words.is_empty() {
            return self.expand_words(ctx, quoting);
        }
        let item_len: usize = ctx.args.iter().map(|a| a.len() + 1).sum();
        let mut out = String::with_capacity(self.literal_len + self.token_count * (item_len + 8));
        let several = self.several != Several::No;
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Token(token) => expand_token(token, ctx, quoting, several, &mut out)?,
            }
        }
        Ok(out)
    }

    /// [`Several::Context`]: each word holding `<>` once per value, joined by spaces.
    fn expand_words(&self, ctx: &Context<'_>, quoting: Quoting) -> Result<String, ExpandError> {
        let mut out = String::new();
        for word in &self.words {
            match word {
                Word::Space(text) => out.push_str(text),
                Word::Text {
                    template,
                    repeat: false,
                } => out.push_str(&template.expand(ctx, quoting)?),
                Word::Text {
                    template,
                    repeat: true,
                } => {
                    for (i, value) in ctx.args.iter().enumerate() {
                        if i > 0 {
                            out.push(' ');
                        }
                        let one = Context {
                            args: std::slice::from_ref(value),
                            ..*ctx
                        };
                        out.push_str(&template.expand(&one, quoting)?);
                    }
                }
            }
        }
        Ok(out)
    }
}

/// Quotes `s` as one POSIX shell word: unchanged when it only holds characters that are
/// never special (`A-Za-z0-9_-./:@+,`), else in single quotes (`'` written as `'\''`).
/// The empty string becomes `''`.
///
/// (`shell_words::quote` is not used: it leaves `{a,b}` unquoted, which bash brace-expands.)
pub fn shell_quote(s: &str) -> Cow<'_, str> {
    if !s.is_empty() && s.bytes().all(is_shell_safe) {
        Cow::Borrowed(s)
    } else {
        let mut out = String::with_capacity(s.len() + 2);
        push_shell_quoted(&mut out, s);
        Cow::Owned(out)
    }
}

fn is_shell_safe(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/' | b':' | b'@' | b'+' | b',')
}

fn push_shell_quoted(out: &mut String, s: &str) {
    if !s.is_empty() && s.bytes().all(is_shell_safe) {
        out.push_str(s);
        return;
    }
    out.reserve(s.len() + 2);
    out.push('\'');
    for (i, piece) in s.split('\'').enumerate() {
        if i > 0 {
            out.push_str("'\\''");
        }
        out.push_str(piece);
    }
    out.push('\'');
}

/// If the `open` at byte `lt` opens a token, the byte index of its `close`.
fn token_end(source: &str, lt: usize, open: char, close: char) -> Option<usize> {
    for (i, c) in source[lt + 1..].char_indices() {
        if c == close {
            return Some(lt + 1 + i);
        }
        if c == open || c.is_whitespace() {
            return None;
        }
    }
    None
}

/// Why a token body was refused.
enum Rejected {
    /// It is not a token at all (`--braces` leaves such a group as text).
    NotAToken(String),
    /// It is a token with a bad part: a regex that does not compile, a replacement that
    /// refers to a group it lacks, a column number out of range.
    Bad(String),
}

impl From<String> for Rejected {
    fn from(message: String) -> Rejected {
        Rejected::NotAToken(message)
    }
}

const OPS_HELP: &str =
    "`.`, `/`, `//`, `/.`, `..`, `...`, `+/`, `+.`, `+..`, `/RE/REP` or `//RE/REP`";

/// Parses a token's body (between `<` and `>`); the error is the message only.
fn parse_token(body: &str) -> Result<(Base, Op), Rejected> {
    let first = body.chars().next();
    match body {
        "##" => return Ok((Base::Total, Op::None)),
        "0#" => return Ok((Base::PaddedSeq, Op::None)),
        _ => {}
    }
    let (base, rest) = match first {
        Some('#' | '%') => {
            let base = if first == Some('#') {
                Base::Seq
            } else {
                Base::Slot
            };
            if body.len() > 1 {
                return Err(format!("`<{}>` takes no operator", &body[..1]).into());
            }
            return Ok((base, Op::None));
        }
        Some(c)
            if c.is_ascii_digit()
                || (c == '-' && body[1..].starts_with(|d: char| d.is_ascii_digit())) =>
        {
            let from_end = c == '-';
            let start = usize::from(from_end);
            let end = body[start..]
                .find(|c: char| !c.is_ascii_digit())
                .map_or(body.len(), |i| start + i);
            let digits = &body[start..end];
            let n: usize = digits
                .parse()
                .map_err(|_| Rejected::Bad(format!("column number {digits} is too large")))?;
            if n == 0 {
                return Err("columns count from 1, there is no column 0"
                    .to_string()
                    .into());
            }
            let base = if from_end {
                Base::FromEnd(n)
            } else {
                Base::Column(n)
            };
            (base, &body[end..])
        }
        Some(c) if c == '_' || c.is_ascii_alphabetic() => {
            let end = body
                .find(|c: char| !(c == '_' || c.is_ascii_alphanumeric()))
                .unwrap_or(body.len());
            (Base::Field(body[..end].to_string()), &body[end..])
        }
        _ => (Base::Whole, body),
    };
    let op = match rest {
        "" => Op::None,
        "." => Op::NoExtension,
        "/" => Op::Basename,
        "//" => Op::Dirname,
        "/." => Op::BasenameNoExtension,
        ".." => Op::NoExtensions(2),
        "..." => Op::NoExtensions(3),
        "/.." => Op::BasenameNoExtensions(2),
        "/..." => Op::BasenameNoExtensions(3),
        "+/" => Op::Directory,
        "+." => Op::Extensions(1),
        "+.." => Op::Extensions(2),
        "+..." => Op::Extensions(3),
        _ => {
            if let Some(spec) = rest.strip_prefix("//") {
                parse_replace(spec, true)?
            } else if let Some(spec) = rest.strip_prefix('/') {
                parse_replace(spec, false)?
            } else if matches!(base, Base::Whole) {
                return Err(format!(
                    "unknown token: expected `<>`, `<N>`, `<-N>`, `<name>`, `<#>`, `<%>`, `<##>` \
                     or `<0#>`, optionally followed by {OPS_HELP}"
                )
                .into());
            } else {
                return Err(format!("unknown operator `{rest}` (expected {OPS_HELP})").into());
            }
        }
    };
    Ok((base, op))
}

/// Parses `RE/REP` (what follows the leading `/` or `//`).
fn parse_replace(spec: &str, all: bool) -> Result<Op, Rejected> {
    let mut pattern = String::new();
    let mut chars = spec.char_indices();
    let mut rep_start = None;
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, '/')) => pattern.push('/'),
                Some((_, other)) => {
                    pattern.push('\\');
                    pattern.push(other);
                }
                None => pattern.push('\\'),
            },
            '/' => {
                rep_start = Some(i + 1);
                break;
            }
            _ => pattern.push(c),
        }
    }
    let Some(rep_start) = rep_start else {
        return Err(
            "missing replacement: write `/RE/REP` (`\\/` for a literal slash)"
                .to_string()
                .into(),
        );
    };
    if pattern.is_empty() {
        return Err("empty regex in `/RE/REP`".to_string().into());
    }
    let re = Regex::new(&pattern)
        .map_err(|e| Rejected::Bad(format!("bad regex `{pattern}`: {}", regex_error(&e))))?;
    let rep = parse_replacement(&spec[rep_start..], &re).map_err(Rejected::Bad)?;
    let uses_groups = rep.iter().any(|p| matches!(p, RepPart::Group(_)));
    Ok(Op::Replace(Box::new(Replace {
        re,
        rep,
        uses_groups,
        all,
    })))
}

/// The one-line reason of a regex error (the crate's message spans several lines).
fn regex_error(e: &regex::Error) -> String {
    let text = e.to_string();
    match text.lines().find_map(|l| l.trim().strip_prefix("error: ")) {
        Some(reason) => reason.to_string(),
        None => text.split_whitespace().collect::<Vec<_>>().join(" "),
    }
}

/// Parses REP: `$N` / `${N}` (digits only, so `$1a` is group 1 then `a`), `${name}` /
/// `$name`, `$$` for `$`, `\/` for `/`, `\\` for `\`. An unescaped `/` is an error (it
/// is almost always a sed-style `/g`). A `$` not followed by a group reference is literal.
fn parse_replacement(rep: &str, re: &Regex) -> Result<Vec<RepPart>, String> {
    let mut parts = Vec::new();
    let mut lit = String::new();
    let mut chars = rep.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.peek() {
                Some(&(_, n @ ('/' | '\\'))) => {
                    lit.push(n);
                    chars.next();
                }
                _ => lit.push('\\'),
            },
            '/' => {
                return Err(
                    "unescaped `/` in the replacement (write `\\/` for a literal slash)"
                        .to_string(),
                )
            }
            '$' => {
                let after = &rep[i + 1..];
                let (name, len) = if after.starts_with('$') {
                    lit.push('$');
                    chars.next();
                    continue;
                } else if let Some(inner) = after.strip_prefix('{') {
                    match inner.find('}') {
                        Some(end) if end > 0 => (&inner[..end], end + 2),
                        _ => {
                            lit.push('$');
                            continue;
                        }
                    }
                } else if after.starts_with(|c: char| c.is_ascii_digit()) {
                    let end = after
                        .find(|c: char| !c.is_ascii_digit())
                        .unwrap_or(after.len());
                    (&after[..end], end)
                } else if after.starts_with(|c: char| c == '_' || c.is_ascii_alphabetic()) {
                    let end = after
                        .find(|c: char| !(c == '_' || c.is_ascii_alphanumeric()))
                        .unwrap_or(after.len());
                    (&after[..end], end)
                } else {
                    lit.push('$');
                    continue;
                };
                let group = resolve_group(name, re)?;
                if !lit.is_empty() {
                    parts.push(RepPart::Literal(std::mem::take(&mut lit)));
                }
                parts.push(RepPart::Group(group));
                // Skip the characters of the reference (all ASCII except inside `${...}`).
                let end = i + 1 + len;
                while chars.peek().is_some_and(|&(j, _)| j < end) {
                    chars.next();
                }
            }
            _ => lit.push(c),
        }
    }
    if !lit.is_empty() {
        parts.push(RepPart::Literal(lit));
    }
    Ok(parts)
}

fn resolve_group(name: &str, re: &Regex) -> Result<usize, String> {
    let groups = re.captures_len() - 1;
    if name.bytes().all(|b| b.is_ascii_digit()) {
        match name.parse::<usize>() {
            Ok(n) if n <= groups => Ok(n),
            _ => Err(format!(
                "`${name}` refers to a capture group the regex does not have (it has {groups}; \
                 write `$$` for a literal `$`)"
            )),
        }
    } else {
        re.capture_names()
            .position(|n| n == Some(name))
            .ok_or_else(|| {
                format!(
                    "no capture group named `{name}` in the regex (write `$$` for a literal `$`)"
                )
            })
    }
}

fn expand_token(
    token: &Token,
    ctx: &Context<'_>,
    quoting: Quoting,
    several: bool,
    out: &mut String,
) -> Result<(), ExpandError> {
    let value: Cow<'_, str> = match &token.base {
        Base::Seq => {
            let _ = write!(out, "{}", ctx.seq);
            return Ok(());
        }
        Base::Slot => {
            let _ = write!(out, "{}", ctx.slot);
            return Ok(());
        }
        Base::Total | Base::PaddedSeq => {
            let Some(total) = ctx.total else {
                return Err(ExpandError(format!(
                    "token `{}` needs the number of jobs, which is not known yet",
                    token.text
                )));
            };
            let _ = match token.base {
                Base::Total => write!(out, "{total}"),
                _ => write!(out, "{:0width$}", ctx.seq, width = total.to_string().len()),
            };
            return Ok(());
        }
        Base::Whole if several => {
            for (i, arg) in ctx.args.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                let value = apply(&token.op, arg);
                match quoting {
                    Quoting::Shell => push_shell_quoted(out, &value),
                    Quoting::Verbatim => out.push_str(&value),
                }
            }
            return Ok(());
        }
        Base::Whole => match ctx.args {
            [one] => apply(&token.op, one),
            [] => match ctx.fields {
                Some(fields) => {
                    let json = serde_json::to_string(fields).unwrap_or_default();
                    Cow::Owned(apply(&token.op, &json).into_owned())
                }
                None => apply(&token.op, ""),
            },
            many => {
                // Like GNU Parallel, an operator applies to each column, then they are joined.
                let mut joined = String::with_capacity(many.iter().map(|a| a.len() + 1).sum());
                for (i, arg) in many.iter().enumerate() {
                    if i > 0 {
                        joined.push(' ');
                    }
                    joined.push_str(&apply(&token.op, arg));
                }
                Cow::Owned(joined)
            }
        },
        Base::Column(n) | Base::FromEnd(n) => {
            let index = match token.base {
                Base::FromEnd(_) => ctx.args.len().checked_sub(*n),
                _ => Some(n - 1),
            };
            match index.and_then(|i| ctx.args.get(i)) {
                Some(arg) => apply(&token.op, arg),
                None if several => Cow::Borrowed(""),
                None => {
                    let have = ctx.args.len();
                    return Err(ExpandError(format!(
                        "input has {have} column{}, token `{}` needs {n}",
                        if have == 1 { "" } else { "s" },
                        token.text
                    )));
                }
            }
        }
        Base::Field(name) => {
            let Some(fields) = ctx.fields else {
                return Err(ExpandError(format!(
                    "no field `{name}` for token `{}`: the input item is not a JSON object",
                    token.text
                )));
            };
            let Some(value) = fields.get(name) else {
                return Err(ExpandError(format!(
                    "no field `{name}` in the input object for token `{}`",
                    token.text
                )));
            };
            match value {
                Value::String(s) => apply(&token.op, s),
                Value::Null => apply(&token.op, ""),
                other => Cow::Owned(apply(&token.op, &other.to_string()).into_owned()),
            }
        }
    };
    match quoting {
        Quoting::Shell => push_shell_quoted(out, &value),
        Quoting::Verbatim => out.push_str(&value),
    }
    Ok(())
}

fn apply<'v>(op: &Op, value: &'v str) -> Cow<'v, str> {
    match op {
        Op::None => Cow::Borrowed(value),
        Op::NoExtension => Cow::Borrowed(no_extension(value)),
        Op::Basename => basename(value),
        Op::Dirname => Cow::Borrowed(dirname(value)),
        Op::BasenameNoExtension => match basename(value) {
            Cow::Borrowed(b) => Cow::Borrowed(no_extension(b)),
            Cow::Owned(b) => Cow::Owned(no_extension(&b).to_string()),
        },
        Op::NoExtensions(n) => perl_sub(&plus_regexes().no_extensions[n - 2], value, ""),
        Op::BasenameNoExtensions(n) => {
            let base = basename(value);
            Cow::Owned(perl_sub(&plus_regexes().no_extensions[n - 2], &base, "").into_owned())
        }
        Op::Directory => or_empty(perl_sub_found(&plus_regexes().directory, value, "")),
        Op::Extensions(1) => or_empty(perl_sub_found(&plus_regexes().extension, value, "")),
        Op::Extensions(n) => or_empty(perl_sub_found(
            &plus_regexes().extensions[(*n).clamp(2, 3) - 2],
            value,
            "$1",
        )),
        Op::Replace(r) => replace(r, value),
    }
}

/// The regexes of GNU Parallel's `--plus` operators, as its Perl substitutions (Perl's and
/// Rust's `.` both stop at a newline; both are leftmost-first).
struct PlusRegexes {
    /// `s:\.[^/.]*\.[^/.]*$::` and the three-extension one.
    no_extensions: [Regex; 2],
    /// `s:/[^/]*$::`
    directory: Regex,
    /// `s:.*\.::`
    extension: Regex,
    /// `s:.*\.([^/.]*\.[^/.]*)$:$1:` and the three-extension one.
    extensions: [Regex; 2],
}

fn plus_regexes() -> &'static PlusRegexes {
    static REGEXES: std::sync::OnceLock<PlusRegexes> = std::sync::OnceLock::new();
    REGEXES.get_or_init(|| {
        // Constant patterns, checked by the unit tests.
        let re = |p: &str| Regex::new(p).expect("a valid constant regex");
        PlusRegexes {
            no_extensions: [re(r"\.[^/.]*\.[^/.]*$"), re(r"\.[^/.]*\.[^/.]*\.[^/.]*$")],
            directory: re(r"/[^/]*$"),
            extension: re(r".*\."),
            extensions: [
                re(r".*\.([^/.]*\.[^/.]*)$"),
                re(r".*\.([^/.]*\.[^/.]*\.[^/.]*)$"),
            ],
        }
    })
}

/// Perl's `s:RE:REP:` (first match) on `value`.
fn perl_sub<'v>(re: &Regex, value: &'v str, rep: &str) -> Cow<'v, str> {
    re.replacen(value, 1, rep)
}

/// Perl's `s:RE:REP:`, `None` when nothing matched (GNU's `... || s:.*$::`).
fn perl_sub_found<'v>(re: &Regex, value: &'v str, rep: &str) -> Option<Cow<'v, str>> {
    re.is_match(value).then(|| perl_sub(re, value, rep))
}

/// GNU's `|| s:.*$::`: where the operator found nothing, the value is empty.
fn or_empty(value: Option<Cow<'_, str>>) -> Cow<'_, str> {
    value.unwrap_or(Cow::Borrowed(""))
}

/// GNU Parallel's `{.}`, the Perl `s:\.[^/.]*$::`: drop the last `.` and what follows,
/// unless a `/` follows it. (So `.bashrc` gives the empty string, as in GNU Parallel.)
fn no_extension(s: &str) -> &str {
    match s.rfind('.') {
        Some(dot) if !s[dot + 1..].contains('/') => &s[..dot],
        _ => s,
    }
}

/// GNU Parallel's `{/}`, the Perl `s:.*/::`. Perl's `.` does not match a newline, so
/// the removed part is the first line holding a `/`, from its start to its last `/`.
fn basename(s: &str) -> Cow<'_, str> {
    let mut line_start = 0;
    for line in s.split('\n') {
        if let Some(slash) = line.rfind('/') {
            let cut = line_start + slash + 1;
            return if line_start == 0 {
                Cow::Borrowed(&s[cut..])
            } else {
                let mut out = String::with_capacity(s.len() - (cut - line_start));
                out.push_str(&s[..line_start]);
                out.push_str(&s[cut..]);
                Cow::Owned(out)
            };
        }
        line_start += line.len() + 1;
    }
    Cow::Borrowed(s)
}

/// GNU Parallel's `{//}`, Perl's `File::Basename::dirname` (Unix rules): `.` for a bare
/// name, trailing slashes ignored, `/` for the root.
fn dirname(s: &str) -> &str {
    // fileparse: the directory part is everything up to the last `/`, or `./`.
    fn dir_part(s: &str) -> &str {
        match s.rfind('/') {
            Some(slash) => &s[..=slash],
            None => "./",
        }
    }
    // `s{(.)/*\z}{$1}s`: drop trailing slashes, keeping the first character.
    fn strip_trailing_slashes(d: &str) -> &str {
        let t = d.trim_end_matches('/');
        if t.is_empty() {
            &d[..d.len().min(1)]
        } else {
            t
        }
    }
    let dir = strip_trailing_slashes(dir_part(s));
    let basename_empty = s.is_empty() || s.ends_with('/');
    if basename_empty {
        strip_trailing_slashes(dir_part(dir))
    } else {
        dir
    }
}

/// Replaces the first (or every) match of the regex. Successive matches follow Perl's
/// `s///g` (an empty match right after a non-empty one counts), as GNU Parallel does.
fn replace<'v>(op: &Replace, s: &'v str) -> Cow<'v, str> {
    let mut out: Option<String> = None;
    let mut copied = 0; // bytes of `s` already handled
    let mut pos = 0; // where to search next
    let mut locs = if op.uses_groups {
        Some(op.re.capture_locations())
    } else {
        None
    };
    while pos <= s.len() {
        let found = match locs.as_mut() {
            Some(locs) => op.re.captures_read_at(locs, s, pos),
            None => op.re.find_at(s, pos),
        };
        let Some(m) = found else { break };
        let o = out.get_or_insert_with(|| String::with_capacity(s.len() + 16));
        o.push_str(&s[copied..m.start()]);
        for part in &op.rep {
            match part {
                RepPart::Literal(text) => o.push_str(text),
                RepPart::Group(g) => {
                    if let Some((a, b)) = locs.as_ref().and_then(|l| l.get(*g)) {
                        o.push_str(&s[a..b]);
                    }
                }
            }
        }
        copied = m.end();
        if !op.all {
            break;
        }
        pos = if m.is_empty() {
            m.end() + s[m.end()..].chars().next().map_or(1, char::len_utf8)
        } else {
            m.end()
        };
    }
    match out {
        None => Cow::Borrowed(s),
        Some(mut o) => {
            o.push_str(&s[copied..]);
            Cow::Owned(o)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::process::Command;

    fn args(values: &[&str]) -> Vec<String> {
        values
            .iter()
            .map(std::string::ToString::to_string)
            .collect()
    }

    fn ctx<'a>(args: &'a [String], fields: Option<&'a Map<String, Value>>) -> Context<'a> {
        Context {
            args,
            fields,
            seq: 7,
            slot: 3,
            total: None,
        }
    }

    /// Expands `template` for one item, in the given quoting.
    fn ex(template: &str, item: &[&str], quoting: Quoting) -> String {
        let a = args(item);
        Template::parse(template)
            .unwrap_or_else(|e| panic!("{template}: {e}"))
            .expand(&ctx(&a, None), quoting)
            .unwrap_or_else(|e| panic!("{template}: {e}"))
    }

    /// Verbatim expansion of `template` on a single-value item.
    fn v(template: &str, item: &str) -> String {
        ex(template, &[item], Quoting::Verbatim)
    }

    fn obj(json: &str) -> Map<String, Value> {
        match serde_json::from_str(json).unwrap() {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    fn parse_err(template: &str) -> ParseError {
        match Template::parse(template) {
            Ok(t) => panic!("{template} parsed: {t:?}"),
            Err(e) => e,
        }
    }

    fn run_bash(cmd: &str) -> Vec<u8> {
        let out = Command::new("/bin/bash")
            .arg("-c")
            .arg(cmd)
            .output()
            .expect("run bash");
        assert!(
            out.status.success(),
            "bash failed on {cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    // ---- bases -------------------------------------------------------------------

    #[test]
    fn whole_item() {
        assert_eq!(v("gzip -9 <>", "dir/a01.txt"), "gzip -9 dir/a01.txt");
        assert_eq!(
            ex("x <> y", &["a", "b c", "d"], Quoting::Verbatim),
            "x a b c d y"
        );
        assert_eq!(ex("[<>]", &[], Quoting::Verbatim), "[]");
        assert_eq!(ex("[<>]", &[], Quoting::Shell), "['']");
    }

    #[test]
    fn whole_item_with_several_columns_is_one_shell_word() {
        assert_eq!(ex("echo <>", &["a", "b"], Quoting::Shell), "echo 'a b'");
    }

    #[test]
    fn columns() {
        let a = ["x.txt", "d/y.tar.gz", "z"];
        assert_eq!(
            ex("<1> <2> <3>", &a, Quoting::Verbatim),
            "x.txt d/y.tar.gz z"
        );
        assert_eq!(ex("<3><1>", &a, Quoting::Verbatim), "zx.txt");
        assert_eq!(ex("<01>", &a, Quoting::Verbatim), "x.txt");
        assert_eq!(
            ex("<2.> <2/> <2//> <2/.>", &a, Quoting::Verbatim),
            "d/y.tar y.tar.gz d y.tar"
        );
        assert_eq!(ex("<1//x/Q>", &a, Quoting::Verbatim), "Q.tQt");
    }

    #[test]
    fn fields() {
        let m = obj(
            r#"{"name":"a b.txt","n":42,"f":1.5,"t":true,"z":null,"arr":[1,"x"],"o":{"k":"v","a":[]},"_x1":"u"}"#,
        );
        let t = |tpl: &str, q| {
            Template::parse(tpl)
                .unwrap()
                .expand(&ctx(&[], Some(&m)), q)
                .unwrap()
        };
        assert_eq!(t("<name>", Quoting::Verbatim), "a b.txt");
        assert_eq!(t("<name>", Quoting::Shell), "'a b.txt'");
        assert_eq!(t("<name.>", Quoting::Verbatim), "a b");
        assert_eq!(t("<name//a/b>", Quoting::Verbatim), "b b.txt");
        assert_eq!(t("<n> <f> <t>", Quoting::Shell), "42 1.5 true");
        assert_eq!(t("[<z>]", Quoting::Verbatim), "[]");
        assert_eq!(t("[<z>]", Quoting::Shell), "['']");
        assert_eq!(t("<arr>", Quoting::Verbatim), r#"[1,"x"]"#);
        assert_eq!(t("<o>", Quoting::Verbatim), r#"{"k":"v","a":[]}"#);
        assert_eq!(t("<_x1>", Quoting::Verbatim), "u");
        // `<>` of an object item without columns: its compact JSON text, keys in input order.
        let small = obj(r#"{ "b" : 1, "a" : "x y" }"#);
        let whole = Template::parse("<>").unwrap();
        assert_eq!(
            whole
                .expand(&ctx(&[], Some(&small)), Quoting::Verbatim)
                .unwrap(),
            r#"{"b":1,"a":"x y"}"#
        );
        assert_eq!(
            whole
                .expand(&ctx(&[], Some(&small)), Quoting::Shell)
                .unwrap(),
            r#"'{"b":1,"a":"x y"}'"#
        );
        // Columns win over the object for `<>` when both exist.
        let a = args(&["col"]);
        assert_eq!(
            whole
                .expand(&ctx(&a, Some(&small)), Quoting::Verbatim)
                .unwrap(),
            "col"
        );
    }

    #[test]
    fn seq_and_slot() {
        let t = Template::parse("job <#> on <%>: <#>").unwrap();
        let a = args(&["x"]);
        let c = Context {
            args: &a,
            fields: None,
            seq: 12_345_678_901,
            slot: 16,
            total: None,
        };
        assert_eq!(
            t.expand(&c, Quoting::Shell).unwrap(),
            "job 12345678901 on 16: 12345678901"
        );
        assert!(t.uses_slot());
        assert!(!Template::parse("<#> <>").unwrap().uses_slot());
    }

    // ---- operators ---------------------------------------------------------------

    #[test]
    fn spec_table() {
        let item = "dir/a01.txt";
        assert_eq!(v("<>", item), "dir/a01.txt");
        assert_eq!(v("<.>", item), "dir/a01");
        assert_eq!(v("</>", item), "a01.txt");
        assert_eq!(v("<//>", item), "dir");
        assert_eq!(v("</.>", item), "a01");
        assert_eq!(v("</a/b>", item), "dir/b01.txt");
        assert_eq!(v("<//[0-9]/N>", item), "dir/aNN.txt");
    }

    /// Expected values taken from GNU Parallel 20221122's output of
    /// `parallel -k --plus echo {.} ::: ...` (and `{/}`, `{//}`, `{/.}`), and for newlines
    /// `parallel -0 -q printf '[%s]\n' {/} {.} {//} {/.}`.
    #[test]
    fn path_operators_match_gnu_parallel() {
        // (input, {.}, {/}, {//}, {/.})
        let cases: &[(&str, &str, &str, &str, &str)] = &[
            ("dir.x/file", "dir.x/file", "file", "dir.x", "file"),
            (".bashrc", "", ".bashrc", ".", ""),
            ("a/b/", "a/b/", "", "a", ""),
            ("a.tar.gz", "a.tar", "a.tar.gz", ".", "a.tar"),
            ("/x", "/x", "x", "/", "x"),
            ("x", "x", "x", ".", "x"),
            ("dir/a01.txt", "dir/a01", "a01.txt", "dir", "a01"),
            ("", "", "", ".", ""),
            ("a/", "a/", "", ".", ""),
            ("/", "/", "", "/", ""),
            ("//", "//", "", "/", ""),
            ("a//b", "a//b", "b", "a", "b"),
            ("a/.b", "a/", ".b", "a", ""),
            ("a.", "a", "a.", ".", "a"),
            (".", "", ".", ".", ""),
            ("..", ".", "..", ".", "."),
            ("a/..", "a/.", "..", "a", "."),
            ("./x.y", "./x", "x.y", ".", "x"),
            ("a.b/c.d/", "a.b/c.d/", "", "a.b", ""),
            ("/a.b", "/a", "a.b", "/", "a"),
            ("a/b.c.d", "a/b.c", "b.c.d", "a", "b.c"),
            ("..x", ".", "..x", ".", "."),
            ("a b/c d.e", "a b/c d", "c d.e", "a b", "c d"),
            (
                "a\nb/c.d\ne.f",
                "a\nb/c.d\ne",
                "a\nc.d\ne.f",
                "a\nb",
                "a\nc.d\ne",
            ),
            ("x/y\nz", "x/y\nz", "y\nz", "x", "y\nz"),
        ];
        for &(input, dot, base, dir, base_dot) in cases {
            assert_eq!(v("<.>", input), dot, "<.> of {input:?}");
            assert_eq!(v("</>", input), base, "</> of {input:?}");
            assert_eq!(v("<//>", input), dir, "<//> of {input:?}");
            assert_eq!(v("</.>", input), base_dot, "</.> of {input:?}");
        }
    }

    /// Like GNU Parallel (`parallel echo {.} ::: a.x/y.z ::: b.y` gives `a.x/y b`), an
    /// operator on `<>` applies to each column before joining.
    #[test]
    fn operator_on_whole_item_applies_per_column() {
        assert_eq!(ex("<.>", &["a.x/y.z", "b.y"], Quoting::Verbatim), "a.x/y b");
        assert_eq!(
            ex("</>", &["a.x/y.z", "b/c.y"], Quoting::Verbatim),
            "y.z c.y"
        );
        assert_eq!(
            ex("</a/Q>", &["a.x/y.z", "ba/c.y"], Quoting::Verbatim),
            "Q.x/y.z bQ/c.y"
        );
        assert_eq!(ex("</.>", &["a.x/y.z", "b/c.y"], Quoting::Shell), "'y c'");
    }

    /// Expected values taken from GNU Parallel 20221122's output of
    /// `parallel --plus -q printf '[%s]\n' {/a/b} {//a/b} ... ::: aaa axyb a.b.c dir/a01.txt ''`
    /// and `{/x*/-}` `{//x*/-}` on `xab abc a/b`.
    #[test]
    fn replace_matches_gnu_parallel() {
        let cases: &[(&str, &str, &str)] = &[
            ("</a/b>", "aaa", "baa"),
            ("<//a/b>", "aaa", "bbb"),
            ("</^a/Z>", "aaa", "Zaa"),
            ("</q/Z>", "aaa", "aaa"),
            ("<//a/>", "aaa", ""),
            ("</a/b>", "axyb", "bxyb"),
            ("</\\./_>", "a.b.c", "a_b.c"),
            ("<//\\./_>", "a.b.c", "a_b_c"),
            ("<//a/>", "a.b.c", ".b.c"),
            ("</a/b>", "dir/a01.txt", "dir/b01.txt"),
            ("<//a/b>", "dir/a01.txt", "dir/b01.txt"),
            ("<//a/>", "dir/a01.txt", "dir/01.txt"),
            ("</a/b>", "", ""),
            ("<//a/b>", "", ""),
            // Empty matches follow Perl's s///g.
            ("</x*/->", "xab", "-ab"),
            ("<//x*/->", "xab", "--a-b-"),
            ("</x*/->", "abc", "-abc"),
            ("<//x*/->", "abc", "-a-b-c-"),
            ("<//x*/->", "a/b", "-a-/-b-"),
        ];
        for &(tpl, input, want) in cases {
            assert_eq!(v(tpl, input), want, "{tpl} of {input:?}");
        }
    }

    #[test]
    fn replace_captures_and_escapes() {
        assert_eq!(v("</(x)(y)/$2$1>", "axyb"), "ayxb");
        assert_eq!(v("</(x)(y)/${2}${1}>", "axyb"), "ayxb");
        // `$1a` is group 1 then `a` (Perl), not a group named `1a`.
        assert_eq!(v("</(x)/$1a>", "x"), "xa");
        assert_eq!(v("</(x)/$0$0>", "x"), "xx");
        assert_eq!(v("<//(\\w+)\\.(\\w+)/$2.$1>", "a.b c.d"), "b.a d.c");
        // A group that did not take part in the match is empty.
        assert_eq!(v("</(x)|(y)/[$1|$2]>", "y"), "[|y]");
        // `$$` is a `$`; a `$` not followed by a reference is literal.
        assert_eq!(v("</x/$$1>", "x"), "$1");
        assert_eq!(v("</x/a$>", "x"), "a$");
        assert_eq!(v("</x/$-$>", "x"), "$-$");
        assert_eq!(v("</x/${}>", "x"), "${}");
        // `\/` is a slash in RE and in REP; `\\` a backslash in REP; other escapes stay.
        assert_eq!(v("</\\//_>", "a/b/c"), "a_b/c");
        assert_eq!(v("<//\\//_>", "a/b/c"), "a_b_c");
        assert_eq!(v("<//_/\\/>", "a_b_c"), "a/b/c");
        assert_eq!(v("</b/\\\\>", "abc"), "a\\c");
        assert_eq!(v("</b/\\n>", "abc"), "a\\nc");
        assert_eq!(v("</\\\\/X>", "a\\b"), "aXb");
        assert_eq!(v("</[\\/.]/_>", "a.b/c"), "a_b/c");
        // Unicode: empty matches step over whole characters.
        assert_eq!(v("<//x*/->", "é"), "-é-");
        assert_eq!(v("<//é/e>", "ééa"), "eea");
    }

    #[test]
    fn operator_combinations() {
        let a = ["in/x.csv", "out dir/y.json"];
        assert_eq!(ex("<2/.>", &a, Quoting::Verbatim), "y");
        assert_eq!(ex("<2/.>", &a, Quoting::Shell), "y");
        assert_eq!(ex("<2//>", &a, Quoting::Shell), "'out dir'");
        assert_eq!(
            ex("<1/csv/tsv> <2//o/0>", &a, Quoting::Verbatim),
            "in/x.tsv 0ut dir/y.js0n"
        );
        assert_eq!(ex("<1//>/<1/.>.gz", &a, Quoting::Verbatim), "in/x.gz");
    }

    // ---- from the end, and --braces -----------------------------------------------

    #[test]
    fn columns_from_the_end() {
        let a = ["a.x/y.z", "b/c.d", "e"];
        assert_eq!(ex("<-1> <-2/> <-3.>", &a, Quoting::Verbatim), "e c.d a.x/y");
        assert_eq!(ex("<-1>", &["only"], Quoting::Verbatim), "only");
        let t = Template::parse("<-3>").unwrap();
        let two = args(&["a", "b"]);
        assert_eq!(
            t.expand(&ctx(&two, None), Quoting::Shell).unwrap_err().0,
            "input has 2 columns, token `<-3>` needs 3"
        );
        assert!(parse_err("<-0>").message.contains("count from 1"));
    }

    fn braces(template: &str, fields: bool) -> Template {
        Template::parse_in(template, Syntax::Braces { fields })
            .unwrap_or_else(|e| panic!("{template}: {e}"))
    }

    /// Expands a `--braces` template for one item, verbatim.
    fn b(template: &str, item: &[&str]) -> String {
        let a = args(item);
        braces(template, false)
            .expand(&ctx(&a, None), Quoting::Verbatim)
            .unwrap()
    }

    #[test]
    fn braces_tokens_mean_what_the_angle_ones_do() {
        for (gnu, ours) in [
            ("{}", "<>"),
            ("{.}", "<.>"),
            ("{/}", "</>"),
            ("{//}", "<//>"),
            ("{/.}", "</.>"),
            ("{2}", "<2>"),
            ("{-1}", "<-1>"),
            ("{1/.}", "<1/.>"),
            ("{#}", "<#>"),
            ("{%}", "<%>"),
            ("{/a/b}", "</a/b>"),
            ("{//a/b}", "<//a/b>"),
            ("{2//(.)\\./$1_}", "<2//(.)\\./$1_>"),
        ] {
            for item in [&["dir/a01.txt", "b.c/d.e"][..], &["x"][..]] {
                let a = args(item);
                let want = Template::parse(ours)
                    .unwrap()
                    .expand(&ctx(&a, None), Quoting::Shell)
                    .ok();
                let got = braces(gnu, false)
                    .expand(&ctx(&a, None), Quoting::Shell)
                    .ok();
                assert_eq!(got, want, "{gnu} vs {ours} on {item:?}");
            }
        }
        assert_eq!(b("job < {} > {/a/b}", &["a01"]), "job < a01 > b01");
    }

    #[test]
    fn braces_leave_other_groups_and_angles_as_text() {
        for text in [
            "awk '{print $1}'",
            "echo {a,b} {1..3} {x-y} {.x} {#.} {0} {/a} {///}",
            "grep '<html>' <> <1> </a/b> <b>bold</b>",
            "echo ${HOME} ${1} ${}x",
            "echo '{\"a\":1}' {",
            "echo {name} {field/.}",
            "{ echo; }",
        ] {
            let t = braces(text, false);
            assert!(!t.has_tokens(), "{text}: {:?}", t.first_token());
            assert_eq!(b(text, &["z"]), text);
        }
        assert_eq!(b("awk '{print $1}' {}", &["f"]), "awk '{print $1}' f");
        assert_eq!(b("<{}>", &["f"]), "<f>");
        assert_eq!(b("{{}}", &["f"]), "{f}");
    }

    #[test]
    fn braces_fields_with_jsonl() {
        let m = obj(r#"{"name":"dir/n.txt","x":1}"#);
        let t = braces("a {name/.} {x} ${name} {nope-}", true);
        assert_eq!(
            t.expand(&ctx(&[], Some(&m)), Quoting::Verbatim).unwrap(),
            "a n 1 ${name} {nope-}"
        );
    }

    #[test]
    fn braces_refuse_a_token_with_a_bad_regex_or_replacement() {
        for (text, needle) in [
            ("echo {/(/x}", "bad regex `(`"),
            ("{//[/x}", "bad regex"),
            ("{/(a)/$2}", "capture group"),
            ("{/a/b/g}", "unescaped `/`"),
            ("{99999999999999999999999}", "too large"),
        ] {
            let e = Template::parse_in(text, Syntax::Braces { fields: false }).unwrap_err();
            assert!(e.message.contains(needle), "{text}: {e}");
            assert!(e.token.starts_with('{'), "{text}: {e}");
        }
    }

    // ---- literal text ------------------------------------------------------------

    #[test]
    fn literal_text() {
        assert_eq!(
            v("job < <> > </a/b>", "dir/a01.txt"),
            "job < dir/a01.txt > dir/b01.txt"
        );
        assert_eq!(v("job < in > out", "z"), "job < in > out");
        assert_eq!(v("a<b", "z"), "a<b");
        assert_eq!(v("<", "z"), "<");
        assert_eq!(v(">", "z"), ">");
        assert_eq!(v("< >", "z"), "< >");
        assert_eq!(v("<foo bar>", "z"), "<foo bar>");
        assert_eq!(v("<a\tb>", "z"), "<a\tb>");
        assert_eq!(v("<<>", "z"), "<z");
        assert_eq!(v("<<>>", "z"), "<z>");
        assert_eq!(v("<>>", "z"), "z>");
        assert_eq!(v("cat <<EOF", "z"), "cat <<EOF");
        assert_eq!(
            v("diff <(sort <>) <(sort b)", "z"),
            "diff <(sort z) <(sort b)"
        );
        assert_eq!(v("é<>ü", "z"), "ézü");
        assert_eq!(v("", "z"), "");
        for t in ["", "plain", "job < in > out", "a<b", "< >", "<x y>"] {
            let p = Template::parse(t).unwrap();
            assert!(!p.has_tokens(), "{t}");
            assert_eq!(p.source(), t);
        }
        for t in ["<>", "x <1>", "<#>", "<%>", "<name/.>", "a<<>"] {
            assert!(Template::parse(t).unwrap().has_tokens(), "{t}");
        }
    }

    // ---- errors ------------------------------------------------------------------

    #[test]
    fn parse_errors_name_token_and_column() {
        let cases: &[(&str, &str, usize, &str)] = &[
            ("echo <#.>", "<#.>", 6, "takes no operator"),
            ("<%/>", "<%/>", 1, "takes no operator"),
            ("<##x>", "<##x>", 1, "takes no operator"),
            ("x <0>", "<0>", 3, "count from 1"),
            ("<00.>", "<00.>", 1, "count from 1"),
            (
                "<99999999999999999999999>",
                "<99999999999999999999999>",
                1,
                "too large",
            ),
            ("a <1/(/x>", "<1/(/x>", 3, "bad regex `(`"),
            ("<//[/x>", "<//[/x>", 1, "bad regex"),
            ("<x-y>", "<x-y>", 1, "unknown operator `-y`"),
            ("<1a>", "<1a>", 1, "unknown operator `a`"),
            ("<name.,>", "<name.,>", 1, "unknown operator `.,`"),
            ("<->", "<->", 1, "unknown token"),
            ("<.x>", "<.x>", 1, "unknown token"),
            ("<//.>", "<//.>", 1, "missing replacement"),
            ("</a>", "</a>", 1, "missing replacement"),
            ("<1/a\\/b>", "<1/a\\/b>", 1, "missing replacement"),
            ("<///x>", "<///x>", 1, "empty regex"),
            ("<///>", "<///>", 1, "empty regex"),
            ("</a/b/g>", "</a/b/g>", 1, "unescaped `/`"),
            ("</(a)/$2>", "</(a)/$2>", 1, "capture group"),
            (
                "</a/$HOME>",
                "</a/$HOME>",
                1,
                "no capture group named `HOME`",
            ),
            ("</a/${x}>", "</a/${x}>", 1, "no capture group named `x`"),
            // Columns count characters, not bytes.
            ("éé <#/>", "<#/>", 4, "takes no operator"),
            ("<> <1> <x-y>", "<x-y>", 8, "unknown operator"),
        ];
        for &(tpl, token, column, needle) in cases {
            let e = parse_err(tpl);
            assert_eq!(e.token, token, "{tpl}");
            assert_eq!(e.column, column, "{tpl}");
            assert!(
                e.message.contains(needle),
                "{tpl}: {:?} lacks {needle:?}",
                e.message
            );
            assert!(
                !e.message.contains('\n'),
                "{tpl}: multi-line message {:?}",
                e.message
            );
            let shown = e.to_string();
            assert!(
                shown.contains(&format!("`{token}`"))
                    && shown.contains(&format!("column {column}")),
                "{shown}"
            );
        }
    }

    #[test]
    fn valid_edge_tokens() {
        // `<1//>` is the dirname of column 1; `</./x>` replaces any character.
        assert_eq!(v("<1//>", "a/b"), "a");
        assert_eq!(v("</./x>", "ab"), "xb");
        assert_eq!(v("<//./x>", "ab"), "xx");
        assert_eq!(v("<.>", "a.b"), "a");
    }

    #[test]
    fn expand_errors() {
        let t = Template::parse("x <3>").unwrap();
        let two = args(&["a", "b"]);
        assert_eq!(
            t.expand(&ctx(&two, None), Quoting::Shell).unwrap_err().0,
            "input has 2 columns, token `<3>` needs 3"
        );
        let one = args(&["a"]);
        assert_eq!(
            t.expand(&ctx(&one, None), Quoting::Shell).unwrap_err().0,
            "input has 1 column, token `<3>` needs 3"
        );
        let t = Template::parse("<name/.>").unwrap();
        let m = obj(r#"{"other":1}"#);
        assert_eq!(
            t.expand(&ctx(&[], Some(&m)), Quoting::Shell).unwrap_err().0,
            "no field `name` in the input object for token `<name/.>`"
        );
        let e = t.expand(&ctx(&one, None), Quoting::Shell).unwrap_err().0;
        assert!(
            e.contains("no field `name`")
                && e.contains("`<name/.>`")
                && e.contains("not a JSON object"),
            "{e}"
        );
        let e = Template::parse("<1>")
            .unwrap()
            .expand(&ctx(&[], Some(&m)), Quoting::Shell)
            .unwrap_err();
        assert_eq!(e.to_string(), "input has 0 columns, token `<1>` needs 1");
    }

    // ---- quoting -----------------------------------------------------------------

    #[test]
    fn shell_quote_leaves_safe_words_alone() {
        for s in ["abc", "dir/a01.txt", "-x", "a,b", "u@h:p", "a+b", "ABC_123"] {
            assert_eq!(shell_quote(s), s);
        }
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote("{a,b}"), "'{a,b}'");
        assert_eq!(shell_quote("~"), "'~'");
        assert_eq!(shell_quote("#x"), "'#x'");
        assert_eq!(shell_quote("é"), "'é'");
        assert!(matches!(shell_quote("plain"), Cow::Borrowed(_)));
    }

    const HOSTILE: &[&str] = &[
        "a file's \"name\" $(x).txt",
        "$(touch /tmp/bakapara-template-pwned)",
        "`touch /tmp/bakapara-template-pwned`",
        "; touch /tmp/bakapara-template-pwned",
        "&& echo no || echo no | cat",
        "*",
        "?",
        "[a]*",
        "~",
        "~root",
        "x=~",
        "{a,b}",
        "{1..3}",
        "#comment",
        "!!",
        "!$",
        "$HOME",
        "${HOME}",
        "$'x'",
        "\\",
        "\\'",
        "'",
        "''",
        "'\\''",
        "\"",
        "line1\nline2\n",
        "\n",
        "\r\n",
        "\t tab",
        " ",
        "",
        "a\u{7}b\u{1b}[31m",
        "héllo wörld ☃ 日本",
        "%1",
        "FOO=bar",
        "<>",
        "a > b",
        "(x)",
        "-n",
        "-e \\n",
    ];

    #[test]
    fn hostile_values_reach_bash_byte_for_byte() {
        let t = Template::parse("printf %s <>").unwrap();
        for value in HOSTILE {
            let a = args(&[value]);
            let cmd = t.expand(&ctx(&a, None), Quoting::Shell).unwrap();
            assert_eq!(
                run_bash(&cmd),
                value.as_bytes(),
                "value {value:?}, command {cmd:?}"
            );
        }
        assert!(!std::path::Path::new("/tmp/bakapara-template-pwned").exists());
    }

    #[test]
    fn hostile_values_as_first_word_and_in_fields() {
        // As the command word itself (assignments, `#`, `%1` must not be special).
        let t = Template::parse("<> 2>/dev/null; printf %s <>").unwrap();
        for value in ["FOO=bar", "#x", "%1", "x=~"] {
            let a = args(&[value]);
            let cmd = t.expand(&ctx(&a, None), Quoting::Shell).unwrap();
            assert_eq!(run_bash(&cmd), value.as_bytes(), "{cmd}");
        }
        // Field values and operator results are quoted too.
        let m = obj(r#"{"f":"a'b $(x) c.txt"}"#);
        let cmd = Template::parse("printf '%s|' <f> <f.> <f/x/y>")
            .unwrap()
            .expand(&ctx(&[], Some(&m)), Quoting::Shell)
            .unwrap();
        assert_eq!(run_bash(&cmd), b"a'b $(x) c.txt|a'b $(x) c|a'b $(y) c.txt|");
    }

    #[test]
    fn verbatim_inserts_raw_values() {
        assert_eq!(ex("echo <>", &["a b; c"], Quoting::Verbatim), "echo a b; c");
        assert_eq!(
            ex("out/<1/.>.log", &["x/it's.txt"], Quoting::Verbatim),
            "out/it's.log"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn quoted_values_round_trip_through_bash(value in "[^\u{0}]{0,40}") {
            let a = args(&[&value]);
            let cmd = Template::parse("printf %s <>").unwrap().expand(&ctx(&a, None), Quoting::Shell).unwrap();
            prop_assert_eq!(run_bash(&cmd), value.as_bytes().to_vec());
        }

        #[test]
        fn quoted_ascii_punctuation_round_trips_through_bash(value in "[ -~\t\n]{0,24}") {
            let a = args(&[&value]);
            let cmd = Template::parse("printf %s <>").unwrap().expand(&ctx(&a, None), Quoting::Shell).unwrap();
            prop_assert_eq!(run_bash(&cmd), value.as_bytes().to_vec());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn parse_and_expand_never_panic(
            template in prop_oneof![
                ".{0,40}",
                "[<>/\\\\.#%$a-z0-9(){}*+?|^ \\[\\]_-]{0,30}",
                "[{}/\\\\.#%$a-z0-9()*+?|^ _-]{0,30}",
            ],
            value in prop_oneof![".{0,20}", "[/.a\n]{0,12}"],
        ) {
            let syntaxes = [
                Syntax::Angle,
                Syntax::Braces { fields: false },
                Syntax::Braces { fields: true },
            ];
            for syntax in syntaxes {
                let Ok(t) = Template::parse_in(&template, syntax) else { continue };
                let a = args(&[&value, "b.c"]);
                let m = obj(r#"{"a":"x","b":null}"#);
                for q in [Quoting::Shell, Quoting::Verbatim] {
                    let _ = t.expand(&ctx(&a[..1], None), q);
                    let _ = t.expand(&ctx(&a, Some(&m)), q);
                    let _ = t.expand(&ctx(&[], Some(&m)), q);
                }
            }
        }

        #[test]
        fn path_operators_never_panic_and_are_slices(value in "[/.ab\n]{0,12}") {
            for tpl in ["<.>", "</>", "<//>", "</.>"] {
                let out = v(tpl, &value);
                prop_assert!(out.len() <= value.len().max(1));
            }
        }
    }
}
