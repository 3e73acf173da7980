#!/usr/bin/env bash
# Kaldi's steps/make_mfcc.sh without Kaldi: MFCC features of a data dir with
# kaldi-native-fbank (python -m kaldi_avg.frontend.features compute-mfcc-feats).
# Run from a recipe directory (utils/ and steps/ below it, run.pl on PATH).
#
# Writes <mfcc-dir>/raw_mfcc_<name>.<job>.{ark,scp} (compressed), <data>/feats.scp,
# utt2num_frames, utt2dur, frame_shift and conf/mfcc.conf; logs in
# <log-dir>/make_mfcc_<name>.<job>.log.
set -euo pipefail

nj=4
cmd=run.pl
mfcc_config=conf/mfcc.conf
compress=true
write_utt2num_frames=true
write_utt2dur=true
help_message="Usage: $0 [options] <data-dir> [<log-dir> [<mfcc-dir>]]
e.g.: $0 data/train exp/make_mfcc/train mfcc
Note: <log-dir> defaults to <data-dir>/log, and <mfcc-dir> defaults to <data-dir>/data.
Options:
  --mfcc-config <config-file>   # config passed to compute-mfcc-feats (default $mfcc_config)
  --nj <nj>                     # number of parallel jobs (default $nj)
  --cmd <run.pl|queue.pl ...>   # how to run jobs (default $cmd)
  --compress <true|false>       # store compressed features (default $compress)
  --write-utt2num-frames <true|false>  # write <data-dir>/utt2num_frames (default $write_utt2num_frames)
  --write-utt2dur <true|false>  # write <data-dir>/utt2dur (default $write_utt2dur)"

echo "$0 $*"
. utils/parse_options.sh

if [ $# -lt 1 ] || [ $# -gt 3 ]; then
  printf '%s\n' "$help_message" >&2
  exit 1
fi
data=$1
logdir=${2:-$data/log}
mfccdir=${3:-$data/data}

[ -f "$data/wav.scp" ] || { echo "$0: no such file $data/wav.scp" >&2; exit 1; }
[ -f "$mfcc_config" ] || { echo "$0: no such file $mfcc_config" >&2; exit 1; }
if [ -f "$data/segments" ]; then
  echo "$0: $data/segments exists; segmented recordings are not supported by this stand-in" >&2
  exit 1
fi
rm -f "$data/feats.scp" "$data/cmvn.scp" "$data/utt2num_frames" "$data/utt2dur" "$data/frame_shift"
utils/validate_data_dir.sh --no-text --no-feats "$data"

name=$(basename "$data")
mkdir -p "$mfccdir" "$logdir"
mfccdir=$(cd "$mfccdir" && pwd)    # feats.scp must hold absolute paths

# No more jobs than utterances.
num_utts=$(wc -l < "$data/wav.scp")
(( nj > num_utts )) && nj=$num_utts
split_scps=()
for n in $(seq "$nj"); do split_scps+=("$logdir/wav_${name}.$n.scp"); done
python3 -m kaldi_avg.frontend.dataprep split-scp "$data/wav.scp" "${split_scps[@]}"

$cmd JOB=1:"$nj" "$logdir/make_mfcc_${name}.JOB.log" \
  python3 -m kaldi_avg.frontend.features compute-mfcc-feats --config="$mfcc_config" \
    --compress="$compress" --write-utt2dur=ark,t:"$logdir/utt2dur.JOB" \
    --write-num-frames=ark,t:"$logdir/utt2num_frames.JOB" \
    scp:"$logdir/wav_${name}.JOB.scp" \
    ark,scp:"$mfccdir/raw_mfcc_$name.JOB.ark,$mfccdir/raw_mfcc_$name.JOB.scp"

for n in $(seq "$nj"); do cat "$mfccdir/raw_mfcc_$name.$n.scp"; done > "$data/feats.scp"
if [ "$write_utt2num_frames" = true ]; then
  for n in $(seq "$nj"); do cat "$logdir/utt2num_frames.$n"; done > "$data/utt2num_frames"
fi
if [ "$write_utt2dur" = true ]; then
  for n in $(seq "$nj"); do cat "$logdir/utt2dur.$n"; done > "$data/utt2dur"
fi
python3 -m kaldi_avg.frontend.features frame-shift "$mfcc_config" > "$data/frame_shift"
mkdir -p "$data/conf"
cp "$mfcc_config" "$data/conf/mfcc.conf"
rm -f "$logdir"/wav_"${name}".*.scp "$logdir"/utt2num_frames.* "$logdir"/utt2dur.*

nf=$(wc -l < "$data/feats.scp")
nu=$(wc -l < "$data/utt2spk")
if [ "$nf" -ne "$nu" ]; then
  echo "$0: features were made for $nf of $nu utterances (see the 'skipped' counts in" \
       "$logdir/make_mfcc_${name}.*.log); run utils/fix_data_dir.sh $data" >&2
  if (( nf < nu - nu / 20 )); then
    echo "$0: fewer than 95% of the features were made; this is a serious error" >&2
    exit 1
  fi
fi
echo "$0: Succeeded creating MFCC features for $name"
