#!/usr/bin/env bash
# The Free Spoken Digit Dataset (one digit per recording; 5 training speakers, lucas tests):
# speech -> MFCC -> lang + one-digit grammar -> monophone GMM -> alignments -> an LSTM
# trained by kaldi-avg with parallel model averaging -> Kaldi final.mdl -> decoded words, and
# a check with vosk (real Kaldi code) at the end.
#
#   ./run.sh [--stage N] [--stop-stage N] [--nj N] [--corpus <fsdd-dir>]
#
# <fsdd-dir> holds recordings/{digit}_{speaker}_{index}.wav; default: $FSDD_DIR, else
# ../shared/corpora/fsdd next to the repository.
# Stages: 0 data dirs + dict, 1 MFCC + CMVN, 2 lang + G, 3 mono GMM, 4 alignment,
# 5 graph, 6 GMM decode + score, 7 speed perturbation + its alignments + hires MFCC,
# 8 LSTM training, 9 nnet3 decode + score, 10 vosk check (vosk decodes final.mdl with the test
# speaker's CMVN folded in; it must agree with our decode), 11 TDNN training (train_dnn.py),
# 12 TDNN decode + score, 13 chain TDNN-LSTM training (local/chain/run_tdnn_lstm.sh stages 10-14:
# chain lang, lattices of the transcripts from exp/mono, the chain tree, the xconfig,
# steps/kaldi_avg/chain/train.py), 14 its graph, decode + score and vosk check (stages 15-17).
# With KALDI_ROOT set to a built Kaldi, steps/ and utils/ are Kaldi's own (path.sh), except
# steps/kaldi_avg/; without it they are kaldi-avg's pip-only stand-ins. Logs: exp/*/log/.
set -euo pipefail

stage=0
stop_stage=14
nj=2
seed=0
corpus=${FSDD_DIR:-$(cd ../../.. && pwd)/../shared/corpora/fsdd}
num_epochs=6            # of the speed-perturbed data (3 copies of each utterance)
label_delay=10          # output-delay of the LSTM: it sees 10 frames (100 ms) past each label
samples_per_iter=1000   # 20-frame chunks per archive: archives of about 20k frames
tdnn_epochs=2           # the TDNN's epochs (each 8 passes over its archives, one frame of each eg)
tdnn_samples_per_iter=20000  # 8-frame egs per archive: archives of about 160k frames, 2 of them
tdnn_minibatch_size=512      # egs per minibatch (train_dnn.py's default)
chain_epochs=4          # the chain TDNN-LSTM's epochs (of the speed-perturbed data)
chain_frames_per_iter=50000  # its archives' input frames: about 6 archives of the perturbed data
chain_minibatch=128,64       # its chunks per minibatch (Kaldi's rule; smaller for the recipe test's subset)
speed_perturb=true      # train the LSTM on 0.9x/1.0x/1.1x copies (needs sox)
cmvn_opts="--norm-means=true --norm-vars=true"   # the LSTM's per-speaker CMVN
help_message="Usage: $0 [--stage N] [--stop-stage N] [--nj N] [--corpus <fsdd-dir>] [--num-epochs N] [--seed N] [--label-delay N] [--speed-perturb true|false] [--cmvn-opts '<apply-cmvn options>'] [--tdnn-epochs N] [--tdnn-samples-per-iter N] [--tdnn-minibatch-size N] [--chain-epochs N] [--chain-frames-per-iter N] [--chain-minibatch 128,64]"

. ./cmd.sh
. ./path.sh
. utils/parse_options.sh
# The LSTM's training data and alignments.
if $speed_perturb; then train_set=train_sp; ali_dir=exp/mono_ali_sp; else train_set=train; ali_dir=exp/mono_ali; fi

# Jobs split data by speaker, so a data dir cannot take more jobs than it has speakers
# (the test set has one).
decode_nj() { local n; n=$(wc -l < "$1/spk2utt"); echo $(( n < nj ? n : nj )); }
best_wer() { grep -H '%WER' "$1"/wer_* | sort -t' ' -k2,2n | head -n 1; }

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  local/prepare_data.sh "$corpus" data
  local/prepare_dict.sh data/local/dict data/train data/test
  for x in train test; do utils/validate_data_dir.sh --no-feats data/$x; done
