//! Validated settings, built from the command line before any job runs.
//!
//! clap's value parsers turn each option's text into its type (durations, sizes, the halt
//! policy, regexes, host lists); [`Config::from_cli_linked`] then checks how the options go
//! together, one small builder per concern: the input sources, the templates, the input
//! reader, the slots, the hosts, the limits, the output. A library caller starts from
//! [`Config::local`], the command line's defaults, and sets typed fields.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use clap::FromArgMatches;

use crate::cli::Cli;
use crate::exec::ssh::SshOptions;
use crate::halt::HaltPolicy;
use crate::hosts::{self, HostSpec};
use crate::input::{Grouping, InputSpec, Join, Mode, Source, Templates, Trim};
use crate::live::LiveMode;
use crate::pipe::{PipeSpec, Separator};
use crate::progress::Verbosity;
use crate::results::ResultsDir;
use crate::scheduler::RunSettings;
use crate::template::{Quoting, Several, Syntax, Template};
use crate::throttle::Throttle;

/// Everything a run needs, checked.
#[derive(Debug, Clone)]
pub struct Config {
    pub input: InputSpec,
    pub templates: Templates,
    /// Slots on this machine (when `-S` does not say).
    pub jobs: usize,
    /// `-S` / `--sshloginfile` hosts; empty: this machine only.
    pub hosts: Vec<HostSpec>,
    pub ssh: SshOptions,
    pub keep_order: bool,
    pub settings: RunSettings,
    pub dry_run: bool,
    pub verbosity: Verbosity,
    /// `--halt`.
    pub halt: Option<HaltPolicy>,
    /// `--resume FILE`.
    pub resume: Option<PathBuf>,
    /// `--text`: job output to stdout/stderr instead of result lines.
    pub text: bool,
    /// `--gather` (with `--text`): all output at the end, identical outputs of hosts folded.
    pub gather: bool,
    /// `--tag` (with `--text`).
    pub tag: bool,
    /// `--tagstring`: the `--tag` prefix as a template.
    pub tagstring: Option<Template>,
    /// `--results DIR`: each job's stdout, stderr and seq under DIR.
    pub results: Option<PathBuf>,
    /// `--line-buffer` / `--ungroup`: text output passed on as it comes.
    pub live: Option<LiveMode>,
    /// `--json`: result lines on stdout even when it is a terminal.
    pub json: bool,
    /// `--joblog FILE`: result lines also (with `--text`: only) go there.
    pub joblog: Option<PathBuf>,
    /// The directory relative `cd` values start from.
    pub base_dir: PathBuf,
    /// make's jobserver, shared with the other recipes of `make -jN`; the command line leaves
    /// it `None` (`main` connects it: [`crate::jobserver::Jobserver::from_env`]).
    pub jobserver: Option<crate::jobserver::Jobserver>,
    /// Warnings about the command line, for stderr before the run (the run goes on).
    pub warnings: Vec<String>,
}

impl Config {
    /// When stdout is a terminal and `--json` was not given, a person reads it: text output
    /// (SPEC §1). The binary calls this; a library caller chooses its own output.
    pub fn text_for_terminal(&mut self, stdout_is_terminal: bool) {
        if stdout_is_terminal && !self.json && !self.dry_run {
            self.text = true;
        }
    }
}

/// Why the command line cannot run: clap's own message (help and version included), or ours.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Clap(#[from] clap::Error),
    #[error("{0}")]
    Invalid(String),
    /// Not a run: text the command line asked for (`--generate`), for stdout.
    #[error("{0}")]
    Print(String),
}

/// A refusal of the command line, with our message.
fn invalid(message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(message.into())
}

