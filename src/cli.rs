//! The command line, as a clap definition (it also feeds the man page and completions).

use clap::{ArgAction, Parser, ValueEnum};

const ABOUT: &str = "Run embarrassingly parallel shell jobs, one JSON result line per job";

const LONG_ABOUT: &str = "\
Run embarrassingly parallel shell jobs on this machine and over SSH, one JSON result line per job.

Jobs come in on standard input (or as ::: arguments); one result line per job goes out on \
standard output the moment that job ends (-k: in input order). When standard output is a \
terminal (and no --json), a person is reading: each job's output is shown instead, grouped per \
job as with --text. Progress and log lines go to standard error: a live display when it is a \
terminal, log lines otherwise.

With a TEMPLATE, each input item (a stdin line, or a ::: argument) becomes one job whose \
command is the template expanded with that item; a template with no token gets \" <>\" \
appended. Without a TEMPLATE, each stdin line is a job: a JSON object such as \
{\"cmd\": \"gzip -9 a.log\", \"cd\": \"/data\"}, or a plain command line; blank lines are \
skipped. With --jsonl and a TEMPLATE, each line is a JSON object whose fields the template \
uses as <name>.

Input sources go after the options and the template: ::: ARG... takes arguments, :::: FILE... \
takes the lines of files (- is stdin). Several sources combine as a cartesian product.

A job runs as /bin/bash -o pipefail -c CMD in its own process group, with stdin from \
/dev/null (with --pipe: its block of the input). Its stdout and stderr are captured into the result (up to --capture-limit), or \
written to the files its out and err keys name.";

