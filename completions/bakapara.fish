complete -c bakapara -s j -l jobs -d 'Jobs at once on this machine (+N, -N, N%: of the CPU count) [default: the CPU count]' -r
complete -c bakapara -l grace -d 'Seconds (or 500ms, 2m...) between SIGTERM and SIGKILL when a job is stopped' -r
complete -c bakapara -l timeout -d 'Stop a job that runs longer than DURATION (30, 1.5, 500ms, 10s, 5m, 1h30m): TERM to its process group, KILL after --grace. A job\'s own "timeout" key wins' -r
complete -c bakapara -l retries -d 'Run a failed job (status not ok, or a code other than 0) up to N more times, preferring another host. A job\'s own "retries" key wins' -r
complete -c bakapara -l halt -d 'Stop the run early, in GNU Parallel\'s syntax: now|soon,fail|success|done=N|N% (e.g. now,fail=1: kill running jobs at the first failure; soon,fail=10%: start no new jobs once 10% failed). A percentage is of all jobs once their number is known; while input streams, of the jobs finished, from 10 on. A fail= halt exits with the code of the job that triggered it' -r
complete -c bakapara -l resume -d 'Skip every job whose cmd (and cd) already has status ok and code 0 in FILE, a previous result stream, copying its line through (with this run\'s seq). No FILE yet: nothing to skip. FILE may not be stdout' -r -F
complete -c bakapara -s S -l sshlogin -d 'Hosts to run on, e.g. node01/8,node02/8,: (/N slots; ":" is this machine)' -r
complete -c bakapara -l sshloginfile -d 'Read hosts from FILE, one entry a line ("#" starts a comment)' -r -F
complete -c bakapara -l ssh-config -d 'Use this OpenSSH client config instead of ~/.ssh/config' -r -F
complete -c bakapara -l workdir -d 'Directory remote jobs start in (~ is the login directory; ... is a fresh directory of this run under ~/.bakapara/tmp, removed with --cleanup) [default: bakapara\'s working directory, the same path on every host]. Created when it does not exist' -r
complete -c bakapara -l env -d 'Pass the local environment variable NAME to every job, remote ones included; an exported bash function (export -f NAME) is shipped too. Repeatable' -r
complete -c bakapara -l transferfile -l tf -d 'Before a remote job runs, copy the file named by template T (GNU Parallel\'s --transferfile) to the host, at the same path under the remote working directory' -r
complete -c bakapara -l return -d 'After a remote job ends (also when it failed), copy the file named by template T back here; it is written under a temp name, then renamed. Repeatable' -r
complete -c bakapara -l trc -d '--transfer --return T --cleanup. Repeatable' -r
complete -c bakapara -l basefile -l bf -d 'Copy FILE once to every host before its first job (removed at the end with --cleanup). Repeatable' -r
complete -c bakapara -l host-timeout -d 'Fail a job when every host it may run on stays down this long' -r
complete -c bakapara -l colsep -d 'Split each input line into columns <1>, <2>... at matches of REGEX (each column trimmed of white space, as GNU Parallel does: --trim n keeps it)' -r
complete -c bakapara -s N -l max-replace-args -d 'Up to N input items per job: <1>..<N> are its items, <> all of them (each its own shell word). -N0: one job per item, inserting none of it' -r
complete -c bakapara -s n -l max-args -d 'Up to N input items per job, as -N (GNU Parallel\'s -n: the same here, since every value is quoted; -n0 as -N0)' -r
complete -c bakapara -s a -l arg-file -d 'Read input items from FILE, one a line: another spelling of :::: FILE. Repeatable; these sources come before the ::: and :::: ones' -r -F
complete -c bakapara -s d -l delimiter -d 'Items of stdin and of files end with DELIM, not a newline. DELIM may be several bytes and hold C escapes: \\n \\t \\r \\0 \\\\ \\xHH \\NNN (octal)' -r
complete -c bakapara -l arg-sep -d 'Use SEP instead of ::: to start a source of arguments (and SEP+ for a linked one)' -r
complete -c bakapara -l arg-file-sep -d 'Use SEP instead of :::: to start a source of files (and SEP+ for a linked one)' -r
complete -c bakapara -l header -d 'The first item of each source names its values: a <name> token is the value of that column (with --colsep) or source. SEP is ":" (or a regex, taken as ":")' -r
complete -c bakapara -l trim -d 'Remove white space from each value: n (none), l (from the start), r (from the end), lr or rl (both) [default: n; lr with --colsep, as GNU Parallel]' -r -f -a "n\t''
l\t''
r\t''
lr\t''
rl\t''"
complete -c bakapara -l out -d 'Write each job\'s stdout to this file (a template; a path, never quoted)' -r
complete -c bakapara -l err -d 'Write each job\'s stderr to this file (a template; a path, never quoted)' -r
complete -c bakapara -l cd -d 'Run each job in this directory (a template; a path, never quoted)' -r
complete -c bakapara -l block -l block-size -d '--pipe: the bytes read for a block [default: 1M]. As GNU Parallel: K, M, G are powers of 1024, k, m, g of 1000 (1k is 1000 bytes)' -r
complete -c bakapara -l recend -d '--pipe: what ends a record [default: \\n, or nothing when only --recstart is given]. C escapes (\\n, \\t, \\0, \\xHH) are understood; with --regexp it is a regex' -r
complete -c bakapara -l recstart -d '--pipe: what starts a record [default: nothing]. A block is cut only where a record end is followed by a record start' -r
complete -c bakapara -l delay -d 'Wait at least D between two job starts (30, 1.5, 500ms, 2s...)' -r
complete -c bakapara -l memfree -d 'Start a job only when at least SIZE of memory is available (MemAvailable of /proc/meminfo where the job runs; 512M, 2G...)' -r
complete -c bakapara -l load -d 'Start a job only while the 1-minute load average where it runs is below MAX (a number, or as GNU Parallel a percentage of this machine\'s CPUs: 100% is one per CPU). On -S remote hosts as --memfree: checked there, the job holding its slot while it waits' -r
complete -c bakapara -l tagstring -d 'Prefix each output line with TEMPLATE expanded for the job, then a TAB (implies --tag). Values go in as text, never quoted: --tagstring \'<#> <1/>\' prints "3 a.txt<TAB>..."' -r
complete -c bakapara -l results -d 'Also write each job\'s stdout, stderr and seq as files under DIR, in GNU Parallel\'s layout: DIR/1/<value of source 1>/2/<value of source 2>/stdout (a "/" in a value is written "\\_", a "\\" as "\\\\"); job lines without input use their command as the value' -r -F
complete -c bakapara -l joblog -d 'Also write every result line to FILE' -r -F
complete -c bakapara -l capture-limit -d 'Keep at most SIZE bytes of each captured stream (512K, 1M, ...); the rest is dropped and marked' -r
complete -c bakapara -l generate -d 'Print the man page or a shell\'s completion script and exit, e.g. bakapara --generate man > ~/.local/share/man/man1/bakapara.1' -r -f -a "man\t'The man page (roff), for `man`'
bash\t'The bash completion script'
zsh\t'The zsh completion function (`_bakapara`)'
fish\t'The fish completion script'"
complete -c bakapara -l launcher -d 'Start each remote host\'s agent with CMD instead of SSH: a template where <host> is the host\'s name, e.g. \'docker exec -i <host>\' or \'kubectl exec -i <host> --\'. CMD must run what follows it (bash ...) on the host with its stdin and stdout. A launcher host has no file transfers (--transferfile, --return, --basefile)' -r
complete -c bakapara -l host-loss-limit -d 'Fail a job, instead of running it again, once a host was lost under it N times (so a job that kills its host cannot take down every host in turn). N >= 1; 1: never again' -r
complete -c bakapara -l transfer -d '--transferfile \'<>\' (the input item is the file)'
complete -c bakapara -l cleanup -d 'Remove the transferred and returned files on the host after each job (and the --basefile files and a --workdir ... directory at the end of the run)'
complete -c bakapara -l nonall -d 'Run TEMPLATE once on every host of -S, with no input (GNU Parallel\'s --nonall): one result line per host'
complete -c bakapara -l onall -d 'Run every input job on every host of -S: one result line per (job, host)'
complete -c bakapara -s m -d 'As many input items per job as fit the command-line limit: <> is all of them, each its own shell word'
complete -c bakapara -s X -d 'As -m, and the word around a <> token is repeated for each item: \'mv -t dir pre-<>\' runs mv -t dir pre-a pre-b... (GNU Parallel\'s context replace)'
complete -c bakapara -l xargs -d 'As many input items per job as fit the command-line limit, as xargs does (here the same as -m)'
complete -c bakapara -l link -l xapply -d 'Pair the input sources element by element instead of combining every item with every other: ::: a b c ::: 1 2 gives a 1, b 2, c 1 (the shorter wraps around)'
complete -c bakapara -s 0 -l null -d 'Items of stdin and of files end with a NUL byte, not a newline (find -print0)'
complete -c bakapara -l jsonl -d 'Each stdin line is a JSON object whose fields the template uses as <name>'
complete -c bakapara -l braces -d 'Write templates with GNU Parallel\'s tokens: {} {.} {/} {//} {/.} {N} {-N} {#} {%} {/RE/REP} {//RE/REP}, and {name} with --jsonl'
complete -c bakapara -l no-quote -d 'Insert template values verbatim instead of as one quoted shell word'
complete -c bakapara -l pipe -l spreadstdin -d 'Cut stdin into blocks of whole records and give each block to a job on its stdin (GNU Parallel\'s --pipe). The template is run as is: no <> is appended'
complete -c bakapara -l pipe-part -d 'As --pipe, for the file of -a FILE or :::: FILE: it is cut into byte ranges of about --block bytes (each ending at a record end), which go from the file to the jobs through the kernel (splice), never through bakapara\'s memory'
complete -c bakapara -l regexp -d '--pipe: --recend and --recstart are regexes'
complete -c bakapara -l remove-rec-sep -l rrs -l removerecsep -d '--pipe: remove the record start at the front and the record end at the back of each record before it goes to the job'
complete -c bakapara -l shuf -d 'Read all input first, then run the jobs in a random order (numbered <#> in that order, as GNU Parallel\'s --shuf)'
complete -c bakapara -s k -l keep-order -d 'Emit results in input order instead of completion order'
complete -c bakapara -l text -d 'Print each job\'s output, grouped per job, instead of JSON result lines'
complete -c bakapara -l line-buffer -l lb -d 'Pass jobs\' output on as it comes, line by line: lines of different jobs may interleave, a line is never split (text output: implies --text). Local jobs; SSH jobs\' output stays grouped per job'
complete -c bakapara -s u -l ungroup -d 'Pass jobs\' output on as it comes, in whatever pieces the jobs write: fastest, but output of different jobs may mix within a line (text output: implies --text; no --tag). Local jobs; SSH jobs\' output stays grouped per job'
complete -c bakapara -l json -d 'Write JSON result lines even when stdout is a terminal (a pipe or a file gets them anyway)'
complete -c bakapara -l gather -d 'Text output: print the output of all jobs at the end, hosts with the same output folded into one block headed by their host range, e.g. h[1-3,5] (as clush -b and dshbak -c do; implies --text)'
complete -c bakapara -l tag -d 'Prefix each output line with the job\'s input and a TAB (text output: implies --text)'
complete -c bakapara -l dry-run -l dryrun -d 'Print the jobs that would run, as JSON lines (with --text: their command lines, as GNU Parallel does), and run nothing'
complete -c bakapara -s q -l quiet -d 'Print only errors on stderr: failed jobs (with the tail of their stderr), and one line for the jobs Ctrl-C or --halt aborted'
complete -c bakapara -s v -l verbose -d 'Also log a line on stderr when each job starts'
complete -c bakapara -l slurm -d 'Run on the nodes of the Slurm allocation bakapara runs in (under salloc or sbatch), one srun step per node; the same as -S @slurm'
complete -c bakapara -s h -l help -d 'Print help (see more with \'--help\')'
complete -c bakapara -s V -l version -d 'Print version'
