#!/usr/bin/env bash
# Kaldi's local job runner, as a bash script with the same command line and log format:
#   run.pl [options] [JOB=1:N] <log-file> <command> [<args>...]
# runs the command once per job, in parallel on this machine, with stdout and stderr in the
# log. Each occurrence of the job variable (any name, e.g. JOB) in the log name and in the
# command is replaced by the job number. Arguments without whitespace are passed as they are
# (so '|' and '>' work as in Kaldi recipes); others are quoted. The log starts with the
# command and ends with the '# Accounting: time=...' and '# Ended (code N) at ...' lines that
# Kaldi's log parsers read. Exit status 0 if every job succeeded, else 1, naming the log.
# Options: --max-jobs-run N (or -tc N): run at most N jobs at once (default: the number of
# CPUs); queue.pl options such as --mem 4G, --num-threads 2, --gpu 1, --config file are
# accepted and ignored.
set -uo pipefail

max_jobs=0
while [ $# -ge 2 ] && [ "${1#-}" != "$1" ]; do
  case "$1" in
    --max-jobs-run|-tc)
      max_jobs=$2
      [[ "$max_jobs" =~ ^[1-9][0-9]*$ ]] || { echo "run.pl: invalid $1 '$2'" >&2; exit 1; }
      shift 2 ;;
    -V) shift ;;
    *) shift 2 ;;   # a queue option and its value
  esac
done

job_var=""; first=1; last=1
if [[ $# -ge 1 && "$1" =~ ^([A-Za-z_][A-Za-z0-9_]*)=([0-9]+)(:([0-9]+))?$ ]]; then
  job_var=${BASH_REMATCH[1]}; first=${BASH_REMATCH[2]}; last=${BASH_REMATCH[4]:-$first}
  if (( first < 1 || first > last )); then
    echo "run.pl: invalid job range $1 (need 1 <= start <= end)" >&2; exit 1
  fi
  shift
fi
if [ $# -lt 2 ]; then
  echo "usage: run.pl [options] [JOB=1:N] <log-file> <command> [<args>...]" >&2
  exit 1
fi
log_spec=$1; shift
if [ -n "$job_var" ] && (( last > first )) && [[ "$log_spec" != *"$job_var"* ]]; then
  echo "run.pl: $(( last - first + 1 )) jobs would all write one log, $log_spec (put $job_var in its name)" >&2
  exit 1
fi

command_line=""
for arg in "$@"; do
  if [[ "$arg" =~ ^[^[:space:]]+$ ]]; then command_line+="$arg "
  elif [[ "$arg" == *\"* ]]; then command_line+="'$arg' "
  else command_line+="\"$arg\" "
  fi
done

if (( max_jobs == 0 )); then
  # processors online, as Kaldi's run.pl counts them (not nproc, which obeys OMP_NUM_THREADS)
  max_jobs=$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 4)
fi

run_job() {  # <job-id>: runs one job, writes its framed log, returns 0 or 1
  local id=$1 log=$log_spec cmd=$command_line
  if [ -n "$job_var" ]; then log=${log//$job_var/$id}; cmd=${cmd//$job_var/$id}; fi
  mkdir -p "$(dirname "$log")" || return 1
  local start; start=$(date +%s)
  { echo "# $cmd"
    echo "# Running on $(hostname)"
    echo "# Started at $(date)"
    echo "#"
  } > "$log" || { echo "run.pl: cannot write log file $log" >&2; return 1; }
  (bash -c "$cmd"; exit) >> "$log" 2>&1   # a subshell, so a "Killed" notice lands in the log
  local status=$? end; end=$(date +%s)
  { echo "# Accounting: time=$(( end - start )) threads=1"
    echo "# Ended (code $status) at $(date), elapsed time $(( end - start )) seconds"
  } >> "$log"
  return $(( status == 0 ? 0 : 1 ))
}

pids=()
for ((id = first; id <= last; id++)); do
  while (( $(jobs -rp | wc -l) >= max_jobs )); do wait -n; done
  run_job "$id" &
  pids+=($!)
done
failed=0
for pid in "${pids[@]}"; do
  wait "$pid" || failed=$(( failed + 1 ))
done

if (( failed > 0 )); then
  num_jobs=$(( last - first + 1 ))
  if (( num_jobs == 1 )); then
    log=$log_spec; [ -n "$job_var" ] && log=${log//$job_var/$first}
    echo "run.pl: job failed, log is in $log" >&2
  else
    echo "run.pl: $failed / $num_jobs failed, log is in ${log_spec//$job_var/*}" >&2
  fi
  exit 1
fi
exit 0
