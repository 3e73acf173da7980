#!/usr/bin/env bash
# A stand-in for Kaldi's queue.pl in tests: takes queue.pl's options (--mem 2G, --gpu 1,
# --max-jobs-run N, ...) and runs the array job here instead of through qsub, with utils/run.pl.
here=$(cd "$(dirname "$0")/../../.." && pwd)
echo "queue.pl (test stand-in): $*" >&2
exec "$here/utils/run.pl" "$@"