/// The end of `-h`: the tokens and three examples (`--help` has all of it).
const AFTER_HELP: &str = "\
Tokens (each value goes in as one quoted shell word; --braces for GNU Parallel's {} {.} {1}...):
  <>  the input item          <N>  its N-th source or column   <name>  a --jsonl field
  <.>  without extension      </>  basename                    <//>  dirname
  </.>  basename, no extension  </RE/REP>  regex RE replaced by REP (<//RE/REP>: every match)
  <#>  the job's number       <%>  its slot number

Examples:
  ls a*.txt | bakapara -j 2 'tr a-z A-Z < <> > </a/b>'   # a01.txt -> b01.txt, 2 at a time
  bakapara 'gzip -9 <>' ::: *.log                        # a job per file, one per CPU
  bakapara < jobs.jsonl > results.jsonl                  # JSON jobs in, JSON results out

'bakapara --help' (or 'man bakapara') has every option, the job and result keys, the exit status.";

const AFTER_LONG_HELP: &str = "\
TEMPLATES:
  <>      the whole input item (several sources or columns: joined by one space)
  <N>     the N-th source or column, from 1 (<-N>: from the end)
  <name>  field name of a --jsonl object, or the value named name by --header
  <#>     the job's sequence number
  <%>     the slot number the job runs in
  <.>     without extension: dir/a01.txt gives dir/a01
  </>     basename: a01.txt
  <//>    dirname: dir (. for a bare name)
  </.>    basename without extension: a01
  </a/b>  first match of regex a replaced by b: dir/b01.txt ($1 for captures)
  <//a/b>  every match replaced
  <..>    without two extensions: a.tar.gz gives a (<...>: three; </..>: basename, two)
  <+/>    what </> removes: dir (empty for a bare name)
  <+.>    what <.> removes: txt (<+..>: what <..> removes, tar.gz; <+...>)
  <##>    the number of jobs: a job using it (or <0#>) waits for the end of input, so all
          input is read, and held, before the first job starts
  <0#>    the job's sequence number, zero-padded to the width of <##>: 01..12
  Operators combine with a base: <2/.>, <name//x/y>. Values are inserted quoted as one shell word
  (--no-quote inserts them verbatim); in --out, --err and --cd they are paths, never quoted.
  An unknown token is an error before any job runs. A template with no token but GNU Parallel's
  {} gets a warning: it runs with <> appended, {} staying as text.
  With --braces the tokens are written as in GNU Parallel: {} {.} {/} {//} {/.} {N} {-N} {#} {%}
  {/a/b} {//a/b}, {name} with --jsonl, and those of its --plus (always on here): {..} {...}
  {/..} {+/} {+.} {+..} {##} {0#}. Then <...> is plain text, and so is a brace group that
  is not a token (awk '{print $1}', {a,b}, ${HOME}); a template with no token gets {} appended.

JOB KEYS:
  cmd      the command (required)
  cd       directory to run in, relative to the working directory (--workdir on hosts)
  out      file for stdout (parents created; relative to cd)
  err      file for stderr
  host     a host name, or a list of names, the job may run on
  env      object of environment variables
  timeout  seconds (or 10s, 5m) before the job is stopped
  retries  how many more times a failed job runs
  Any other key is carried through to the result line unchanged; one that looks like a misspelt
  known key (timout, Cd, hosts, command...) gets a warning on stderr, once per key name.

RESULT KEYS:
  status     ok: it ran and exited; error: it could not run, timed out, or lost its host;
             aborted: stopped by a signal or --halt
  code       exit code, or null
  signal     the signal that killed the job, e.g. SIGKILL
  error      why, when status is not ok
  seq        position in the input, from 1
  host       where it ran: the name given in -S (localhost for this machine)
  engine_id  the global slot index, from 0
  attempts   how many times it was started
  submitted  when it was read (RFC 3339, microseconds)
  started    when it started (null when it never did)
  completed  when it ended
  received   when its result was written
  elapsed    seconds, completed minus started
  msg_id     a unique id of this job run
  stdout     captured output (stdout_base64 when not UTF-8; stdout_truncated when cut)
  stderr     captured errors (likewise)

EXAMPLES:
  Turn a01.txt..a04.txt into b01.txt..b04.txt, two jobs at a time:
    ls a*.txt | bakapara -j 2 'job < <> > </a/b>'
  Compress every log, one job per CPU:
    bakapara 'gzip -9 <>' ::: *.log
  Run a JSON job list, then look at the failures with jq:
    bakapara < jobs.jsonl > results.jsonl
    jq -c 'select(.result.code != 0)' results.jsonl
  Run what did not succeed last time, keeping the earlier results:
    bakapara --resume results.jsonl < jobs.jsonl > results2.jsonl
  Fan out over two hosts with 8 slots each and this machine with 2:
    ls *.fastq | bakapara -S node01/8,node02/8,:/2 'align <> > <.>.bam'
  Every combination of two sources:
    bakapara 'convert -resize <2> <1> <1/.>_<2>.png' ::: *.jpg ::: 50% 25%
  A Makefile recipe (make stops when a job failed: the exit status counts them; with `+`,
  `make -jN` bounds the jobs of all recipes together, through make's jobserver):
    thumbs: ; +ls *.jpg | bakapara -q --joblog t.jsonl 'convert <> t/</>'

EXIT STATUS:
  0    every job ran ok with code 0
  1-100  the number of failed jobs (status not ok, or code not 0)
  101  more than 100 jobs failed
  --halt  a fail= halt: the exit code of the job that triggered it (1 if none); success=, done=: 0
  255  a usage or fatal error, before any job runs where it can be known
  130 / 143  stopped by SIGINT / SIGTERM: bakapara dies of that signal after its cleanup";

/// The options `-h` shows (besides --help and --version), the five a newcomer needs first;
/// `--help` shows every option. Kept as one list, so that a new option stays out of `-h`
/// unless it is put here.
const SHORT_HELP_OPTIONS: [&str; 5] = ["jobs", "sshlogin", "keep_order", "text", "dry_run"];

impl Cli {
    /// The clap command of [`Cli`] as bakapara parses and documents it: every option but
    /// [`SHORT_HELP_OPTIONS`] is left out of `-h`.
    pub fn clap_command() -> clap::Command {
        <Cli as clap::CommandFactory>::command().mut_args(|arg| {
            if arg.is_positional() || SHORT_HELP_OPTIONS.contains(&arg.get_id().as_str()) {
                arg
            } else {
                arg.hide_short_help(true)
            }
        })
    }
}

/// The command line of bakapara. Input sources (`:::` / `::::`) are split off before clap sees
/// the arguments; see [`crate::config::split_sources`].
#[derive(Debug, Clone, Parser)]
#[command(
    name = "bakapara",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = AFTER_HELP,
    after_long_help = AFTER_LONG_HELP,
    override_usage = "bakapara [OPTIONS] [TEMPLATE]... [::: ARG... | :::: FILE...]...",
    max_term_width = 100
)]
pub struct Cli {
    /// Command template (tokens below); without it, each stdin line is a job.
    ///
    /// Several words are joined by spaces. Without a template, a stdin line is a JSON object
    /// or a command line.
    #[arg(value_name = "TEMPLATE", trailing_var_arg = true)]
    pub template: Vec<String>,

    /// Jobs at once on this machine (+N, -N, N%: of the CPU count) [default: the CPU count].
    ///
    /// As in GNU Parallel, +N and -N are the CPU count plus or minus N, N% a share of it
    /// (rounded up; at least 1 job), and 0 as many as possible: as many as the open-file limit
    /// leaves room for (about one job per 3 files of ulimit -n). At most 4096. More than the
    /// open-file limit leaves room for is reduced to that, with a warning, as GNU Parallel does.
    #[arg(
        short = 'j',
        long = "jobs",
        value_name = "N",
        allow_negative_numbers = true,
        value_parser = crate::config::parse_jobs,
        help_heading = "Running"
    )]
    pub jobs: Option<crate::config::Jobs>,

    /// Seconds (or 500ms, 2m...) between SIGTERM and SIGKILL when a job is stopped.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "2s",
        help_heading = "Running"
    )]
    pub grace: String,

    /// Stop a job that runs longer than DURATION (30, 1.5, 500ms, 10s, 5m, 1h30m): TERM to
    /// its process group, KILL after --grace. A job's own "timeout" key wins.
    #[arg(long, value_name = "DURATION", help_heading = "Running")]
    pub timeout: Option<String>,

    /// Run a failed job (status not ok, or a code other than 0) up to N more times,
    /// preferring another host. A job's own "retries" key wins.
    #[arg(long, value_name = "N", default_value_t = 0, help_heading = "Running")]
    pub retries: u32,

    /// Stop the run early, in GNU Parallel's syntax: now|soon,fail|success|done=N|N%
    /// (e.g. now,fail=1: kill running jobs at the first failure; soon,fail=10%: start no new
    /// jobs once 10% failed). A percentage is of all jobs once their number is known; while
    /// input streams, of the jobs finished, from 10 on. A fail= halt exits with the code of
    /// the job that triggered it.
    #[arg(long, value_name = "WHEN,WHAT=N", help_heading = "Running")]
    pub halt: Option<String>,

    /// Skip every job whose cmd (and cd) already has status ok and code 0 in FILE, a previous
    /// result stream, copying its line through (with this run's seq). No FILE yet: nothing to
    /// skip. FILE may not be stdout.
    #[arg(long, value_name = "FILE", help_heading = "Running")]
    pub resume: Option<std::path::PathBuf>,

    /// Hosts to run on, e.g. node01/8,node02/8,: (/N slots; ":" is this machine).
    ///
    /// Comma-separated [user@]host[:port][/N] (N slots; default: its CPU count); ":" or
    /// "localhost" is this machine. Repeatable. Host ranges: node[01-12]/4, n[1-3,7].
    /// ENTRY=CMD starts that entry's agent with the command CMD (<host> = the host name),
    /// not SSH; @slurm is the nodes of the Slurm allocation (see --slurm).
    #[arg(short = 'S', long = "sshlogin", value_name = "LIST", action = ArgAction::Append, help_heading = "Hosts")]
    pub sshlogin: Vec<String>,

    /// Read hosts from FILE, one entry a line ("#" starts a comment).
    #[arg(long, value_name = "FILE", help_heading = "Hosts")]
    pub sshloginfile: Option<std::path::PathBuf>,

    /// Use this OpenSSH client config instead of ~/.ssh/config.
    #[arg(long, value_name = "FILE", help_heading = "Hosts")]
    pub ssh_config: Option<std::path::PathBuf>,

    /// Directory remote jobs start in (~ is the login directory; ... is a fresh directory of
    /// this run under ~/.bakapara/tmp, removed with --cleanup) [default: bakapara's working
    /// directory, the same path on every host]. Created when it does not exist.
    #[arg(long, value_name = "DIR", help_heading = "Hosts")]
    pub workdir: Option<String>,

    /// Pass the local environment variable NAME to every job, remote ones included; an
    /// exported bash function (export -f NAME) is shipped too. Repeatable.
    #[arg(long = "env", value_name = "NAME", action = ArgAction::Append, help_heading = "Hosts")]
    pub env: Vec<String>,

    /// Before a remote job runs, copy the file named by template T (GNU Parallel's
    /// --transferfile) to the host, at the same path under the remote working directory.
    ///
    /// Relative paths are relative to bakapara's working directory here and to --workdir there;
    /// absolute paths stay absolute. The copy goes over the host's existing connection; a file
    /// that cannot be copied gives the job an error result naming the file and the host.
    /// Local jobs skip it. Repeatable.
    #[arg(long = "transferfile", visible_alias = "tf", value_name = "T", action = ArgAction::Append, help_heading = "Files on hosts")]
    pub transferfile: Vec<String>,

    /// --transferfile '<>' (the input item is the file).
    #[arg(long, help_heading = "Files on hosts")]
    pub transfer: bool,

    /// After a remote job ends (also when it failed), copy the file named by template T back
    /// here; it is written under a temp name, then renamed. Repeatable.
    #[arg(long = "return", value_name = "T", action = ArgAction::Append, help_heading = "Files on hosts")]
    pub return_file: Vec<String>,

    /// Remove the transferred and returned files on the host after each job (and the
    /// --basefile files and a --workdir ... directory at the end of the run).
    #[arg(long, help_heading = "Files on hosts")]
    pub cleanup: bool,

    /// --transfer --return T --cleanup. Repeatable.
    #[arg(long, value_name = "T", action = ArgAction::Append, help_heading = "Files on hosts")]
    pub trc: Vec<String>,

    /// Copy FILE once to every host before its first job (removed at the end with --cleanup).
    /// Repeatable.
    #[arg(long, visible_alias = "bf", value_name = "FILE", action = ArgAction::Append, help_heading = "Files on hosts")]
    pub basefile: Vec<String>,

    /// Run TEMPLATE once on every host of -S, with no input (GNU Parallel's --nonall): one
    /// result line per host.
    #[arg(long, help_heading = "Hosts")]
    pub nonall: bool,

    /// Run every input job on every host of -S: one result line per (job, host).
    #[arg(long, help_heading = "Hosts")]
    pub onall: bool,

    /// Fail a job when every host it may run on stays down this long.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "60s",
        help_heading = "Hosts"
    )]
    pub host_timeout: String,

    /// Split each input line into columns <1>, <2>... at matches of REGEX (each column
    /// trimmed of white space, as GNU Parallel does: --trim n keeps it).
    #[arg(long, value_name = "REGEX", help_heading = "Input")]
    pub colsep: Option<String>,

    /// Up to N input items per job: <1>..<N> are its items, <> all of them (each its own
    /// shell word). -N0: one job per item, inserting none of it.
    ///
    /// As GNU Parallel's -N: a <K> past the last item of the last, shorter job is empty. The
    /// job's "input" is the array of its items (with several sources or columns: all their
    /// values, in order). A job is also cut short where the next item would pass the
    /// command-line limit (see -m).
    #[arg(
        short = 'N',
        long = "max-replace-args",
        value_name = "N",
        conflicts_with_all = ["max_args", "multiple", "context_replace", "xargs"],
        help_heading = "Input"
    )]
    pub max_replace_args: Option<usize>,

    /// Up to N input items per job, as -N (GNU Parallel's -n: the same here, since every
    /// value is quoted; -n0 as -N0).
    #[arg(
        short = 'n',
        long = "max-args",
        value_name = "N",
        conflicts_with_all = ["multiple", "context_replace", "xargs"],
        help_heading = "Input"
    )]
    pub max_args: Option<usize>,

    /// As many input items per job as fit the command-line limit: <> is all of them, each its
    /// own shell word.
    ///
    /// The limit is the kernel's for one argument (128 KiB: the command goes to bash -c as
    /// one), less the template's own text. Input is streamed, so unlike GNU Parallel's -m the
    /// items are not spread evenly over the job slots: each job is filled in turn (GNU's
    /// -j1 -m, or --xargs).
    #[arg(
        short = 'm',
        conflicts_with_all = ["context_replace", "xargs"],
        help_heading = "Input"
    )]
    pub multiple: bool,

    /// As -m, and the word around a <> token is repeated for each item: 'mv -t dir pre-<>'
    /// runs mv -t dir pre-a pre-b... (GNU Parallel's context replace).
    #[arg(short = 'X', conflicts_with = "xargs", help_heading = "Input")]
    pub context_replace: bool,

    /// As many input items per job as fit the command-line limit, as xargs does (here the
    /// same as -m).
    #[arg(long, help_heading = "Input")]
    pub xargs: bool,

    /// Pair the input sources element by element instead of combining every item with every
    /// other: ::: a b c ::: 1 2 gives a 1, b 2, c 1 (the shorter wraps around).
    ///
    /// A source after :::+ or ::::+ is paired with the one before it, the longer cut to the
    /// shorter, as GNU Parallel 20221122 does (--link wraps, :::+ cuts).
    #[arg(long, visible_alias = "xapply", help_heading = "Input")]
    pub link: bool,

    /// Read input items from FILE, one a line: another spelling of :::: FILE. Repeatable;
    /// these sources come before the ::: and :::: ones.
    #[arg(short = 'a', long = "arg-file", value_name = "FILE", action = ArgAction::Append, help_heading = "Input")]
    pub arg_file: Vec<std::path::PathBuf>,

    /// Items of stdin and of files end with a NUL byte, not a newline (find -print0).
    #[arg(
        short = '0',
        long = "null",
        conflicts_with = "delimiter",
        help_heading = "Input"
    )]
    pub null: bool,

    /// Items of stdin and of files end with DELIM, not a newline. DELIM may be several bytes
    /// and hold C escapes: \n \t \r \0 \\ \xHH \NNN (octal).
    #[arg(
        short = 'd',
        long = "delimiter",
        value_name = "DELIM",
        help_heading = "Input"
    )]
    pub delimiter: Option<String>,

    /// Use SEP instead of ::: to start a source of arguments (and SEP+ for a linked one).
    #[arg(long, value_name = "SEP", help_heading = "Input")]
    pub arg_sep: Option<String>,

    /// Use SEP instead of :::: to start a source of files (and SEP+ for a linked one).
    #[arg(long, value_name = "SEP", help_heading = "Input")]
    pub arg_file_sep: Option<String>,

    /// The first item of each source names its values: a <name> token is the value of that
    /// column (with --colsep) or source. SEP is ":" (or a regex, taken as ":").
    ///
    /// As GNU Parallel's --header: bakapara --header : 'echo <a> <b>' ::: a 1 2 ::: b x y runs
    /// echo 1 x, echo 1 y... The first line of stdin or of a :::: file, split at --colsep,
    /// gives that source's names; the first argument of a ::: source is its name. GNU's
    /// multi-line header regexes are for --pipe: here the header is always the first item.
    #[arg(long, value_name = "SEP", help_heading = "Input")]
    pub header: Option<String>,

    /// Remove white space from each value: n (none), l (from the start), r (from the end), lr
    /// or rl (both) [default: n; lr with --colsep, as GNU Parallel].
    #[arg(long, value_name = "n|l|r|lr|rl", value_parser = ["n", "l", "r", "lr", "rl"], help_heading = "Input")]
    pub trim: Option<String>,

    /// Each stdin line is a JSON object whose fields the template uses as <name>.
    #[arg(long, help_heading = "Input")]
    pub jsonl: bool,

    /// Write templates with GNU Parallel's tokens: {} {.} {/} {//} {/.} {N} {-N} {#} {%}
    /// {/RE/REP} {//RE/REP}, and {name} with --jsonl.
    ///
    /// Then <...> is plain text (grep '<html>' works), and so is a brace group that is not a
    /// token, as GNU Parallel leaves it: awk '{print $1}', {a,b}, ${HOME}. A template with no
    /// token gets " {}" appended.
    #[arg(long, help_heading = "Input")]
    pub braces: bool,

    /// Insert template values verbatim instead of as one quoted shell word.
    #[arg(long, help_heading = "Input")]
    pub no_quote: bool,

    /// Write each job's stdout to this file (a template; a path, never quoted).
    #[arg(long, value_name = "TEMPLATE", help_heading = "Input")]
    pub out: Option<String>,

    /// Write each job's stderr to this file (a template; a path, never quoted).
    #[arg(long, value_name = "TEMPLATE", help_heading = "Input")]
    pub err: Option<String>,

    /// Run each job in this directory (a template; a path, never quoted).
    #[arg(long, value_name = "TEMPLATE", help_heading = "Input")]
    pub cd: Option<String>,

    /// Cut stdin into blocks of whole records and give each block to a job on its stdin
    /// (GNU Parallel's --pipe). The template is run as is: no <> is appended.
    ///
    /// A block is --block bytes read, cut back to the last record end in them (the rest
    /// starts the next block); a record longer than --block makes its block longer. With -N n
    /// each block is n records. Blocks in memory are bounded: about (-j + 2) x --block bytes.
    /// With a :::: FILE (or -a FILE) source the file is read instead of stdin. On -S remote
    /// hosts the block goes over the SSH channel first and the remote job reads it from a temp
    /// file there (mktemp; removed as the job starts). A job's result line has no "input" key.
    #[arg(long, visible_alias = "spreadstdin", help_heading = "Pipe")]
    pub pipe: bool,

    /// As --pipe, for the file of -a FILE or :::: FILE: it is cut into byte ranges of about
    /// --block bytes (each ending at a record end), which go from the file to the jobs
    /// through the kernel (splice), never through bakapara's memory.
    #[arg(long, conflicts_with = "pipe", help_heading = "Pipe")]
    pub pipe_part: bool,

    /// --pipe: the bytes read for a block [default: 1M]. As GNU Parallel: K, M, G are powers of
    /// 1024, k, m, g of 1000 (1k is 1000 bytes).
    #[arg(
        long,
        visible_alias = "block-size",
        value_name = "SIZE",
        help_heading = "Pipe"
    )]
    pub block: Option<String>,

    /// --pipe: what ends a record [default: \n, or nothing when only --recstart is given].
    /// C escapes (\n, \t, \0, \xHH) are understood; with --regexp it is a regex.
    #[arg(
        long,
        value_name = "STR",
        allow_hyphen_values = true,
        help_heading = "Pipe"
    )]
    pub recend: Option<String>,

    /// --pipe: what starts a record [default: nothing]. A block is cut only where a record
    /// end is followed by a record start.
    #[arg(
        long,
        value_name = "STR",
        allow_hyphen_values = true,
        help_heading = "Pipe"
    )]
    pub recstart: Option<String>,

    /// --pipe: --recend and --recstart are regexes.
    #[arg(long, help_heading = "Pipe")]
    pub regexp: bool,

    /// --pipe: remove the record start at the front and the record end at the back of each
    /// record before it goes to the job.
    #[arg(long, visible_aliases = ["rrs", "removerecsep"], help_heading = "Pipe")]
    pub remove_rec_sep: bool,

    /// Read all input first, then run the jobs in a random order (numbered <#> in that
    /// order, as GNU Parallel's --shuf).
    #[arg(long, conflicts_with_all = ["pipe", "pipe_part"], help_heading = "Running")]
    pub shuf: bool,

    /// Wait at least D between two job starts (30, 1.5, 500ms, 2s...).
    #[arg(long, value_name = "D", help_heading = "Running")]
    pub delay: Option<String>,

    /// Start a job only when at least SIZE of memory is available (MemAvailable of
    /// /proc/meminfo where the job runs; 512M, 2G...).
    ///
    /// Unlike GNU Parallel, a running job is never killed when memory gets low. A job for a -S
    /// remote host waits on that host, checked there every 0.2 s, and holds its slot while it
    /// waits; this machine's memory holds jobs back only when a local host (: or none) is in
    /// the run.
    #[arg(long, value_name = "SIZE", help_heading = "Running")]
    pub memfree: Option<String>,

    /// Start a job only while the 1-minute load average where it runs is below MAX (a number,
    /// or as GNU Parallel a percentage of this machine's CPUs: 100% is one per CPU). On -S
    /// remote hosts as --memfree: checked there, the job holding its slot while it waits.
    #[arg(long, value_name = "MAX", help_heading = "Running")]
    pub load: Option<String>,

    /// Emit results in input order instead of completion order.
    #[arg(short = 'k', long, help_heading = "Output")]
    pub keep_order: bool,

    /// Print each job's output, grouped per job, instead of JSON result lines.
    ///
    /// Its stdout to stdout and its stderr to stderr, whole per job, never interleaved; the
    /// result lines then go to --joblog when given. The default when stdout is a terminal.
    #[arg(long, help_heading = "Output")]
    pub text: bool,

    /// Pass jobs' output on as it comes, line by line: lines of different jobs may interleave,
    /// a line is never split (text output: implies --text). Local jobs; SSH jobs' output stays
    /// grouped per job.
    #[arg(
        long,
        visible_alias = "lb",
        conflicts_with = "ungroup",
        help_heading = "Output"
    )]
    pub line_buffer: bool,

    /// Pass jobs' output on as it comes, in whatever pieces the jobs write: fastest, but
    /// output of different jobs may mix within a line (text output: implies --text; no
    /// --tag). Local jobs; SSH jobs' output stays grouped per job.
    #[arg(short = 'u', long, help_heading = "Output")]
    pub ungroup: bool,

    /// Write JSON result lines even when stdout is a terminal (a pipe or a file gets them
    /// anyway).
    #[arg(long, conflicts_with = "text", help_heading = "Output")]
    pub json: bool,

    /// Text output: print the output of all jobs at the end, hosts with the same output
    /// folded into one block headed by their host range, e.g. h[1-3,5] (as clush -b and
    /// dshbak -c do; implies --text).
    #[arg(long, help_heading = "Output")]
    pub gather: bool,

    /// Prefix each output line with the job's input and a TAB (text output: implies --text).
    #[arg(long, help_heading = "Output")]
    pub tag: bool,

    /// Prefix each output line with TEMPLATE expanded for the job, then a TAB (implies --tag).
    /// Values go in as text, never quoted: --tagstring '<#> <1/>' prints "3 a.txt<TAB>...".
    #[arg(long, value_name = "TEMPLATE", help_heading = "Output")]
    pub tagstring: Option<String>,

    /// Also write each job's stdout, stderr and seq as files under DIR, in GNU Parallel's
    /// layout: DIR/1/<value of source 1>/2/<value of source 2>/stdout (a "/" in a value is
    /// written "\_", a "\" as "\\"); job lines without input use their command as the value.
    #[arg(long, value_name = "DIR", help_heading = "Output")]
    pub results: Option<std::path::PathBuf>,

    /// Also write every result line to FILE.
    #[arg(long, value_name = "FILE", help_heading = "Output")]
    pub joblog: Option<std::path::PathBuf>,

    /// Keep at most SIZE bytes of each captured stream (512K, 1M, ...); the rest is dropped
    /// and marked.
    #[arg(
        long,
        value_name = "SIZE",
        default_value = "1M",
        help_heading = "Output"
    )]
    pub capture_limit: String,

    /// Print the jobs that would run, as JSON lines (with --text: their command lines, as GNU
    /// Parallel does), and run nothing.
    #[arg(long, visible_alias = "dryrun", help_heading = "Output")]
    pub dry_run: bool,

    /// Print only errors on stderr: failed jobs (with the tail of their stderr), and one line
    /// for the jobs Ctrl-C or --halt aborted.
    #[arg(short, long, action = ArgAction::SetTrue, conflicts_with = "verbose", help_heading = "Output")]
    pub quiet: bool,

    /// Also log a line on stderr when each job starts.
    #[arg(short, long, action = ArgAction::SetTrue, help_heading = "Output")]
    pub verbose: bool,

    /// Print the man page or a shell's completion script and exit, e.g.
    /// bakapara --generate man > ~/.local/share/man/man1/bakapara.1
    #[arg(long, value_name = "KIND", value_enum, help_heading = "Output")]
    pub generate: Option<Generate>,

    /// Start each remote host's agent with CMD instead of SSH: a template where <host> is the
    /// host's name, e.g. 'docker exec -i <host>' or 'kubectl exec -i <host> --'. CMD must run
    /// what follows it (bash ...) on the host with its stdin and stdout. A launcher host has no
    /// file transfers (--transferfile, --return, --basefile).
    #[arg(long, value_name = "CMD", help_heading = "Hosts")]
    pub launcher: Option<String>,

    /// Fail a job, instead of running it again, once a host was lost under it N times (so a
    /// job that kills its host cannot take down every host in turn). N >= 1; 1: never again.
    #[arg(long, value_name = "N", default_value_t = 5, help_heading = "Hosts")]
    pub host_loss_limit: u32,

    /// Run on the nodes of the Slurm allocation bakapara runs in (under salloc or sbatch),
    /// one srun step per node; the same as -S @slurm.
    ///
    /// Nodes from SLURM_JOB_NODELIST; slots from SLURM_TASKS_PER_NODE when the allocation
    /// asked for tasks (-n, --ntasks-per-node), else SLURM_JOB_CPUS_PER_NODE. -S @slurm/N
    /// gives every node N slots.
    #[arg(long, help_heading = "Hosts")]
    pub slurm: bool,
}

/// What `--generate` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Generate {
    /// The man page (roff), for `man`.
    Man,
    /// The bash completion script.
    Bash,
    /// The zsh completion function (`_bakapara`).
    Zsh,
    /// The fish completion script.
    Fish,
}