/// `--grace`'s default (the command line says `2s`).
pub const DEFAULT_GRACE: Duration = Duration::from_secs(2);
/// `--host-loss-limit`'s default.
const DEFAULT_HOST_LOSS_LIMIT: u32 = 5;
/// `--host-timeout`'s default (`60s`).
pub const DEFAULT_HOST_TIMEOUT: Duration = Duration::from_secs(60);
/// `--capture-limit`'s default (`1M`).
pub const DEFAULT_CAPTURE_LIMIT: usize = 1 << 20;
/// `--block`'s default (`1M`).
const DEFAULT_BLOCK: usize = 1 << 20;
/// bakapara's `ConnectTimeout` where the user's ssh config sets none.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl Config {
    /// Parses and checks a whole command line (the program name first).
    pub fn from_args<I: IntoIterator<Item = OsString>>(args: I) -> Result<Config, ConfigError> {
        let args: Vec<OsString> = args.into_iter().collect();
        let separators = Separators::from_args(&args);
        let (clap_args, sources, joins) = separators.split(args)?;
        let matches = Cli::clap_command().try_get_matches_from(clap_args)?;
        let cli = Cli::from_arg_matches(&matches)?;
        Config::from_cli_linked(&cli, sources, joins)
    }

    pub fn from_cli(cli: &Cli, sources: Vec<Source>) -> Result<Config, ConfigError> {
        Config::from_cli_linked(cli, sources, Vec::new())
    }

    /// A run of job lines (no template) on this machine, one slot per CPU, every setting at
    /// the command line's default: what `bakapara` with no option does, and where a library
    /// caller starts.
    pub fn local() -> Result<Config, ConfigError> {
        let base_dir = working_directory()?;
        let workdir = Some(utf8_dir(&base_dir)?);
        let (jobs, warning) = slots(None)?;
        Ok(Config {
            input: InputSpec {
                mode: Mode::Commands,
                sources: Vec::new(),
                joins: Vec::new(),
                colsep: None,
                trim: Trim::None,
                delimiter: b"\n".to_vec(),
                grouping: None,
                header: None,
                needs_total: false,
                pipe: None,
                shuffle: false,
                every_host: None,
            },
            templates: Templates {
                cmd: None,
                cd: None,
                out: None,
                err: None,
                transfer: Vec::new(),
                returns: Vec::new(),
                quoting: Quoting::Shell,
                grouped: false,
                insert_none: false,
                total: Arc::default(),
                names: Arc::default(),
            },
            jobs,
            hosts: Vec::new(),
            ssh: SshOptions {
                workdir,
                connect_timeout: CONNECT_TIMEOUT,
                ..SshOptions::default()
            },
            keep_order: false,
            settings: RunSettings {
                capture_limit: DEFAULT_CAPTURE_LIMIT,
                grace: DEFAULT_GRACE,
                timeout: None,
                retries: 0,
                host_timeout: DEFAULT_HOST_TIMEOUT,
                host_loss_limit: DEFAULT_HOST_LOSS_LIMIT,
                throttle: Throttle::default(),
            },
            dry_run: false,
            verbosity: Verbosity::Normal,
            halt: None,
            resume: None,
            text: false,
            gather: false,
            tag: false,
            tagstring: None,
            results: None,
            live: None,
            json: false,
            joblog: None,
            base_dir,
            jobserver: None,
            warnings: warning.into_iter().collect(),
        })
    }

    /// As [`Config::from_cli`], with how each source joins the one before it (`:::+`).
    pub fn from_cli_linked(
        cli: &Cli,
        sources: Vec<Source>,
        joins: Vec<Join>,
    ) -> Result<Config, ConfigError> {
        let (sources, joins) = input_sources(cli, sources, joins)?;
        check_output_combinations(cli)?;
        let files = crate::transfer::FileOptions::from_cli(cli).map_err(invalid)?;
        if (cli.pipe || cli.pipe_part) && (cli.nonall || cli.onall) {
            return Err(invalid(
                "--pipe and --pipe-part cut stdin into blocks for jobs: they cannot go with \
                 --nonall or --onall",
            ));
        }
        if let Some(kind) = cli.generate {
            return Err(ConfigError::Print(crate::generate::generate(kind)));
        }
        let mode = input_mode(cli, &sources)?;
        let mut parser = TemplateParser::new(cli, mode);
        let built = templates(cli, mode, &mut parser, &files.transfer, &files.returns)?;
        let tagstring = cli
            .tagstring
            .as_deref()
            .map(|t| parser.parse("--tagstring", t))
            .transpose()?;
        let (jobs, jobs_warning) = slots(cli.jobs)?;
        let mut warnings = parser.warnings;
        warnings.extend(jobs_warning);
        let input = input_spec(cli, mode, sources, joins, &built, jobs)?;
        let base_dir = working_directory()?;
        let host_list = host_list(cli)?;
        let copies = !files.transfer.is_empty() || !files.returns.is_empty();
        let mut ssh = ssh_options(cli, &base_dir, files.remote)?;
        check_agent_options(cli, &ssh, copies)?;
        let (settings, halt) = limits(cli, &host_list, &mut ssh);
        check_resume(cli)?;
        let output = output(cli)?;
        let every_host = (cli.onall || cli.nonall)
            .then(|| host_list.iter().map(|h| h.name.clone()).collect::<Vec<_>>())
            .filter(|names| !names.is_empty());
        Ok(Config {
            input: InputSpec {
                every_host,
                ..input
            },
            templates: built.templates,
            jobs,
            hosts: host_list,
            ssh,
            keep_order: cli.keep_order,
            settings,
            halt,
            resume: cli.resume.clone(),
            text: output.text,
            gather: cli.gather,
            tag: cli.tag || cli.tagstring.is_some(),
            tagstring,
            json: cli.json,
            live: output.live,
            results: output.results,
            joblog: cli.joblog.clone(),
            dry_run: cli.dry_run,
            verbosity: match (cli.quiet, cli.verbose) {
                (true, _) => Verbosity::Quiet,
                (false, true) => Verbosity::Verbose,
                (false, false) => Verbosity::Normal,
            },
            base_dir,
            jobserver: None,
            warnings,
        })
    }
}

/// A `-S` value: its entries (clap's value type of `-S`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostList(pub Vec<HostSpec>);

/// Parses one `-S` value (clap's `value_parser`).
pub fn parse_host_list(list: &str) -> Result<HostList, String> {
    hosts::parse_sshlogin_list(list)
        .map(HostList)
        .map_err(|e| e.to_string())
}

/// Parses `--load MAX` (clap's `value_parser`), a percentage being of this machine's CPUs.
pub fn parse_load(text: &str) -> Result<f64, String> {
    crate::throttle::parse_load(text, cpu_count())
}

/// This machine's CPU count (1 when it cannot be known).
fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

/// The working directory, which relative `cd` values start from.
fn working_directory() -> Result<PathBuf, ConfigError> {
    std::env::current_dir().map_err(|e| invalid(format!("cannot read the working directory: {e}")))
}

/// The working directory as remote jobs get it (the same path on every host).
fn utf8_dir(dir: &std::path::Path) -> Result<String, ConfigError> {
    dir.to_str()
        .map(str::to_string)
        .ok_or_else(|| invalid("the working directory is not valid UTF-8: use --workdir"))
}

/// The input sources: `-a` files first, `--link`, and `--nonall`'s one empty item.
fn input_sources(
    cli: &Cli,
    mut sources: Vec<Source>,
    mut joins: Vec<Join>,
) -> Result<(Vec<Source>, Vec<Join>), ConfigError> {
    if !cli.arg_file.is_empty() {
        // As GNU Parallel: -a files are the first sources.
        joins.resize(sources.len(), Join::Product);
        let files = cli.arg_file.iter().map(|f| Source::File(f.clone()));
        sources.splice(0..0, files);
        joins.splice(0..0, cli.arg_file.iter().map(|_| Join::Product));
    }
    if cli.link {
        joins = vec![Join::Wrap; sources.len()];
    }
    if cli.nonall {
        if !sources.is_empty() {
            return Err(invalid(
                "--nonall runs its command with no input: it takes no ::: or :::: sources \
                 (use --onall to run each input job on every host)",
            ));
        }
        if cli.template.is_empty() {
            return Err(invalid(
                "--nonall needs a TEMPLATE: the command to run on every host",
            ));
        }
        // One empty item: one job, which the reader copies for each host.
        sources = vec![Source::Args(vec![String::new()])];
        joins = vec![Join::Product];
    }
    Ok((sources, joins))
}

/// Options of text output that exclude each other or `--json`.
fn check_output_combinations(cli: &Cli) -> Result<(), ConfigError> {
    if cli.gather && (cli.line_buffer || cli.ungroup || cli.json) {
        return Err(invalid(
            "--gather prints all output at the end: it cannot go with --line-buffer, \
             --ungroup or --json",
        ));
    }
    Ok(())
}

/// How input lines become jobs: a TEMPLATE, `--jsonl`, or job lines.
fn input_mode(cli: &Cli, sources: &[Source]) -> Result<Mode, ConfigError> {
    let mode = match (cli.template.is_empty(), cli.jsonl) {
        (true, true) => return Err(invalid("--jsonl needs a TEMPLATE")),
        (true, false) => Mode::Commands,
        (false, true) => Mode::Jsonl,
        (false, false) => Mode::Template,
    };
    if mode == Mode::Jsonl && !sources.is_empty() {
        return Err(invalid(
            "--jsonl reads JSON objects from stdin; it cannot take ::: or :::: sources",
        ));
    }
    if cli.header.is_some() && mode != Mode::Template {
        return Err(invalid(
            "--header names the values of a TEMPLATE's input: give one",
        ));
    }
    Ok(mode)
}

