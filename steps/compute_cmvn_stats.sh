#!/usr/bin/env bash
# Kaldi's steps/compute_cmvn_stats.sh without Kaldi: per-speaker CMVN statistics
# (python -m kaldi_avg.frontend.features compute-cmvn-stats --spk2utt=...).
# Writes <cmvn-dir>/cmvn_<name>.{ark,scp} and <data>/cmvn.scp; log in <log-dir>/cmvn_<name>.log.
set -euo pipefail

if [ $# -lt 1 ] || [ $# -gt 3 ] || [ "${1#-}" != "$1" ]; then
  echo "Usage: $0 <data-dir> [<log-dir> [<cmvn-dir>]]" >&2
  echo "e.g.: $0 data/train exp/make_mfcc/train mfcc" >&2
  echo "Note: <log-dir> defaults to <data-dir>/log, and <cmvn-dir> defaults to <data-dir>/data." >&2
  echo "(Kaldi's --fake and --two-channel options are not supported.)" >&2
  exit 1
fi
data=$1
logdir=${2:-$data/log}
cmvndir=${3:-$data/data}
name=$(basename "$data")

[ -f "$data/feats.scp" ] || { echo "$0: no such file $data/feats.scp" >&2; exit 1; }
[ -f "$data/spk2utt" ] || { echo "$0: no such file $data/spk2utt" >&2; exit 1; }
mkdir -p "$cmvndir" "$logdir"
cmvndir=$(cd "$cmvndir" && pwd)

if ! python3 -m kaldi_avg.frontend.features compute-cmvn-stats --spk2utt=ark:"$data/spk2utt" \
     scp:"$data/feats.scp" ark,scp:"$cmvndir/cmvn_$name.ark,$cmvndir/cmvn_$name.scp" \
     2> "$logdir/cmvn_$name.log"; then
  echo "$0: error computing CMVN stats, see $logdir/cmvn_$name.log" >&2
  exit 1
fi
cp "$cmvndir/cmvn_$name.scp" "$data/cmvn.scp"
nc=$(wc -l < "$data/cmvn.scp")
ns=$(wc -l < "$data/spk2utt")
if [ "$nc" -ne "$ns" ]; then
  echo "$0: warning: only $nc of $ns speakers got CMVN stats (see $logdir/cmvn_$name.log)" >&2
fi
echo "$0: Succeeded creating CMVN stats for $name"
