# bakapara's remote job wrapper: runs one job on an SSH host and reports how it ended.
# Needs nothing but bash (>= 4.3), and coreutils' head, wc and mktemp for --pipe. Arguments:
# NONCE GRACE_MS BASE CD OUT ERR LEN MEMFREE LOAD CMD [NAME=VALUE]...
#
# The job runs as `bash -o pipefail -c CMD` in its own process group (job control, `set -m`)
# with stdin from /dev/null, or with --pipe (LEN > 0) from the block: the first LEN bytes of the
# wrapper's stdin, kept in a temp file (unlinked once the job has it open). MEMFREE (bytes) and
# LOAD (the load average × 100), when not empty, hold the job back until this host has that
# much memory available (MemAvailable) and a 1-minute load average below LOAD; a `T`, `K` or
# EOF while it waits stops it there. The wrapper's stdin is the SSH channel: a line `T` asks for TERM
# (KILL after GRACE_MS), `K` for KILL at once, and EOF (bakapara or the connection is gone) acts
# as `T`, so a job never outlives its run. The last thing written to stderr is a report,
# NUL NONCE done|stopped STATUS, or NUL NONCE error MESSAGE; bakapara strips it. Just before
# it, stdout gets an end line, NUL NONCE end, stripped too. The wrapper then waits for
# bakapara's `A` (any line, or EOF): the channel stays open until bakapara has read all of
# stdout and stderr, which OpenSSH's multiplexing may otherwise cut at the close.
n=$1 g=$2 b=$3 d=$4 o=$5 e=$6 l=$7 mf=$8 ld=$9 c=${10}
shift 10
tmp=
t() {
  [ -z "$tmp" ] || rm -f -- "$tmp"
  printf '\0%s end\n' "$n"
  printf '\0%s %s\n' "$n" "$*" >&2
  IFS= read -r -t 30 _
  exit 0
}
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
# The block comes first on the channel, before any control line. Fewer bytes than LEN: bakapara
# closed the channel early, to stop the job.
exec 6</dev/null
case $l in 0 | '') ;; *)
  tmp=$(mktemp 2>/dev/null) || { head -c "$l" >/dev/null; t error "cannot create a temp file for the job's stdin on $(hostname 2>/dev/null)"; }
  head -c "$l" >"$tmp" 2>/dev/null || t error "cannot store the job's stdin in $tmp on $(hostname 2>/dev/null)"
  [ "$(wc -c <"$tmp")" = "$l" ] || t stopped 143
  exec 6<"$tmp"
  rm -f -- "$tmp"
  tmp= ;;
esac
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
if [ -n "$mf$ld" ]; then
  while ! room; do
    IFS= read -r -t 0.2 m
    r=$?
    if [ "$r" = 0 ] && [ "$m" = K ]; then t stopped 137; elif [ "$r" -le 128 ]; then t stopped 143; fi
  done
fi
for v in "$@"; do
  case $v in
    # An exported function (--env NAME of `export -f NAME`), in bash's own environment form.
    BASH_FUNC_*%%=*)
      fn_=${v%%=*} fn_=${fn_#BASH_FUNC_} fn_=${fn_%\%\%}
      { eval "$fn_ ${v#*=}" && export -f "$fn_"; } 2>/dev/null || t error "bad function $fn_" ;;
    *) export "$v" 2>/dev/null || t error "bad environment variable ${v%%=*}" ;;
  esac
done
# A relative base is relative to the login directory, $HOME (where sshd starts us, usually).
if [ -n "$b" ]; then case $b in /*) ;; *) cd 2>/dev/null ;; esac; cd -- "$b" 2>/dev/null || t error "cannot cd to $b on $(hostname 2>/dev/null)"; fi
if [ -n "$d" ]; then cd -- "$d" 2>/dev/null || t error "cannot cd to $d on $(hostname 2>/dev/null)"; fi
for f in "$o" "$e"; do
  if [ -n "$f" ] && [ "${f%/*}" != "$f" ] && [ -n "${f%/*}" ]; then
    mkdir -p -- "${f%/*}" 2>/dev/null || t error "cannot create directory ${f%/*}"
  fi
done
if [ -n "$o" ]; then { exec 3>"$o"; } 2>/dev/null || t error "cannot write $o"; else exec 3>&1; fi
if [ -n "$e" ]; then { exec 4>"$e"; } 2>/dev/null || t error "cannot write $e"; else exec 4>&2; fi
# The watcher tells the wrapper (USR1 for TERM, USR2 for KILL) when bakapara asks to stop, then
# stops the job's group:
# TERM, and KILL after the grace period (at once on `K`), until no process of it is left.
stopped=
trap 'stopped=T' USR1
trap 'stopped=K' USR2
# Job control prints notices ("[1] Done ...") on the wrapper's stderr, which is the channel:
# keep that stderr aside until the report.
exec 5>&2 2>/dev/null
set -m
bash -o pipefail -c "$c" <&6 >&3 2>&4 3>&- 4>&- 5>&- 6<&- &
p=$!
exec 3>&- 4>&- 6<&-
{
  exec 5>&-
  IFS= read -r m
  if [ "$m" = K ]; then
    kill -USR2 $$ 2>/dev/null
    left=0
  else
    kill -USR1 $$ 2>/dev/null
    kill -TERM -- -"$p" 2>/dev/null
    left=$((g / 50))
  fi
  while alive "$p"; do
    if [ "$left" -le 0 ]; then kill -KILL -- -"$p" 2>/dev/null; left=20; fi
    left=$((left - 1))
    IFS= read -r -t 0.05 m
    r=$?
    if [ "$r" = 0 ] && [ "$m" = K ]; then left=0; elif [ "$r" -ne 0 ] && [ "$r" -le 128 ]; then sleep 0.05; fi
  done
} &
w=$!
set +m
# `wait PID` also returns the status of a job that ended before it was called. A USR1 or USR2
# cuts it short (status > 128) while the job still runs: wait again.
while :; do
  wait "$p" 2>/dev/null
  s=$?
  kill -0 "$p" 2>/dev/null || break
done
exec 2>&5 5>&-
if [ -n "$stopped" ]; then
  # The last wait may have been cut short (138, 140) just as the job ended: its status is
  # then still there, or else lost with the cut wait; it died of the signal that was sent.
  wait "$p" 2>/dev/null
  r=$?
  if [ "$r" -ge 0 ] && [ "$r" -le 255 ] && [ "$r" != 127 ]; then
    s=$r
  elif [ "$s" = 138 ] || [ "$s" = 140 ]; then
    if [ "$stopped" = K ]; then s=137; else s=143; fi
  fi
  wait "$w" 2>/dev/null
  t stopped "$s"
fi
# The watcher must be gone before the report, so that it cannot read bakapara's `A`.
kill -- -"$w" 2>/dev/null
wait "$w" 2>/dev/null
t done "$s"