/// Parses the command line's templates in its syntax, collecting the warnings about them.
struct TemplateParser {
    syntax: Syntax,
    mode: Mode,
    /// `--header`: `<name>` tokens name its values.
    header: bool,
    warnings: Vec<String>,
}

impl TemplateParser {
    fn new(cli: &Cli, mode: Mode) -> TemplateParser {
        let header = cli.header.is_some();
        let syntax = if cli.braces {
            Syntax::Braces {
                fields: mode == Mode::Jsonl || header,
            }
        } else {
            Syntax::Angle
        };
        TemplateParser {
            syntax,
            mode,
            header,
            warnings: Vec::new(),
        }
    }

    /// The template `text` of `what` (`command`, `--cd`...).
    fn parse(&mut self, what: &str, text: &str) -> Result<Template, ConfigError> {
        let t = Template::parse_in(text, self.syntax).map_err(|e| {
            let hint = match self.syntax {
                Syntax::Angle => format!(" ({BRACES_HINT})"),
                Syntax::Braces { .. } => String::new(),
            };
            invalid(format!("bad {what} template {text:?}: {e}{hint}"))
        })?;
        // Only the `<...>` syntax has field tokens without --jsonl or --header.
        if self.mode != Mode::Jsonl && !self.header {
            if let Some((token, column)) = t.field_tokens().first() {
                return Err(invalid(format!(
                    "bad {what} template {text:?}: unknown token `{token}` at column {column} \
                     (a `<name>` token reads a field of a JSON object: use --jsonl; {BRACES_HINT})"
                )));
            }
        }
        if let Some(warning) = gnu_habit(what, text, &t, self.syntax, self.mode) {
            self.warnings.push(warning);
        }
        Ok(t)
    }

    /// An optional path template (`--cd`, `--out`, `--err`).
    fn path(&mut self, what: &str, text: Option<&str>) -> Result<Option<Template>, ConfigError> {
        text.map(|t| self.parse(what, t)).transpose()
    }

    /// What `<>` is written as.
    fn whole(&self) -> &'static str {
        match self.syntax {
            Syntax::Angle => "<>",
            Syntax::Braces { .. } => "{}",
        }
    }
}

/// The templates of a run, and what the input reader needs to know of them.
struct BuiltTemplates {
    templates: Templates,
    /// `-N`, `-m`...: how items group into jobs.
    grouping: Option<Grouping>,
    /// A template uses `<##>` or `<0#>`.
    needs_total: bool,
    /// `--header`'s names, shared by the reader and the templates.
    names: Arc<OnceLock<Vec<String>>>,
}

/// The command, `--cd`, `--out`, `--err`, `--transferfile` and `--return` templates.
fn templates(
    cli: &Cli,
    mode: Mode,
    parser: &mut TemplateParser,
    transfer: &[String],
    returns: &[String],
) -> Result<BuiltTemplates, ConfigError> {
    let piped = cli.pipe || cli.pipe_part;
    let several = if piped { None } else { several_items(cli) };
    let insert_none = several.is_some_and(|(n, _)| n == Some(0));
    let template_text = cli.template.join(" ");
    let cmd = match mode {
        Mode::Commands => None,
        Mode::Template => {
            let t = parser.parse("command", &template_text)?;
            // `--nonall` has no input to append.
            if t.has_tokens() || insert_none || piped || cli.nonall {
                Some(t)
            } else {
                // As GNU Parallel does: `ls *.gz | bakapara gunzip` means `gunzip <>`.
                let whole = parser.whole();
                Some(parser.parse("command", &format!("{template_text} {whole}"))?)
            }
        }
        Mode::Jsonl => Some(parser.parse("command", &template_text)?),
    };
    if mode == Mode::Commands && (cli.out.is_some() || cli.err.is_some() || cli.cd.is_some()) {
        return Err(invalid(
            "--out, --err and --cd need a TEMPLATE (JSON job lines carry their own `out`, `err` and `cd` keys)",
        ));
    }
    let cd = parser.path("--cd", cli.cd.as_deref())?;
    let out = parser.path("--out", cli.out.as_deref())?;
    let err = parser.path("--err", cli.err.as_deref())?;
    if several.is_some() && mode != Mode::Template {
        return Err(invalid(
            "-N, -n, -m, -X and --xargs put input items into a TEMPLATE: give one",
        ));
    }
    let cmd = match several {
        Some((_, how)) => cmd.map(|t| t.for_several(how)),
        None => cmd,
    };
    let grouping = several.map(|(n, _)| grouping(n, cmd.as_ref()));
    let transfer = transfer
        .iter()
        .map(|t| parser.parse("--transferfile", t))
        .collect::<Result<Vec<_>, _>>()?;
    let returns = returns
        .iter()
        .map(|t| parser.parse("--return", t))
        .collect::<Result<Vec<_>, _>>()?;
    let needs_total = [&cmd, &cd, &out, &err]
        .iter()
        .any(|t| t.as_ref().is_some_and(Template::uses_total));
    let names: Arc<OnceLock<Vec<String>>> = Arc::default();
    Ok(BuiltTemplates {
        templates: Templates {
            names: Arc::clone(&names),
            total: Arc::default(),
            grouped: several.is_some(),
            insert_none,
            cmd,
            cd,
            out,
            err,
            transfer,
            returns,
            quoting: if cli.no_quote {
                Quoting::Verbatim
            } else {
                Quoting::Shell
            },
        },
        grouping,
        needs_total,
        names,
    })
}