fi

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  for x in train test; do
    steps/make_mfcc.sh --nj "$nj" --cmd "$train_cmd" --mfcc-config conf/mfcc.conf \
      data/$x exp/make_mfcc/$x mfcc
    steps/compute_cmvn_stats.sh data/$x exp/make_mfcc/$x mfcc
    utils/fix_data_dir.sh data/$x
  done
fi

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  utils/prepare_lang.sh data/local/dict "<unk>" data/local/lang data/lang
  # G: exactly one digit.
  python3 -m kaldi_avg.frontend.grammar --one-word data/lang data/lang_test
fi

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  steps/train_mono.sh --nj "$nj" --cmd "$train_cmd" data/train data/lang exp/mono
fi

if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  steps/align_si.sh --nj "$nj" --cmd "$train_cmd" data/train data/lang exp/mono exp/mono_ali
fi

if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then
  utils/mkgraph.sh data/lang_test exp/mono exp/mono/graph
fi

if [ $stage -le 6 ] && [ $stop_stage -ge 6 ]; then
  steps/decode.sh --nj "$(decode_nj data/test)" --cmd "$decode_cmd" \
    exp/mono/graph data/test exp/mono/decode_test
  best_wer exp/mono/decode_test
fi

if [ $stage -le 7 ] && [ $stop_stage -ge 7 ]; then
  # Neural-network data, as Kaldi's local/nnet3/run_ivector_common.sh: with only 5 training
  # speakers, 3-way speed perturbation (sox; 0.9x, 1.0x, 1.1x) is the cheapest way to see more
  # voices. The perturbed copies are aligned with the GMM on their own low-resolution features;
  # the LSTM sees 40-dim high-resolution MFCC.
  if $speed_perturb; then
    rm -rf data/train_sp
    utils/data/perturb_data_dir_speed_3way.sh data/train data/train_sp
    steps/make_mfcc.sh --nj "$nj" --cmd "$train_cmd" --mfcc-config conf/mfcc.conf \
      data/train_sp exp/make_mfcc/train_sp mfcc
    steps/compute_cmvn_stats.sh data/train_sp exp/make_mfcc/train_sp mfcc
    utils/fix_data_dir.sh data/train_sp
    steps/align_si.sh --nj "$nj" --cmd "$train_cmd" data/train_sp data/lang exp/mono exp/mono_ali_sp
  fi
  for x in $train_set test; do
    rm -rf data/${x}_hires; mkdir -p data/${x}_hires
    cp data/$x/{wav.scp,text,utt2spk,spk2utt} data/${x}_hires/
    [ -f data/$x/utt2uniq ] && cp data/$x/utt2uniq data/${x}_hires/
    steps/make_mfcc.sh --nj "$nj" --cmd "$train_cmd" --mfcc-config conf/mfcc_hires.conf \
      data/${x}_hires exp/make_mfcc/${x}_hires mfcc
    steps/compute_cmvn_stats.sh data/${x}_hires exp/make_mfcc/${x}_hires mfcc
    utils/fix_data_dir.sh data/${x}_hires
  done
fi

if [ $stage -le 8 ] && [ $stop_stage -ge 8 ]; then
  # For the unseen test speaker, speed perturbation together with per-speaker CMVN on means and
  # variances, a 10-frame label delay and a projected LSTM matter most (README: measurements).
  local/nnet3/make_xconfig.sh --cell-dim 128 --projection-dim 64 --label-delay "$label_delay" \
    $ali_dir data/${train_set}_hires exp/lstm
  # Two persistent MPI ranks train in parallel and average their models (kaldi-avg).
  steps/kaldi_avg/train_rnn.py --stage=-10 --cmd="$train_cmd" --use-gpu=false --mpi.num-ranks=2 \
    --feat.cmvn-opts="$cmvn_opts" \
    --trainer.srand="$seed" --trainer.num-epochs="$num_epochs" \
    --trainer.optimization.num-jobs-initial=2 --trainer.optimization.num-jobs-final=2 \
    --trainer.optimization.initial-effective-lrate=0.003 \
    --trainer.optimization.final-effective-lrate=0.0003 \
    --trainer.rnn.num-chunk-per-minibatch=64 --trainer.samples-per-iter="$samples_per_iter" \
    --egs.chunk-width=20 --egs.chunk-left-context=20 --egs.chunk-right-context=0 \
    --egs.chunk-left-context-initial=0 --egs.chunk-right-context-final=0 \
    --feat-dir=data/${train_set}_hires --ali-dir=$ali_dir --lang=data/lang --dir=exp/lstm
