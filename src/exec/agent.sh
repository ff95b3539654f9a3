# bakapara's remote agent: one per host, started once over one SSH session (or a --launcher
# command), runs the jobs bakapara sends it. Needs bash (>= 4.2) and coreutils (mktemp, mkfifo,
# head, stat, rm, nproc). bakapara puts `F=FENCE_S D=STOP_S M=0|1 R=DIR S=SLOTS` before this
# text: with M=1 a job's BASE is created where missing (--workdir), a DIR that is not empty
# (relative to $HOME, or absolute) is removed when bakapara ends the run with Q, and the FIFOs
# of slots 0 to SLOTS - 1 are made at the start, with one mkfifo (0: each as its slot is
# first used).
#
# stdin, from bakapara, one message a line, fields as bash words (`eval "set -- $line"`):
#   J ID SLOT LEN GRACE_MS BASE CD OUT ERR CAP MEMFREE LOAD CMD [NAME=VALUE]...
#        (sent as `J` and 8 digits, the length of the rest of the line, newline included;
#        ID, SLOT and LEN are plain numbers, which the main loop reads without an eval)
#        a job for slot SLOT (a FIFO per slot: it runs once the slot's job before it ended);
#        LEN bytes of the job's stdin follow the line (--pipe). CAP: bytes of each captured
#        stream sent back (-1: all). MEMFREE (bytes) and LOAD (load average x 100) hold the
#        job back until this host has that much memory available and a load below LOAD.
#   T ID SLOT  stop the job (TERM its process group, KILL after GRACE_MS); a queued job never
#              starts
#   K ID SLOT  KILL it now
#   A     the run stops: start nothing more (every job not started yet is reported stopped);
#         its running jobs get their own T or K
#   P     bakapara is stopped (Ctrl-Z): STOP every job's group, start no job, and keep its jobs
#         through the silence that follows (EOF still ends the agent)
#   U     bakapara goes on: CONT every job's group; jobs start again
#   H     heartbeat
#   Q     quit: stop every job and exit
# Hearing nothing for F seconds (unless paused by a P), or EOF, acts as Q: every job's group gets
# TERM, then KILL after D seconds, so no job outlives a bakapara (or a link) that is gone.
#
# Per job, the fast path forks once (the job's subshell, which execs its bash) and creates no
# file: a slot's output spools (so.ID, se.ID, named after the job that first used them) serve
# its next jobs too, left empty between jobs. A spool that held output goes to the sender as the
# frame's text and the slot's next job starts a new one. When a process of the job's group is
# still alive after it (left behind in the background), it may write to them later: the slot
# leaves them to it (removed 32 jobs' worth at a time) and sends copies. (Creating a file costs
# 0.5 ms on a busy ext4; a process that left the group with setsid is not seen.)
# Files per slot, written over: sSLOT (a FIFO: the slot's J lines, or @ID for a line too long
# for one atomic write, whose text is then in j.ID), p.SLOT ("PID GRACE_MS ID" of the job running
# there, "- - -" between jobs), js.SLOT (bash's job table as the job there ended, see
# job) and, once a job there left processes behind, g.SLOT (their groups, which the agent's end
# stops too). Files per job, only when needed: i.ID (--pipe stdin), c.ID (T or
# K came), x.ID (why it could not run), po.ID/pe.ID (the frame's copies of its output).
#
# stdout, to bakapara, written by one process (the sender) so frames never interleave:
#   C NCPU                     first
#   S ID                       the job started
#   R ID KIND OUTLEN ERRLEN OUTTOTAL ERRTOTAL STATUS_OR_MESSAGE
#                              it ended (KIND done|stopped|error; signaled: killed by signal
#                              STATUS, which bakapara did not send), then OUTLEN + ERRLEN bytes:
#                              its captured stdout and stderr, cut at CAP (TOTALs: full sizes)
#   H                          heartbeat, after 0.5 s without a frame
#   X MESSAGE                  the agent stops (its jobs too) and says why: it exits next
set +m
# (stderr is /dev/null from here on, for every part of the agent and a job until it sets its
# own: no command needs a 2>/dev/null, which costs an open, two dups and a close.)
exec 3>&1 >/dev/null 2>/dev/null
w=$(mktemp -d 2>/dev/null || mktemp -d -t bakapara.XXXXXXXX 2>/dev/null)
h=${HOSTNAME:-$(uname -n)}
# (Absolute: a runner goes to its jobs' directories.)
case $w in /*) ;; ?*) w=$PWD/$w ;; esac
# Every FIFO of the agent in one mkfifo: a command costs a fork and an exec (3 ms on a busy
# host), here on the way to the first job.
declare -a rf
case $S in '' | *[!0-9]*) S=0 ;; esac
[ "${#S}" -le 4 ] && [ "$((10#$S))" -le 1024 ] && S=$((10#$S)) || S=0
for ((n = 0; n < S; n++)); do rf+=("$w/s$n"); done
if [ -z "$w" ] || ! mkfifo -- "$w/q" "$w/z" "${rf[@]}"; then
  printf 'X cannot create a temp directory on %s\n' "$h" >&3
  exit 1
fi
exec 7<>"$w/q" 9<>"$w/z"
printf x >"$w/heard"
# A pause without a fork: nobody writes to z.
nap() { IFS= read -r -t "$1" -u 9 _; }
# Whether a process of group $1 is alive; zombies (dead, not reaped yet) do not count.
alive() {
  local pg=$1 f s
  [ -r /proc/self/stat ] || { kill -0 -- -"$pg" 2>/dev/null; return; }
  for f in /proc/[0-9]*/stat; do
    { IFS= read -r s <"$f"; } 2>/dev/null || continue
    s=${s##*) }
    set -- $s
    [ "$3" = "$pg" ] && [ "$1" != Z ] && return 0
  done
  return 1
}
# Stops group $2 (T: TERM, then KILL after $3 ms; K: KILL now) until no process of it is left;
# a K for job $4 meanwhile cuts the grace short.
killer() {
  local k=$1 p=$2 left=$(($3 / 50)) m
  # (A stopped process acts on TERM once continued.)
  if [ "$k" = K ]; then left=0; else kill -TERM -- -"$p"; kill -CONT -- -"$p"; fi
  while alive "$p"; do
    if [ -z "$m" ] && [ "$k" = T ]; then
      IFS= read -r m <"$w/c.$4" && [ "$m" = K ] && left=0
      m=
    fi
    if [ "$left" -le 0 ]; then kill -KILL -- -"$p"; left=20; fi
    left=$((left - 1))
    nap 0.05
  done
}
# The only writer of stdout: frame lines and frame files handed over on fifo q (fd 7), each as
# `L LINE`, `F OUT ERR LINE` or, for the lines of every job (ASCII), `=NNN` and a line of NNN
# bytes without its newline: read in two reads, where bash reads a line from a fifo a byte
# at a time.
sender() {
  local m r a b n
  local -a g
  while :; do
    # The timeout is on the first byte alone: bash's `read -t` costs a select and two
    # sigprocmasks per byte, and the rest of the line is in the fifo already (lines are written
    # whole, in one write), so a line is never cut.
    # (A byte may come just as the time is up: read keeps it in m and says it timed out.)
    m=
    IFS= read -r -t 0.5 -N 1 -u 7 m
    r=$?
    if [ -n "$m" ]; then
      [ "$m" = $'\n' ] && continue
      if [ "$m" = = ]; then
        IFS= read -r -N 3 -u 7 n && IFS= read -r -N $((10#$n)) -u 7 m || exit
        printf '%s\n' "$m" || exit
        continue
      fi
      IFS= read -r -u 7 r || exit
      m=$m$r
      case $m in
        # (After an X frame nothing more is heard: the sender is done.)
        L\ X\ *) printf '%s\n' "${m#L }"; exit ;;
        L\ *) printf '%s\n' "${m#L }" || exit ;;
        # F OUT ERR FRAME_LINE: the line, then the files OUT and ERR under $w (- for none),
        # which nobody writes to any more; removed 64 at a time.
        F\ *)
          m=${m#F } a=/dev/null b=/dev/null
          [ "${m%% *}" = - ] || { a=$w/${m%% *}; g+=("$a"); }
          m=${m#* }
          [ "${m%% *}" = - ] || { b=$w/${m%% *}; g+=("$b"); }
          printf '%s\n' "${m#* }" && cat -- "$a" "$b" || exit
          [ "${#g[@]}" -lt 64 ] || { rm -f -- "${g[@]}"; g=(); } ;;
      esac
    else
      # (Nothing to send: the agent's main loop must still be there, or this is an orphan.)
      [ "$r" -gt 128 ] && kill -0 $$ 2>/dev/null || exit
      printf 'H\n' || exit
      [ "${#g[@]}" = 0 ] || { rm -f -- "${g[@]}"; g=(); }
    fi
  done
}
# Hands the sender line $1 (ASCII, under 1000 bytes) in its short form.
short() { printf '=%03d%s' "${#1}" "$1"; }
# Whether this host has MEMFREE bytes available and a load below LOAD (a check this host cannot
# make, without /proc, passes).
room() {
  local k v u a
  if [ -n "$mf" ] && [ -r /proc/meminfo ]; then
    while read -r k v u; do [ "$k" = MemAvailable: ] && break; done </proc/meminfo
    [ "$k" = MemAvailable: ] && [ $((v * 1024)) -lt "$mf" ] && return 1
  fi
  if [ -n "$ld" ] && [ -r /proc/loadavg ]; then
    read -r a u </proc/loadavg
    a=${a/./}
    [ $((10#$a)) -ge "$ld" ] && return 1
  fi
  return 0
}
# The end of job $id: its report; its files gone, and its spools emptied for the slot's next
# job, handed to the sender, or left to a process of the job still alive.
report() {
  local kind=$1 st=$2 ot=0 et=0 ol=0 el=0 a=- b=- left= x y
  st=${st//$'\n'/ }
  printf '%10s %10s %20s\n' - - - 1<>"$pf"
  if [ "$l" != 0 ] || [ -e "$w/c.$id" ] || [ -e "$w/x.$id" ]; then rm -f -- "$w/"[icx]".$id"; fi
  # A process of the job's group still alive may still write to the spools.
  [ -n "$p" ] && kill -0 -- -"$p" && left=1
  # (No pid: the job never started, and its spools are the slot's, empty.)
  if [ -n "$p" ] && { [ -s "$so" ] || [ -s "$se" ]; }; then
    # (A stream that went to an `out`/`err` file may have no spool yet: /dev/null stands in.)
    x=$so y=$se
    [ -e "$x" ] || x=/dev/null
    [ -e "$y" ] || y=/dev/null
    set -- $(stat -c %s -- "$x" "$y")
    ot=${1:-0} et=${2:-0}
    if [ -z "$left" ] && { [ "$cap" -lt 0 ] || { [ "$ot" -le "$cap" ] && [ "$et" -le "$cap" ]; }; }; then
      # Whole and written by nobody: sent as they are; the slot's next job starts new ones.
      ol=$ot el=$et
      [ "$ot" = 0 ] || { a=${so##*/} so=; }
      [ "$et" = 0 ] || { b=${se##*/} se=; }
    else
      # Copies, cut at CAP: the frame must be exactly as long as its line says, also while a
      # process the job left behind writes on.
      if [ "$ot" != 0 ]; then
        a=po.$id
        if [ "$cap" -ge 0 ]; then head -c "$cap" -- "$so" >"$w/$a"; else cat -- "$so" >"$w/$a"; fi
      fi
      if [ "$et" != 0 ]; then
        b=pe.$id
        if [ "$cap" -ge 0 ]; then head -c "$cap" -- "$se" >"$w/$b"; else cat -- "$se" >"$w/$b"; fi
      fi
      x=/dev/null y=/dev/null
      [ "$a" = - ] || x=$w/$a
      [ "$b" = - ] || y=$w/$b
      set -- $(stat -c %s -- "$x" "$y")
      ol=${1:-0} el=${2:-0}
      if [ -z "$left" ]; then
        [ -s "$so" ] && : >"$so"
        [ -s "$se" ] && : >"$se"
      fi
    fi
    printf 'F %s %s R %s %s %s %s %s %s %s\n' "$a" "$b" "$id" "$kind" "$ol" "$el" "$ot" "$et" "$st"
  else
    if [ "$kind" = error ]; then
      printf 'L R %s %s 0 0 0 0 %s\n' "$id" "$kind" "$st"
    else
      # (A number: ASCII, as the sender's short form needs.)
      short "R $id $kind 0 0 0 0 $st"
    fi
  fi
  if [ -n "$left" ]; then
    # The group outlives its job: the agent's end stops it with the running jobs, as no
    # process of a run outlives it (the slot's list g.SLOT keeps the groups still there).
    local q k= lg=$w/g.${pf##*/p.}
    if [ -e "$lg" ]; then
      while read -r q; do kill -0 -- -"$q" && k+=$q$'\n'; done <"$lg"
    fi
    printf '%s%s\n' "$k" "$p" >"$lg"
    # Left to the processes still writing to them: only ever removed, never reused.
    [ -n "$so" ] && dead+=("$so")
    [ -n "$se" ] && dead+=("$se")
    so= se=
    if [ "${#dead[@]}" -ge 64 ]; then
      rm -f -- "${dead[@]}"
      dead=()
    fi
  fi
}
# The job's process (in the background, its own process group): its environment, directory and
# streams, then its bash. (A function, not a `( ... )`: bash keeps the text of a background
# command for its job table, and a function call's text is one word.)
launch() {
  shopt -s execfail
  x() { printf '%s' "$*" >"$w/x.$id"; exit 255; }
  # A relative base is relative to the login directory, $HOME (where sshd starts us).
  if [ -n "$b" ]; then
    case $b in /*) ;; *) cd ;; esac
    cd -- "$b" || { [ "$M" = 1 ] && { mkdir -p -- "$b" || x "cannot create directory $b on $h"; } && cd -- "$b"; } ||
      x "cannot cd to $b on $h"
  else
    # (`--workdir ~`: the login directory, also where a launcher started the agent elsewhere.)
    cd
  fi
  if [ -n "$d" ]; then cd -- "$d" || x "cannot cd to $d on $h"; fi
  for f in "$o" "$e"; do
    if [ -n "$f" ] && [ "${f%/*}" != "$f" ] && [ -n "${f%/*}" ]; then
      mkdir -p -- "${f%/*}" || x "cannot create directory ${f%/*}"
    fi
  done
  exec <"$i" || x "cannot read the job's stdin on $h"
  if [ -n "$o" ]; then exec >"$o" || x "cannot write $o"; else exec >"$so"; fi
  if [ -n "$e" ]; then exec 4>"$e" || x "cannot write $e"; else exec 4>"$se"; fi
  # (A redirection of the group around `exec 2>` would undo it: fd 4 first.)
  exec 2>&4 4>&- 7>&- 8<&- 9<&-
  # The job's environment last: it may set any name (c, w, h, x...), so from here on nothing
  # reads a variable or calls a function of the agent's. The command, the error file and the
  # host's name are positional, and every command a builtin (`builtin`: a function the job
  # exports may have any name).
  set -- "$c" "$w/x.$id" "$h" "$@"
  # Exported functions first (--env NAME of `export -f NAME`, in bash's own environment form),
  # then the variables, through positional parameters only: a job's own fe_ or fn_ wins.
  for fe_ in "${@:4}"; do
    case $fe_ in
      BASH_FUNC_*%%=*)
        fn_=${fe_%%=*} fn_=${fn_#BASH_FUNC_} fn_=${fn_%\%\%}
        builtin eval "$fn_ ${fe_#*=}" 2>/dev/null && builtin export -f "$fn_" ||
          { builtin printf 'bad function %s' "$fn_" >"$2"; builtin exit 255; } ;;
    esac
  done
  while (($# > 3)); do
    case $4 in
      BASH_FUNC_*%%=*) ;;
      *) builtin export "$4" 2>/dev/null || { builtin printf 'bad environment variable %s' "${4%%=*}" >"$2"; builtin exit 255; } ;;
    esac
    builtin set -- "$1" "$2" "$3" "${@:5}"
  done
  builtin exec /bin/bash -o pipefail -c "$1"
  builtin printf 'cannot run the job on %s (its command is %s bytes: too long for one argument here?)' "$3" "${#1}" >"$2"
  builtin exit 255
}
# Runs one job (the fields of its J message) and reports how it ended, on stdout: the sender's
# fifo (see runner).
job() {
  id=$2 pf=$w/p.$3 jt=$w/js.$3 l=$4 g=$5 b=$6 d=$7 o=$8 e=$9 cap=${10} mf=${11} ld=${12} c=${13}
  shift 13
  # The slot's spools (empty), or new ones.
  so=${so:-$w/so.$id} se=${se:-$w/se.$id}
  local i=/dev/null p s m fast=
  [ "$l" = 0 ] || i=$w/i.$id
  # The fast path, for a job with no environment of its own, no stdin, no out or err file and
  # a command that fits one argument anywhere (32768 characters are at most 128 KiB): bash
  # makes its redirections in the child and execs, running no line of this script there,
  # where each line costs copy-on-write faults of this runner's pages (on 400 `true` jobs,
  # the jobs' processes took 28% less CPU). The runner goes to the job's directory itself,
  # again only when it changed or is gone; where it cannot, launch goes there and says why.
  if (($# == 0)) && [ "$l" = 0 ] && [ -z "$o$e" ] && [ "${#c}" -lt 32768 ]; then
    if [ "$b" != "$wb" ] || [ "$d" != "$wd" ] || ! [ . -ef "$PWD" ] || [ -z "$wok" ]; then
      wb=$b wd=$d wok=
      case $b in /*) ;; *) cd ;; esac && { [ -z "$b" ] || cd -- "$b"; } &&
        { [ -z "$d" ] || cd -- "$d"; } && wok=1
    fi
    fast=$wok
  fi
  if [ -n "$mf$ld" ]; then
    while ! [ -e "$w/c.$id" ] && ! room; do nap 0.2; done
  fi
  # (bakapara is stopped: the job waits, as it would in bakapara's own queue.)
  while [ -e "$w/paused" ] && ! [ -e "$w/c.$id" ]; do nap 0.05; done
  if [ -e "$w/abort" ]; then
    report stopped 143
    return
  fi
  if [ -e "$w/c.$id" ] && IFS= read -r m <"$w/c.$id"; then
    if [ "$m" = K ]; then report stopped 137; else report stopped 143; fi
    return
  fi
  # As the job ends, bash's job table says whether a signal ended it, which its status (128 +
  # N either way) does not: the CHLD trap writes the table (in place, ended by a line `.`).
  # Set before the job starts, which may end at once; only while it runs, as a trapped
  # signal cuts a read short.
  # Said before the job can run: a job that kills this runner at once (its parent) has
  # started, for bakapara, which then never runs it again as one that never started.
  short "S $id"
  trap '{ jobs -l; printf ".\n"; } 1<>"$jt"' CHLD
  set -m
  if [ -n "$fast" ]; then
    /bin/bash -o pipefail -c "$c" <"$i" >"$so" 2>"$se" 7>&- 8<&- 9<&- &
  else
    launch "$@" &
  fi
  p=$!
  set +m
  # Written over in place, at one length (truncating a file costs 0.1 ms on ext4).
  printf '%10s %10s %20s\n' "$p" "$g" "$id" 1<>"$pf"
  [ -e "$w/c.$id" ] && { IFS= read -r m <"$w/c.$id"; killer "${m:-T}" "$p" "$g" "$id" & }
  wait "$p"
  s=$?
  # (A killer's end, also one of a job before, cuts the wait short too: 128 + SIGCHLD.)
  while [ "$s" -gt 128 ] && kill -0 "$p"; do
    wait "$p"
    s=$?
  done
  trap - CHLD
  if [ -e "$w/x.$id" ]; then
    IFS= read -r -d '' m <"$w/x.$id"
    report error "$m"
  elif [ -e "$w/c.$id" ]; then
    while alive "$p"; do nap 0.05; done
    report stopped "$s"
  elif [ "$s" -gt 128 ] && signaled "$p" "$s" "$jt"; then
    report signaled $((s - 128))
  else
    report done "$s"
  fi
}
# Whether job $1, whose status was $2 (> 128), was killed by a signal, from bash's job table
# in file $3: its line says how the job ended, the name of the signal or, for an exit, "Exit
# $2" (in the shell's language, with the code in it).
signaled() {
  local n q r
  while read -r n q r; do
    [ "$n" = . ] && break
    [ "$q" = "$1" ] || continue
    case $r in *"$2"*) return 1 ;; *) return 0 ;; esac
  done <"$3"
  return 1
}
# One per slot: runs the slot's jobs one after another, as their J lines come on fifo s$1.
runner() {
  local m n r wb wd wok
  local -a dead
  # Its stdout is the sender's fifo, so that the frames of its jobs need no redirection (a
  # builtin's redirection costs nine system calls: it is undone after the command).
  exec 8<>"$w/s$1" >&7
  while :; do
    # Its fifo never ends (this runner holds it open to read and write): a runner whose main
    # loop is gone (killed) exits by itself. (A byte read as the time is up is kept in m.)
    m=
    IFS= read -r -t 2 -N 1 -u 8 m
    if [ -z "$m" ]; then
      kill -0 $$ 2>/dev/null || exit
      continue
    fi
    # A J message as it came from bakapara (its length first: two reads, not one a byte).
    case $m in
      $'\n') continue ;;
      J)
        IFS= read -r -N 8 -u 8 n
        IFS= read -r -N $((10#$n)) -u 8 r
        m=J${r%$'\n'} ;;
      *)
        IFS= read -r -u 8 r
        m=$m$r ;;
    esac
    [ -e "$w/halt" ] && exit
    if [ "${m:0:1}" = @ ]; then
      IFS= read -r m <"$w/j.${m#@}" || continue
      rm -f -- "$w/j.${m#@}"
    fi
    eval "set -- $m"
    job "$@"
  done
}
# The fence: when the main loop has heard nothing from bakapara for F seconds, it gets TERM
# (and quits). Every quarter second this writes a stamp file, and compares `heard` with the
# stamp of F seconds before (`-nt`, a file's age without a fork or a clock, as bash 4.2 has
# none finer than seconds): so it fires between F - 0.35 and F seconds of silence (the main
# loop marks `heard` at most every 0.1 s).
fence() {
  local k=0 n=$((F * 4 - 1)) o f
  while :; do
    nap 0.25
    kill -0 $$ 2>/dev/null || exit
    printf x 1<>"$w/t$((k % (n + 1)))"
    k=$((k + 1))
    [ "$k" -gt "$n" ] || continue
    o=$w/t$(((k - n - 1) % (n + 1)))
    [ "$w/heard" -nt "$o" ] && continue
    # (bakapara stopped by Ctrl-Z: silent, not gone; its end would close our stdin.)
    [ -e "$w/paused" ] && continue
    # (--pipe input coming in for longer than F: its file grows.)
    for f in "$w"/i.*; do [ "$f" -nt "$o" ] && continue 2; done
    kill -TERM $$
    exit
  done
}
# Into quit's gs: the groups of the jobs running (p.SLOT) and those that outlived their jobs
# (g.SLOT).
job_groups() {
  local f p
  gs=()
  for f in "$w"/p.*; do [ -e "$f" ] && read -r p _ <"$f" && [ "$p" != - ] && gs+=("$p"); done
  for f in "$w"/g.*; do
    [ -e "$f" ] || continue
    while read -r p; do [ -n "$p" ] && gs+=("$p"); done <"$f"
  done
}
# The end: no job starts any more, every job's group gets TERM, KILL after D seconds. At the
# end of the run ($1 = end: bakapara's Q), R goes too.
quit() {
  # (Run as a trap, quit may interrupt a `IFS= read`, whose IFS then still holds.)
  local p g n IFS=$' \t\n'
  local -a gs
  trap '' TERM HUP INT
  : >"$w/halt"
  job_groups
  for p in "${gs[@]}"; do kill -TERM -- -"$p" && kill -CONT -- -"$p"; done
  for ((n = D * 20; n > 0; n--)); do
    g=
    # (Read again each time: a runner may have started a job just before the halt.)
    job_groups
    for p in "${gs[@]}"; do alive "$p" && g=1 && break; done
    [ -z "$g" ] && break
    nap 0.05
  done
  job_groups
  for p in "${gs[@]}"; do kill -KILL -- -"$p"; done
  kill "${rp[@]}" "$sp" "$fp" $hp
  rm -rf -- "$w"
  if [ "$1" = end ] && [ -n "$R" ]; then
    case $R in /*) ;; *) cd || R= ;; esac
    [ -z "$R" ] || rm -rf -- "$R"
  fi
  exit 0
}
# Into nc: the CPUs this agent may run on, as nproc counts them, read from /proc
# (Cpus_allowed_list, like "0-3,8,10-11") without nproc's fork and exec; nproc where that is
# missing, or where OMP_NUM_THREADS or OMP_THREAD_LIMIT, which nproc obeys, are set.
cpus() {
  local k v r n=0
  if [ -z "$OMP_NUM_THREADS$OMP_THREAD_LIMIT" ] && [ -r /proc/self/status ]; then
    while read -r k v; do [ "$k" = Cpus_allowed_list: ] && break; done </proc/self/status
    case $k:$v in
      Cpus_allowed_list:[0-9]*)
        case $v in *[!0-9,-]* | *[,-] | *-*-* | *,,* | *-,* | *,-*) ;; *)
          for r in ${v//,/ }; do n=$((n + 10#${r#*-} - 10#${r%-*} + 1)); done ;;
        esac ;;
    esac
  fi
  nc=$n
  [ "$n" -gt 0 ] || nc=$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)
}
declare -a rp
# Killed politely (by a launcher's end, a watchdog), the agent stops its jobs as on EOF.
trap quit TERM HUP INT
# Job control on while the sender and the runners start: a background command started
# without it ignores SIGINT, and so would every job started from it.
set -m
sender </dev/null >&3 3>&- &
sp=$!
exec 3>&-
cpus
printf 'L C %s\n' "$nc" >&7
fence </dev/null &
fp=$!
while :; do
  # Untimed: the fence process above watches the time (bash's `read -t` costs a select and two
  # sigprocmasks per byte), and its TERM ends a read that a cut link left waiting. A byte heard
  # is marked by writing over `heard` (in place: no new file, no truncation), at most every
  # 0.1 s where bash tells the time finer than seconds (5.0+; the fence looks every 0.25 s).
  m=
  IFS= read -r -N 1 m || quit
  if [ -n "$EPOCHREALTIME" ]; then
    t=${EPOCHREALTIME/[.,]/}
    if ((10#$t - ht >= 100000)); then
      printf x 1<>"$w/heard"
      ht=$((10#$t))
    fi
  else
    printf x 1<>"$w/heard"
  fi
  # A J message says its length, so it comes in two reads; bash reads a line from a pipe a
  # byte at a time.
  case $m in
    $'\n') continue ;;
    J)
      n= r=
      IFS= read -r -N 8 n || quit
      case $n in *[!0-9]*) quit ;; esac
      # (In pieces of 64 KiB, each marked as heard: a long message may take longer than F.)
      n=$((10#$n)) r=
      while [ "$n" -gt 0 ]; do
        piece=
        IFS= read -r -N $((n < 65536 ? n : 65536)) piece || quit
        r+=$piece n=$((n - ${#piece}))
        [ "$n" = 0 ] || printf x 1<>"$w/heard"
      done
      printf -v n '%08d' "${#r}"
      # " ID SLOT LEN ...": three plain numbers, taken apart without an eval (which costs
      # as much as the rest of this loop; the slot's runner evals the line).
      a=${r# } id=${a%% *} a=${a#* } sl=${a%% *} a=${a#* } a=${a%% *}
      case $id in '' | *[!0-9]*) continue ;; esac
      case $sl$a in '' | *[!0-9]*) continue ;; esac
      [ -n "$sl" ] && [ -n "$a" ] || continue
      if [ "$a" != 0 ]; then
        # (In the background and waited for: the fence's TERM ends a `wait` at once, where a
        # foreground head left waiting by a cut link would hold the trap back.)
        head -c "$a" >"$w/i.$id" <&0 &
        hp=$!
        wait "$hp"
        hp=
        printf x 1<>"$w/heard"
      fi
      if [ -z "${rp[$sl]}" ]; then
        [ -p "$w/s$sl" ] || mkfifo -- "$w/s$sl"
        runner "$sl" </dev/null &
        rp[$sl]=$!
        # (Opened to write once, which waits until the new runner has it open. Later lines
        # open it to read and write, which never waits: a runner killed since loses them, and
        # the next H finds it gone.)
        : >"$w/s$sl"
      fi
      # A short line goes through the FIFO, whose buffer (64 KiB on Linux, 4 KiB at least)
      # holds it and the slot's other queued line without blocking this loop; a longer one
      # through a file. (Lines are ASCII: a length in characters is one in bytes.)
      if [ "${#r}" -lt 1500 ]; then
        printf 'J%s%s' "$n" "$r" 1<>"$w/s$sl"
      else
        printf 'J%s\n' "${r%$'\n'}" >"$w/j.$id"
        printf '@%s\n' "$id" 1<>"$w/s$sl"
      fi
      continue ;;
    *)
      IFS= read -r r || quit
      m=$m$r ;;
  esac
  # T ID SLOT, K ID SLOT, Q, H: plain words (split, never globbed).
  set -f
  set -- $m
  set +f
  case $1 in
    H)
      # A slot's runner killed (by its own job, which is its child, or the OOM killer) would
      # leave that slot's jobs without a result for ever: the agent stops as a lost host does,
      # and bakapara runs them elsewhere (a job that does it each time meets the host loss
      # limit). (Reaped runners only: bash reaps a dead child at once.)
      for sl in "${!rp[@]}"; do
        kill -0 "${rp[$sl]}" 2>/dev/null && continue
        # (No runner starts a job from now on: one started after the X would run unreported.)
        : >"$w/halt"
        printf 'L X slot %s died on %s (its runner was killed: by its job?)\n' "$sl" "$h" >&7
        # (The sender exits once it has passed it on, and quit would end it: wait for that. A
        # stdout that takes it in no more leaves the wait to the fence, which hears nothing
        # meanwhile and TERMs this loop, whose trap quits.)
        wait "$sp"
        quit
      done ;;
    T | K)
      printf '%s\n' "$1" >"$w/c.$2"
      if read -r p g j <"$w/p.$3" && [ "$j" = "$2" ]; then killer "$1" "$p" "$g" "$2" </dev/null & fi ;;
    A) : >"$w/abort" ;;
    P)
      : >"$w/paused"
      for f in "$w"/p.*; do [ -e "$f" ] && read -r p _ <"$f" && [ "$p" != - ] && kill -STOP -- -"$p"; done ;;
    U)
      rm -f -- "$w/paused"
      printf x 1<>"$w/heard"
      for f in "$w"/p.*; do [ -e "$f" ] && read -r p _ <"$f" && [ "$p" != - ] && kill -CONT -- -"$p"; done ;;
    Q) quit end ;;
  esac
done