/// What the input reader does: the sources, columns, delimiter, grouping, `--pipe`.
fn input_spec(
    cli: &Cli,
    mode: Mode,
    sources: Vec<Source>,
    joins: Vec<Join>,
    built: &BuiltTemplates,
    jobs: usize,
) -> Result<InputSpec, ConfigError> {
    if cli.colsep.is_some() && mode != Mode::Template {
        return Err(invalid("--colsep needs a TEMPLATE"));
    }
    let delimiter = match (&cli.delimiter, cli.null) {
        (Some(d), _) => parse_delimiter(d).map_err(|e| invalid(format!("-d/--delimiter: {e}")))?,
        (None, true) => vec![0],
        (None, false) => b"\n".to_vec(),
    };
    for s in &sources {
        if let Source::File(path) = s {
            if path.as_os_str() != "-" {
                std::fs::File::open(path)
                    .map_err(|e| invalid(format!(":::: {}: cannot open: {e}", path.display())))?;
            }
        }
    }
    let stdin_sources = sources
        .iter()
        .filter(|s| matches!(s, Source::File(p) if p.as_os_str() == "-"))
        .count();
    if stdin_sources > 1 {
        return Err(invalid(":::: - (stdin) can be given only once"));
    }
    // With --pipe, the one `::::` source (if any) is what is cut into blocks.
    let pipe = pipe_spec(cli, mode, &sources, jobs)?;
    if pipe.is_some() && built.needs_total {
        // Every block would be held until the end of input: memory would not be bounded.
        return Err(invalid(
            "<##> and <0#> wait for the end of input: they cannot go with --pipe or --pipe-part",
        ));
    }
    let trim = match cli.trim {
        Some(trim) => trim,
        None if cli.colsep.is_some() => Trim::Both,
        None => Trim::None,
    };
    Ok(InputSpec {
        mode,
        sources,
        joins,
        trim,
        colsep: cli.colsep.clone(),
        delimiter,
        grouping: built.grouping,
        header: (cli.header.is_some() && pipe.is_none()).then(|| Arc::clone(&built.names)),
        needs_total: built.needs_total,
        pipe,
        shuffle: cli.shuf,
        every_host: None,
    })
}

/// Slots on this machine for `-j` (`None`: one per CPU), and a warning when the open-file
/// limit lowered the count.
fn slots(jobs: Option<Jobs>) -> Result<(usize, Option<String>), ConfigError> {
    let cpus = cpu_count();
    let open_files = open_file_limit();
    let mut slots = match jobs {
        Some(jobs) => jobs
            .slots(cpus, open_files)
            .map_err(|e| invalid(format!("-j/--jobs: {e}")))?,
        None => cpus,
    };
    // As GNU Parallel does: more jobs than there are files for would fail to start, one by
    // one, so run as many as fit and say so.
    let room = room_for_jobs(open_files);
    let mut warning = None;
    if slots > room {
        let limit = open_files.map_or(String::new(), |n| format!(" {n}"));
        warning = Some(format!(
            "only enough open files (ulimit -n{limit}) for {room} jobs at once: running {room}, \
             not {slots} (raise ulimit -n for more)"
        ));
        slots = room;
    }
    Ok((slots, warning))
}

/// `-S` and `--sshloginfile` hosts, each name once.
fn host_list(cli: &Cli) -> Result<Vec<HostSpec>, ConfigError> {
    let mut host_list: Vec<HostSpec> = cli.sshlogin.iter().flat_map(|l| l.0.clone()).collect();
    if let Some(file) = &cli.sshloginfile {
        let text = std::fs::read_to_string(file).map_err(|e| {
            invalid(format!(
                "--sshloginfile {}: cannot read: {e}",
                file.display()
            ))
        })?;
        host_list.extend(
            hosts::parse_sshloginfile(&text)
                .map_err(|e| invalid(format!("--sshloginfile {}: {e}", file.display())))?,
        );
        if host_list.is_empty() {
            return Err(invalid(format!(
                "--sshloginfile {}: no hosts in the file",
                file.display()
            )));
        }
    }
    if cli.slurm {
        let nodes = HostSpec::slurm_nodes("--slurm", None, &|name| std::env::var(name).ok())
            .map_err(|e| match e {
                hosts::HostError::Slurm { reason, .. } => invalid(format!("--slurm: {reason}")),
                other => invalid(format!("--slurm: {other}")),
            })?;
        host_list.extend(nodes);
    }
    hosts::check_unique(&host_list).map_err(|e| invalid(e.to_string()))?;
    Ok(host_list)
}

/// What SSH hosts need: `--ssh-config`, `--workdir`, `--env` values, the file options.
fn ssh_options(
    cli: &Cli,
    base_dir: &std::path::Path,
    files: crate::transfer::RemoteFiles,
) -> Result<SshOptions, ConfigError> {
    if let Some(file) = &cli.ssh_config {
        std::fs::File::open(file)
            .map_err(|e| invalid(format!("--ssh-config {}: cannot open: {e}", file.display())))?;
    }
    let env = cli
        .env
        .iter()
        .map(|name| env_value(name))
        .collect::<Result<Vec<_>, _>>()?;
    let workdir = match cli.workdir.as_deref() {
        None => Some(utf8_dir(base_dir)?),
        Some("~") => None,
        Some("...") => Some(crate::transfer::fresh_workdir()),
        Some(dir) => Some(dir.strip_prefix("~/").unwrap_or(dir).to_string()),
    };
    Ok(SshOptions {
        config_file: cli.ssh_config.clone(),
        workdir,
        env,
        connect_timeout: CONNECT_TIMEOUT,
        control_dir: None,
        files,
        memfree: None,
        load: None,
        launcher: cli.launcher.clone(),
    })
}

/// `--host-loss-limit` and `--launcher`: at least one loss; a launcher to run, and no file
/// copies for its hosts (they have no master connection to copy over).
fn check_agent_options(cli: &Cli, ssh: &SshOptions, copies: bool) -> Result<(), ConfigError> {
    if cli.host_loss_limit == 0 {
        return Err(invalid(
            "--host-loss-limit 0: give at least 1 (1 fails a job the first time its host \
             is lost under it)",
        ));
    }
    if let Some(launcher) = &cli.launcher {
        if launcher.trim().is_empty() {
            return Err(invalid("--launcher: the command is empty"));
        }
        if !ssh.files.basefiles.is_empty() || copies {
            return Err(invalid(
                "--launcher hosts have no file transfers yet: --transferfile, --transfer, \
                 --return, --trc and --basefile need SSH hosts",
            ));
        }
    }
    Ok(())
}