fi

if [ $stage -le 9 ] && [ $stop_stage -ge 9 ]; then
  steps/nnet3/decode.sh --nj "$(decode_nj data/test_hires)" --cmd "$decode_cmd" \
    --extra-left-context 20 --extra-right-context 0 \
    --extra-left-context-initial 0 --extra-right-context-final 0 --frames-per-chunk 20 \
    exp/mono/graph data/test_hires exp/lstm/decode_test
  best_wer exp/lstm/decode_test
fi

if [ $stage -le 10 ] && [ $stop_stage -ge 10 ]; then
  # The independent check by real Kaldi code: vosk decodes the test recordings with final.mdl,
  # into which the test speaker's CMVN is folded (vosk applies none), and must give the words of
  # our decode of the same network looped over whole utterances.
  local/vosk_check.sh --fold-cmvn true conf/mfcc_hires.conf exp/lstm exp/mono/graph data/test_hires \
    exp/lstm/decode_test_looped
fi
if [ $stage -le 11 ] && [ $stop_stage -ge 11 ]; then
  # A feed-forward TDNN on the same data, trained as Kaldi's local/nnet3/run_tdnn.sh trains one.
  # Each eg trains one output frame through the whole 21-frame context, so a frame costs a TDNN
  # several times what it costs the LSTM: 128 units keep the stage short on a 2-core machine.
  local/nnet3/make_xconfig.sh --network tdnn --tdnn-dim 128 $ali_dir data/${train_set}_hires exp/tdnn
  steps/kaldi_avg/train_dnn.py --stage=-10 --cmd="$train_cmd" --use-gpu=false --mpi.num-ranks=2 \
    --feat.cmvn-opts="$cmvn_opts" \
    --trainer.srand="$seed" --trainer.num-epochs="$tdnn_epochs" \
    --trainer.optimization.num-jobs-initial=2 --trainer.optimization.num-jobs-final=2 \
    --trainer.optimization.initial-effective-lrate=0.003 \
    --trainer.optimization.final-effective-lrate=0.0003 \
    --trainer.samples-per-iter="$tdnn_samples_per_iter" --trainer.optimization.minibatch-size="$tdnn_minibatch_size" \
    --egs.frames-per-eg=8 \
    --feat-dir=data/${train_set}_hires --ali-dir=$ali_dir --lang=data/lang --dir=exp/tdnn
fi

if [ $stage -le 12 ] && [ $stop_stage -ge 12 ]; then
  steps/nnet3/decode.sh --nj "$(decode_nj data/test_hires)" --cmd "$decode_cmd" \
    exp/mono/graph data/test_hires exp/tdnn/decode_test
  best_wer exp/tdnn/decode_test
fi

if [ $stage -le 13 ] && [ $stop_stage -ge 13 ]; then
  # A chain (LF-MMI) TDNN-LSTM as Kaldi's local/chain recipes make one: lattices of the training
  # transcripts, a tree for the chain topology (pip-only: monophone), LF-MMI with an xent branch.
  local/chain/run_tdnn_lstm.sh --stage 10 --stop-stage 14 --nj "$nj" --srand "$seed" \
    --train-set "$train_set" --num-epochs "$chain_epochs" --frames-per-iter "$chain_frames_per_iter" \
    --minibatch "$chain_minibatch" --cmvn-opts "$cmvn_opts"
fi

if [ $stage -le 14 ] && [ $stop_stage -ge 14 ]; then
  local/chain/run_tdnn_lstm.sh --stage 15 --stop-stage 17 --nj "$nj" --train-set "$train_set" \
    --cmvn-opts "$cmvn_opts"
fi
echo "$0: done"