/// `--env NAME`: the variable (or the exported bash function) to set in every job.
fn env_value(name: &str) -> Result<(String, String), ConfigError> {
    if name.is_empty() || name.contains('=') {
        return Err(invalid(format!(
            "--env takes a variable name, not {name:?}"
        )));
    }
    // bash keeps an exported function (`export -f f`) in `BASH_FUNC_f%%`.
    let function = format!("BASH_FUNC_{name}%%");
    match std::env::var(name) {
        Ok(value) => Ok((name.to_string(), value)),
        Err(std::env::VarError::NotPresent) if std::env::var_os(&function).is_some() => {
            match std::env::var(&function) {
                Ok(value) => Ok((function, value)),
                Err(_) => Err(invalid(format!(
                    "--env {name}: the function's text is not valid UTF-8"
                ))),
            }
        }
        Err(std::env::VarError::NotPresent) => Err(invalid(format!(
            "--env {name}: no such variable in the environment (nor a function exported with \
             export -f {name})"
        ))),
        Err(std::env::VarError::NotUnicode(_)) => Err(invalid(format!(
            "--env {name}: the value is not valid UTF-8"
        ))),
    }
}

/// The limits every job shares (timeouts, retries, capture, throttle) and `--halt`.
/// `--memfree` and `--load` are checked where the job runs: by the agent on a remote host
/// (see agent.sh), here for local jobs; without a local host, this machine's memory and
/// load hold nothing back.
fn limits(
    cli: &Cli,
    host_list: &[HostSpec],
    ssh: &mut SshOptions,
) -> (RunSettings, Option<HaltPolicy>) {
    let delay = cli.delay.filter(|d| !d.is_zero());
    let mut throttle = Throttle::new(delay, cli.memfree, cli.load);
    ssh.memfree = throttle.memfree;
    ssh.load = throttle.load;
    if !host_list.is_empty() && host_list.iter().all(|h| !h.local) {
        throttle.memfree = None;
        throttle.load = None;
    }
    let settings = RunSettings {
        capture_limit: cli.capture_limit,
        grace: cli.grace,
        timeout: cli.timeout,
        retries: cli.retries,
        host_timeout: cli.host_timeout,
        host_loss_limit: cli.host_loss_limit,
        throttle,
    };
    (settings, cli.halt.and_then(|h| h.0))
}

/// `--resume FILE`: a missing file is nothing to skip (the run says so); an unreadable one is
/// wrong.
fn check_resume(cli: &Cli) -> Result<(), ConfigError> {
    if let Some(file) = &cli.resume {
        match std::fs::File::open(file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(invalid(format!(
                    "--resume {}: cannot open: {e}",
                    file.display()
                )));
            }
            _ => {}
        }
    }
    Ok(())
}

/// The output settings that take checking.
struct Output {
    text: bool,
    live: Option<LiveMode>,
    results: Option<PathBuf>,
}

/// Text or JSON output, `--line-buffer` / `--ungroup`, `--results`.
fn output(cli: &Cli) -> Result<Output, ConfigError> {
    // Options of text output imply it; with --json they make no sense.
    let text_options = [
        (cli.tag, "--tag"),
        (cli.tagstring.is_some(), "--tagstring"),
        (cli.line_buffer, "--line-buffer"),
        (cli.ungroup, "--ungroup"),
    ];
    let text_option = text_options.iter().find(|(set, _)| *set).map(|(_, n)| *n);
    if let (true, Some(name)) = (cli.json, text_option) {
        return Err(invalid(format!(
            "{name} is for text output; it cannot go with --json"
        )));
    }
    let live = match (cli.line_buffer, cli.ungroup) {
        (true, _) => Some((LiveMode::Lines, "--line-buffer")),
        (false, true) => Some((LiveMode::Chunks, "--ungroup")),
        (false, false) => None,
    };
    if let Some((_, name)) = live {
        // Output passed on as it comes has no job to hold it for, nor a block to tag.
        if cli.keep_order {
            return Err(invalid(format!(
                "{name} prints output as it comes; it cannot keep the input order (-k)"
            )));
        }
        if cli.ungroup && (cli.tag || cli.tagstring.is_some()) {
            return Err(invalid(
                "--ungroup passes output in pieces that are not lines: it cannot tag them \
                 (use --line-buffer --tag)",
            ));
        }
    }
    let results = match &cli.results {
        Some(dir) => {
            ResultsDir::check(dir).map_err(invalid)?;
            Some(dir.clone())
        }
        None => None,
    };
    Ok(Output {
        text: cli.text || cli.gather || text_option.is_some(),
        live: live.map(|(mode, _)| mode),
        results,
    })
}

/// The longest single argument the kernel passes (Linux's `MAX_ARG_STRLEN`): a job's command
/// goes to `bash -c` as one argument, so `-m` and `-X` fill a job up to it.
const MAX_ARG_BYTES: usize = 128 * 1024;

/// Kept back from [`MAX_ARG_BYTES`] for what the items do not account for: `<#>`, `<%>`,
/// `<N>` values and the `bash -o pipefail -c` wrapping.
const ARG_BYTES_RESERVE: usize = 2048;

/// `-N`/`-n` (`Some(n)` items per job) or `-m`/`-X`/`--xargs` (`None`: as many as fit), and
/// how the command template reads such a job; `None` for one item per job.
fn several_items(cli: &Cli) -> Option<(Option<usize>, Several)> {
    if cli.context_replace {
        return Some((None, Several::Context));
    }
    match cli.max_replace_args.or(cli.max_args) {
        Some(n) => Some((Some(n), Several::Values)),
        None if cli.multiple || cli.xargs => Some((None, Several::Values)),
        None => None,
    }
}

/// `--pipe` / `--pipe-part` and their options (`None` without either; the options are
/// refused alone).
fn pipe_spec(
    cli: &Cli,
    mode: Mode,
    sources: &[Source],
    jobs: usize,
) -> Result<Option<PipeSpec>, ConfigError> {
    let name = if cli.pipe_part {
        "--pipe-part"
    } else {
        "--pipe"
    };
    if !cli.pipe && !cli.pipe_part {
        let options = [
            (cli.block.is_some(), "--block"),
            (cli.recend.is_some(), "--recend"),
            (cli.recstart.is_some(), "--recstart"),
            (cli.regexp, "--regexp"),
            (cli.remove_rec_sep, "--remove-rec-sep"),
        ];
        if let Some((_, option)) = options.iter().find(|(set, _)| *set) {
            return Err(invalid(format!(
                "{option} is for --pipe or --pipe-part: add one of them"
            )));
        }
        return Ok(None);
    }
    match mode {
        Mode::Template => {}
        Mode::Jsonl => {
            return Err(invalid(format!(
                "--jsonl reads JSON objects from stdin: it cannot go with {name}"
            )))
        }
        Mode::Commands => {
            return Err(invalid(format!(
                "{name} needs a TEMPLATE: the command each block is piped to"
            )))
        }
    }
    if cli.multiple || cli.context_replace || cli.xargs {
        return Err(invalid(format!(
            "-m, -X and --xargs put items on a command line: they cannot go with {name} (-N n: n records per block)"
        )));
    }
    if cli.colsep.is_some() {
        return Err(invalid(format!(
            "--colsep splits items: it cannot go with {name}"
        )));
    }
    let block = match cli.block {
        Some(size) => {
            usize::try_from(size).map_err(|_| invalid(format!("--block {size}: too big")))?
        }
        None => DEFAULT_BLOCK,
    };
    if block == 0 {
        return Err(invalid("--block must be more than 0"));
    }
    let bytes = |what: &str, v: &Option<String>| -> Result<Option<Vec<u8>>, ConfigError> {
        match v {
            None => Ok(None),
            Some(text) if cli.regexp => Ok(Some(text.as_bytes().to_vec())),
            Some(text) => parse_delimiter_or_empty(text)
                .map(Some)
                .map_err(|e| invalid(format!("{what}: {e}"))),
        }
    };
    let recend = bytes("--recend", &cli.recend)?;
    let recstart = bytes("--recstart", &cli.recstart)?;
    let separator =
        Separator::new(recend.as_deref(), recstart.as_deref(), cli.regexp).map_err(invalid)?;
    let header = cli.header.clone();
    let records = cli.max_replace_args.or(cli.max_args);
    if records == Some(0) {
        return Err(invalid(format!(
            "-N 0 gives a block no record: use -N 1 or more with {name}"
        )));
    }
    let file = match sources {
        [Source::File(path)] if path.as_os_str() != "-" => Some(path.clone()),
        [] | [Source::File(_)] => None,
        _ => {
            return Err(invalid(format!(
                "{name} reads stdin or one :::: FILE (-a FILE): ::: arguments and several sources are not input for it"
            )))
        }
    };
    let part =
        if cli.pipe_part {
            if records.is_some() || cli.remove_rec_sep {
                return Err(invalid(
                    "--pipe-part cuts byte ranges: -N and --remove-rec-sep are for --pipe",
                ));
            }
            Some(file.ok_or_else(|| {
                invalid("--pipe-part cuts a file: give it with -a FILE or :::: FILE")
            })?)
        } else {
            None
        };
    Ok(Some(PipeSpec {
        block,
        separator,
        remove_separators: cli.remove_rec_sep,
        records,
        header,
        part,
        budget: block.saturating_mul(jobs.saturating_add(2)),
    }))
}

/// A `--recend` / `--recstart` value: `-d`'s C escapes; empty is allowed (no separator).
fn parse_delimiter_or_empty(text: &str) -> Result<Vec<u8>, String> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    parse_delimiter(text)
}

/// How the reader groups items into jobs of the command template `cmd`.
fn grouping(max_items: Option<usize>, cmd: Option<&Template>) -> Grouping {
    let (copies, extra_per_value, literal) = match cmd {
        Some(t) => {
            let (copies, extra) = t.growth_per_value();
            (copies, extra, t.literal_len())
        }
        None => (1, 0, 0),
    };
    Grouping {
        max_items,
        max_bytes: MAX_ARG_BYTES
            .saturating_sub(ARG_BYTES_RESERVE)
            .saturating_sub(literal),
        copies,
        extra_per_value,
    }
}

/// Parses a `-d` value: its bytes, with C escapes (`\n`, `\t`, `\0`, `\x41`, `\101`...).
pub fn parse_delimiter(text: &str) -> Result<Vec<u8>, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' || i + 1 == bytes.len() {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let c = bytes[i + 1];
        i += 2;
        let simple = match c {
            b'n' => Some(b'\n'),
            b't' => Some(b'\t'),
            b'r' => Some(b'\r'),
            b'a' => Some(0x07),
            b'b' => Some(0x08),
            b'f' => Some(0x0c),
            b'v' => Some(0x0b),
            b'\\' => Some(b'\\'),
            _ => None,
        };
        if let Some(b) = simple {
            out.push(b);
            continue;
        }
        let (radix, max_digits, start) = match c {
            b'x' => (16, 2, i),
            b'0'..=b'7' => (8, 3, i - 1),
            _ => return Err(format!("unknown escape \\{} in {text:?}", c as char)),
        };
        let digits = bytes[start..]
            .iter()
            .take(max_digits)
            .take_while(|d| char::from(**d).is_digit(radix))
            .count();
        if digits == 0 {
            return Err(format!("\\x needs hexadecimal digits in {text:?}"));
        }
        let value = std::str::from_utf8(&bytes[start..start + digits])
            .ok()
            .and_then(|d| u32::from_str_radix(d, radix).ok())
            .and_then(|v| u8::try_from(v).ok())
            .ok_or_else(|| format!("escape out of range in {text:?}"))?;
        out.push(value);
        i = start + digits;
    }
    if out.is_empty() {
        return Err("the delimiter is empty".into());
    }
    Ok(out)
}

/// Where the `<...>` syntax refuses a token, the way to write `<...>` as text.
const BRACES_HINT: &str =
    "with --braces, <...> is plain text and the tokens are GNU Parallel's {} {.} {1}...";

/// A warning when a `<...>` template holds GNU Parallel's brace tokens but no `<...>` token:
/// `bakapara 'echo {}'` runs `echo {} <>`, which is rarely what a GNU Parallel user meant.
fn gnu_habit(
    what: &str,
    text: &str,
    template: &Template,
    syntax: Syntax,
    mode: Mode,
) -> Option<String> {
    if syntax != Syntax::Angle || template.has_tokens() {
        return None;
    }
    let fields = mode == Mode::Jsonl;
    let braces = Template::parse_in(text, Syntax::Braces { fields }).ok()?;
    let token = braces.first_token()?;
    let what_happens = if what == "command" && mode == Mode::Template {
        "so \" <>\" is appended and"
    } else {
        "so"
    };
    Some(format!(
        "the {what} template {text:?} has no <...> token, {what_happens} `{token}` stays as text; \
         bakapara's tokens are <> <.> <1>... (use --braces for GNU Parallel's {{}} tokens)"
    ))
}

/// The most jobs bakapara runs at once on this machine. More is a usage error rather than a
/// clamp: a number that large is a typo or a unit mix-up. (Below it, the open-file limit may
/// still lower the count, with a warning: see [`room_for_jobs`].)
pub const MAX_JOBS: usize = 4096;

/// Open files bakapara holds for one running local job: its stdout and stderr pipes, and one to
/// spare (a spool file with `--text`, the child's pidfd).
const FILES_PER_JOB: u64 = 3;

/// Open files kept back for bakapara itself, out of the open-file limit: stdio, the joblog,
/// `::::` files, SSH control sockets, the async runtime.
const RESERVED_FILES: u64 = 64;

/// `-j`, in GNU Parallel's forms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Jobs {
    /// `N`: exactly N (1 to [`MAX_JOBS`]).
    Exactly(usize),
    /// `0`: as many as possible: as many as the open-file limit leaves room for, at most
    /// [`MAX_JOBS`].
    AsManyAsPossible,
    /// `+N`: the CPU count plus N.
    CpusPlus(usize),
    /// `-N`: the CPU count minus N, at least 1.
    CpusMinus(usize),
    /// `N%` (`12.5%` too): that share of the CPU count, rounded up, at least 1.
    CpusPercent(f64),
}

/// Parses a `-j` value (clap's `value_parser`).
pub fn parse_jobs(text: &str) -> Result<Jobs, String> {
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let count = |digits: &str| {
        digits.parse::<usize>().map_err(|_| {
            format!("{digits} is far more than the {MAX_JOBS} jobs bakapara runs at once")
        })
    };
    if all_digits(text) {
        return match count(text)? {
            0 => Ok(Jobs::AsManyAsPossible),
            n if n > MAX_JOBS => Err(format!(
                "{n} is more than the {MAX_JOBS} jobs bakapara runs at once"
            )),
            n => Ok(Jobs::Exactly(n)),
        };
    }
    if let Some(digits) = text.strip_prefix('+').filter(|d| all_digits(d)) {
        return Ok(Jobs::CpusPlus(count(digits)?));
    }
    if let Some(digits) = text.strip_prefix('-').filter(|d| all_digits(d)) {
        return Ok(Jobs::CpusMinus(count(digits)?));
    }
    if let Some(number) = text.strip_suffix('%') {
        let decimal = match number.split_once('.') {
            Some((whole, fraction)) => all_digits(whole) && all_digits(fraction),
            None => all_digits(number),
        };
        if let (true, Ok(percent)) = (decimal, number.parse::<f64>()) {
            return Ok(Jobs::CpusPercent(percent));
        }
    }
    Err(format!(
        "expected N (a whole number; 0: as many as possible), +N or -N (the CPU count plus or \
         minus N) or N% (of the CPU count), not {text:?}"
    ))
}

impl Jobs {
    /// The number of slots, given the CPU count and the soft open-file limit (`None`: unlimited).
    pub fn slots(self, cpus: usize, open_files: Option<u64>) -> Result<usize, String> {
        let wanted: f64 = match self {
            Jobs::Exactly(n) => n as f64,
            Jobs::AsManyAsPossible => return Ok(room_for_jobs(open_files)),
            Jobs::CpusPlus(n) => cpus as f64 + n as f64,
            Jobs::CpusMinus(n) => cpus.saturating_sub(n).max(1) as f64,
            // As GNU Parallel: rounded up, so that any share gets at least one job.
            Jobs::CpusPercent(p) => (cpus as f64 * p / 100.0).ceil().max(1.0),
        };
        if wanted > MAX_JOBS as f64 {
            return Err(format!(
                "{self} means {wanted} jobs at once here ({cpus} CPUs), more than the {MAX_JOBS} \
                 bakapara runs at once"
            ));
        }
        // In range: a whole number from 1 to MAX_JOBS.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Ok(wanted as usize)
    }
}

impl std::fmt::Display for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Jobs::Exactly(n) => write!(f, "{n}"),
            Jobs::AsManyAsPossible => write!(f, "0"),
            Jobs::CpusPlus(n) => write!(f, "+{n}"),
            Jobs::CpusMinus(n) => write!(f, "-{n}"),
            Jobs::CpusPercent(p) => write!(f, "{p}%"),
        }
    }
}

/// How many local jobs the open-file limit leaves room for (at least 1, at most [`MAX_JOBS`]).
#[must_use]
pub fn room_for_jobs(open_files: Option<u64>) -> usize {
    let room = open_files.map_or(u64::MAX, |limit| {
        limit.saturating_sub(RESERVED_FILES) / FILES_PER_JOB
    });
    usize::try_from(room).unwrap_or(MAX_JOBS).clamp(1, MAX_JOBS)
}

/// The soft limit on open files (`None`: unlimited or unknown).
fn open_file_limit() -> Option<u64> {
    use nix::sys::resource::{getrlimit, Resource, RLIM_INFINITY};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, _)) if soft != RLIM_INFINITY => Some(soft),
        _ => None,
    }
}

/// The words that start input sources: `:::` and `::::`, or what `--arg-sep` and
/// `--arg-file-sep` say (each also with a `+`: a source linked to the one before).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Separators {
    pub args: OsString,
    pub files: OsString,
    /// Where the first source starts in the command line [`Separators::from_args`] read
    /// (`None`: none does).
    first: Option<usize>,
}

impl Separators {
    /// The separators a command line sets with `--arg-sep` / `--arg-file-sep`, looked for
    /// before its first source (clap parses those options again, with the rest).
    #[must_use]
    pub fn from_args(args: &[OsString]) -> Separators {
        let mut seps = Separators {
            args: ":::".into(),
            files: "::::".into(),
            first: None,
        };
        let mut i = 1;
        while i < args.len() {
            if seps.kind(&args[i]).is_some() {
                seps.first = Some(i);
                break;
            }
            let arg = args[i].to_string_lossy();
            for (name, slot) in [
                ("--arg-sep", &mut seps.args),
                ("--arg-file-sep", &mut seps.files),
            ] {
                if arg == name {
                    if let Some(value) = args.get(i + 1) {
                        slot.clone_from(value);
                        i += 1;
                    }
                } else if let Some(value) = arg.strip_prefix(name).and_then(|v| v.strip_prefix('='))
                {
                    *slot = value.into();
                }
            }
            i += 1;
        }
        seps
    }

    /// Whether `arg` starts a source: of arguments (`false`) or of files (`true`), and how it
    /// joins the one before.
    fn kind(&self, arg: &OsString) -> Option<(bool, Join)> {
        let linked = |sep: &OsString| {
            let mut plus = sep.clone();
            plus.push("+");
            plus
        };
        if *arg == self.args {
            Some((false, Join::Product))
        } else if *arg == self.files {
            Some((true, Join::Product))
        } else if *arg == linked(&self.args) {
            Some((false, Join::Shortest))
        } else if *arg == linked(&self.files) {
            Some((true, Join::Shortest))
        } else {
            None
        }
    }

    /// Splits the input sources off the command line: what comes before the first of them
    /// goes to clap; each separator starts a source that runs to the next one.
    #[allow(clippy::type_complexity)]
    pub fn split(
        &self,
        args: Vec<OsString>,
    ) -> Result<(Vec<OsString>, Vec<Source>, Vec<Join>), ConfigError> {
        let Some(first) = self.first.filter(|&i| i < args.len()) else {
            return Ok((args, Vec::new(), Vec::new()));
        };
        let mut rest = args;
        let tail = rest.split_off(first);
        let mut sources: Vec<Source> = Vec::new();
        let mut joins: Vec<Join> = Vec::new();
        // A `::::` may name several files, each its own source: only the first one takes the
        // `+` link.
        for arg in tail {
            match self.kind(&arg) {
                Some((false, join)) => {
                    sources.push(Source::Args(Vec::new()));
                    joins.push(join);
                }
                Some((true, join)) => {
                    sources.push(Source::File(PathBuf::new()));
                    joins.push(join);
                }
                None => match sources.last_mut() {
                    Some(Source::Args(list)) => list.push(arg.into_string().map_err(|a| {
                        ConfigError::Invalid(format!(
                            "{} argument {a:?} is not valid UTF-8",
                            self.args.to_string_lossy()
                        ))
                    })?),
                    Some(Source::File(path)) if path.as_os_str().is_empty() => {
                        *path = PathBuf::from(arg);
                    }
                    Some(Source::File(_)) => {
                        sources.push(Source::File(PathBuf::from(arg)));
                        joins.push(Join::Product);
                    }
                    Some(Source::Stdin) | None => {}
                },
            }
        }
        if sources
            .iter()
            .any(|s| matches!(s, Source::File(p) if p.as_os_str().is_empty()))
        {
            return Err(ConfigError::Invalid(format!(
                "{} needs at least one FILE (- for stdin)",
                self.files.to_string_lossy()
            )));
        }
        Ok((rest, sources, joins))
    }
}

/// Splits `:::` / `::::` input sources off the command line (the default separators).
pub fn split_sources(args: Vec<OsString>) -> Result<(Vec<OsString>, Vec<Source>), ConfigError> {
    let (rest, sources, _) = Separators::from_args(&args).split(args)?;
    Ok((rest, sources))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(text: &str, cpus: usize, files: Option<u64>) -> Result<usize, String> {
        parse_jobs(text)?.slots(cpus, files)
    }

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    /// The library's defaults are the command line's: its `default_value`s and [`Config::local`]
    /// say the same.
    #[test]
    fn local_defaults_are_the_command_lines() {
        let cli = Config::from_args(args(&["bakapara"])).expect("no option is a run");
        let local = Config::local().expect("a local run");
        assert_eq!(cli.settings.grace, local.settings.grace);
        assert_eq!(cli.settings.host_timeout, local.settings.host_timeout);
        assert_eq!(cli.settings.capture_limit, local.settings.capture_limit);
        assert_eq!(cli.settings.timeout, local.settings.timeout);
        assert_eq!(cli.jobs, local.jobs);
        assert_eq!(cli.input.mode, local.input.mode);
        assert_eq!(cli.input.delimiter, local.input.delimiter);
        assert_eq!(cli.ssh.workdir, local.ssh.workdir);
        assert_eq!(cli.ssh.connect_timeout, local.ssh.connect_timeout);
        assert_eq!(cli.verbosity, local.verbosity);
        assert!(cli.halt.is_none() && local.halt.is_none());
    }

    /// Bad values are refused by clap's value parsers, naming the option and the value.
    #[test]
    fn typed_options_name_the_option_and_value() {
        for (option, value) in [
            ("--timeout", "0"),
            ("--timeout", "soon"),
            ("--grace", "2 weeks"),
            ("--halt", "later"),
            ("--capture-limit", "lots"),
            ("--colsep", "("),
            ("--header", "("),
            ("--delay", "x"),
            ("--memfree", "x"),
            ("--load", "high"),
            ("-S", "a,,b"),
        ] {
            let Err(ConfigError::Clap(e)) =
                Config::from_args(args(&["bakapara", option, value, "true"]))
            else {
                panic!("{option} {value} is refused by clap");
            };
            let text = e.to_string();
            assert!(text.contains(value), "{option} {value}: {text}");
            let long = if option == "-S" { "--sshlogin" } else { option };
            assert!(text.contains(long), "{option} {value}: {text}");
        }
        let config = Config::from_args(args(&[
            "bakapara",
            "--timeout",
            "1m30s",
            "--halt",
            "now,fail=2",
            "--trim",
            "rl",
            "--colsep",
            ",",
            "-S",
            "a/2,b",
            "echo <1>",
        ]))
        .expect("a good command line");
        assert_eq!(config.settings.timeout, Some(Duration::from_secs(90)));
        assert!(config.halt.is_some());
        assert_eq!(config.input.trim, Trim::Both);
        assert_eq!(config.hosts.len(), 2);
    }

    #[test]
    fn jobs_in_gnu_forms() {
        assert_eq!(slots("3", 8, None), Ok(3));
        assert_eq!(slots("+2", 8, None), Ok(10));
        assert_eq!(slots("+0", 8, None), Ok(8));
        assert_eq!(slots("-3", 8, None), Ok(5));
        assert_eq!(slots("-8", 8, None), Ok(1));
        assert_eq!(slots("-100", 8, None), Ok(1));
        assert_eq!(slots("50%", 8, None), Ok(4));
        assert_eq!(slots("12.5%", 8, None), Ok(1));
        assert_eq!(slots("37.5%", 8, None), Ok(3));
        assert_eq!(
            slots("30%", 8, None),
            Ok(3),
            "2.4 is rounded up, as GNU does"
        );
        assert_eq!(slots("0%", 8, None), Ok(1));
        assert_eq!(slots("200%", 8, None), Ok(16));
        assert_eq!(slots("0", 8, Some(1024)), Ok(320));
        assert_eq!(slots("0", 8, Some(10)), Ok(1));
        assert_eq!(slots("0", 8, None), Ok(MAX_JOBS));
        assert_eq!(slots("4096", 8, None), Ok(4096));
        assert_eq!(slots("+4088", 8, None), Ok(4096));
        for bad in [
            "4097",
            "+4089",
            "51300%",
            "18446744073709551616",
            "1e9",
            "-",
            "x%",
            "1.%",
        ] {
            assert!(slots(bad, 8, None).is_err(), "{bad}");
        }
    }
}
