#!/usr/bin/env bash
# A TDNN-LSTM chain (LF-MMI) model for FSDD, written like Kaldi's
# egs/librispeech/s5/local/chain/tuning/run_tdnn_lstm_1b.sh (with mini_librispeech's
# run_tdnn_1j.sh stages before it) and scaled down for 2 CPU cores and one-digit utterances:
#
#   local/chain/run_tdnn_lstm.sh [--stage 10] [--stop-stage 17] [--nj 2] [--num-epochs 4] ...
#
# Needs run.sh stages 0-7 (data/lang, data/lang_test, exp/mono, the speed-perturbed data/train_sp
# with its alignments exp/mono_ali_sp, and data/{train_sp,test}_hires).
# egs/synth_digits/s5/local/chain/run_tdnn_lstm.sh links here: the demo recipe runs it with
# --train-set train (no speed perturbation: data/train, exp/mono_ali, exp/chain/tree,
# exp/chain/tdnn_lstm1a), one LSTM layer, small dims, no CMVN and --vosk-fold-cmvn false.
# Dirs follow --gmm and --train-set (the suffix: train_sp -> _sp, train -> none) unless given:
# --ali-dir, --lat-dir, --tree-dir, --dir.
# Stages (Kaldi's numbers):
#   10 data/lang_chain: data/lang with steps/nnet3/chain/gen_topo.py's topology
#   11 lattices of the training transcripts: steps/align_fmllr_lats.sh from exp/mono on the
#      low-resolution features of data/train_sp (pip-only: no fMLLR, our GMMs are speaker-independent)
#   12 the tree: steps/nnet3/chain/build_tree.sh --frame-subsampling-factor 3 (pip-only: a monophone
#      tree, 2 pdfs per phone set, whatever --context-opts and the leaf count ask for)
#   13 the network's xconfig (40-dim hires MFCC in; TDNN layers spliced (-1,0,1) and (-3,0,3), two
#      fast-lstmp layers with delay -3 (--num-lstm-layers: 3 TDNN layers, an LSTM, then 2 TDNN
#      layers and an LSTM per further layer); a chain output without log-softmax and an xent output)
#   14 steps/kaldi_avg/chain/train.py, Kaldi's chain/train.py options, 2 MPI ranks
#   15 the graph: utils/mkgraph.sh --self-loop-scale 1.0 data/lang_test <tree-dir> <tree-dir>/graph
#      (the topology comes from the model, so data/lang_test needs no chain topo, as Kaldi's notes say)
#   16 decode data/test_hires (--acwt 1.0 --post-decode-acwt 10.0) and print the best WER
#   17 the vosk check (local/vosk_check.sh: vosk decodes final.mdl, with the test speaker's CMVN
#      folded in unless --vosk-fold-cmvn false; it must agree with our decode)
# With KALDI_ROOT set, steps/ and utils/ are Kaldi's (path.sh) except steps/kaldi_avg/.
#
# Chunks: FSDD utterances are 0.2-0.8 s (median 38 frames of data/train_sp_hires, 5th percentile
# 22), so Kaldi's 140,100,160 (1.4 s, for 10-15 s LibriSpeech utterances) would fit none of them:
# the egs splitter drops utterances shorter than the smallest width. 30,24,36 keeps chunks the
# size of the utterances (most take one chunk of 36 or two of 24/30; widths are multiples of 3,
# the frame-subsampling factor) at the cost of the 8% shortest (601 of 7,500, mostly 1.1x copies
# of short digits), and 20 frames of extra left context give the LSTMs the utterance's start.
# Measured (seed 0, 2026-12-07): 30,24,36 gave 1.6% WER; 30,18,36 (110 dropped) gave 5.2%.
# CMVN: per speaker, means and variances, as run.sh's LSTM (the test speaker is unseen and there
# are no i-vectors); vosk gets the test speaker's CMVN folded into the network.
set -euo pipefail

stage=10
stop_stage=17
nj=2
decode_nj=2
train_stage=-10
srand=0
gmm=mono
train_set=train_sp
test_set=test
num_epochs=4
num_leaves=500           # build_tree.sh's leaf count (pip-only: the monophone tree ignores it)
chunk_width=30,24,36
chunk_left_context=20
chunk_right_context=0
label_delay=5
lda_delay=0              # delay=N on the LDA layer: none in Kaldi's chain recipes, whose TDNN layers give the
                         # context the label delay takes; a shallower network needs it (xconfig_to_configs.py's check)
xent_regularize=0.1
tdnn_dim=256
num_lstm_layers=2
cell_dim=256
projection_dim=64
frames_per_iter=50000    # input frames per archive: about 6 archives per epoch of data/train_sp
minibatch=128,64
initial_lrate=0.002
final_lrate=0.0002
cmvn_opts="--norm-means=true --norm-vars=true"
vosk_fold_cmvn=true      # FSDD's test set has one speaker, whose CMVN is folded into vosk's network (false: no CMVN)
affix=1a
ali_dir=                 # default exp/<gmm>_ali<suffix>
lat_dir=                 # default exp/chain/<gmm>_<train-set>_lats
tree_dir=                # default exp/chain/tree<suffix>
dir=                     # default exp/chain/tdnn_lstm<affix><suffix>
help_message="Usage: $0 [--stage N] [--stop-stage N] [--nj N] [--decode-nj N] [--train-stage N] [--srand N] [--num-epochs N] [--chunk-width 30,24,36] [--chunk-left-context 20] [--xent-regularize 0.1] [--label-delay N] [--lda-delay N] [--tdnn-dim N] [--num-lstm-layers N] [--cell-dim N] [--projection-dim N] [--frames-per-iter N] [--minibatch 128,64] [--initial-lrate X] [--final-lrate X] [--cmvn-opts '...'] [--vosk-fold-cmvn true|false] [--gmm mono] [--train-set train_sp] [--test-set test] [--affix 1a] [--ali-dir <dir>] [--lat-dir <dir>] [--tree-dir <dir>] [--dir <dir>]"

echo "$0 $*"
. ./cmd.sh
. ./path.sh
. utils/parse_options.sh
if [ $# -ne 0 ]; then echo "$help_message" >&2; exit 1; fi

gmm_dir=exp/$gmm
sfx=${train_set#train}                         # _sp for train_sp, none for train
: "${ali_dir:=exp/${gmm}_ali$sfx}"             # exp/mono_ali_sp (FSDD run.sh stage 7)
: "${tree_dir:=exp/chain/tree$sfx}"
lang=data/lang_chain
: "${lat_dir:=exp/chain/${gmm}_${train_set}_lats}"
: "${dir:=exp/chain/tdnn_lstm${affix}$sfx}"
train_data_dir=data/${train_set}_hires
lores_train_data_dir=data/${train_set}
frames_per_chunk_primary=${chunk_width%%,*}
run_stage() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }
best_wer() { grep -H '%WER' "$1"/wer_* | sort -t' ' -k2,2n | head -n 1; }

for f in $gmm_dir/final.mdl $ali_dir/ali.1.gz $train_data_dir/feats.scp $lores_train_data_dir/feats.scp \
    data/lang/L.fst data/lang_test/G.fst; do
  [ -f "$f" ] || { echo "$0: expected file $f to exist (run.sh stages 0-7)" >&2; exit 1; }
done

if run_stage 10; then
  echo "$0: creating lang directory $lang with chain-type topology"
  # One state per phone in the topology (really two: the first is visited once, the second
  # repeats zero or more times).
  if [ -d $lang ]; then
    if [ $lang/L.fst -nt data/lang/L.fst ]; then
      echo "$0: $lang already exists, not overwriting it; continuing"
    else
      echo "$0: $lang already exists and seems to be older than data/lang..."
      echo " ... not sure what to do.  Exiting."
      exit 1
    fi
  else
    cp -r data/lang $lang
    silphonelist=$(cat $lang/phones/silence.csl)
    nonsilphonelist=$(cat $lang/phones/nonsilence.csl)
    steps/nnet3/chain/gen_topo.py $nonsilphonelist $silphonelist > $lang/topo
  fi
fi

if run_stage 11; then
  # The alignments as lattices (gives the chain training more freedom), with as many jobs as the
  # alignments.
  steps/align_fmllr_lats.sh --nj "$nj" --cmd "$train_cmd" $lores_train_data_dir data/lang $gmm_dir $lat_dir
  rm -f $lat_dir/fsts.*.gz  # save space
fi

if run_stage 12; then
  # A tree for the new topology from the speed-perturbed data's alignments (run.sh stage 7).
  if [ -f $tree_dir/final.mdl ]; then
    echo "$0: $tree_dir/final.mdl already exists, refusing to overwrite it."
    exit 1
  fi
  steps/nnet3/chain/build_tree.sh --frame-subsampling-factor 3 \
    --context-opts "--context-width=2 --central-position=1" \
    --cmd "$train_cmd" $num_leaves $lores_train_data_dir $lang $ali_dir $tree_dir
fi

if run_stage 13; then
  echo "$0: creating neural net configs using the xconfig parser"
  num_targets=$(python3 -c "import sys; from kaldi_avg.kaldi.tree import read_tree_num_pdfs; print(read_tree_num_pdfs(sys.argv[1]))" $tree_dir/tree)
  learning_rate_factor=$(echo "print (0.5/$xent_regularize)" | python3)
  feat_dim=$(python3 -c "import sys; from kaldi_avg.kaldi.tables import MatrixTable; t = MatrixTable(sys.argv[1]); print(t.shape(next(iter(t)))[1])" $train_data_dir/feats.scp)

  opts="l2-regularize=0.002"
  lstm_opts="l2-regularize=0.0005 decay-time=40"
  output_opts="l2-regularize=0.0005 output-delay=$label_delay max-change=1.5 dim=$num_targets"

  lstm_layer() { echo "  fast-lstmp-layer name=lstm$1 cell-dim=$cell_dim recurrent-projection-dim=$projection_dim non-recurrent-projection-dim=$projection_dim delay=-3 $lstm_opts"; }
  lda_opts=""; [ "$lda_delay" -eq 0 ] || lda_opts=" delay=$lda_delay"
  mkdir -p $dir/configs
  {
    cat <<EOF
  input dim=$feat_dim name=input

  # the first splicing is moved before the lda layer, so no splicing here
  fixed-affine-layer name=lda${lda_opts} input=Append(-1,0,1) affine-transform-file=$dir/configs/lda.mat

  relu-batchnorm-layer name=tdnn1 $opts dim=$tdnn_dim
  relu-batchnorm-layer name=tdnn2 $opts input=Append(-1,0,1) dim=$tdnn_dim
  relu-batchnorm-layer name=tdnn3 $opts input=Append(-1,0,1) dim=$tdnn_dim
EOF
    lstm_layer 1
    # each further LSTM layer: two TDNN layers at the subsampled rate, then the LSTM
    for ((l = 2; l <= num_lstm_layers; l++)); do
      echo "  relu-batchnorm-layer name=tdnn$((2 * l)) $opts input=Append(-3,0,3) dim=$tdnn_dim"
      echo "  relu-batchnorm-layer name=tdnn$((2 * l + 1)) $opts input=Append(-3,0,3) dim=$tdnn_dim"
      lstm_layer $l
    done
    cat <<EOF

  output-layer name=output input=lstm$num_lstm_layers include-log-softmax=false $output_opts

  output-layer name=output-xent input=lstm$num_lstm_layers learning-rate-factor=$learning_rate_factor $output_opts
EOF
  } > $dir/configs/network.xconfig
  # Kaldi's recipes run steps/nnet3/xconfig_to_configs.py here; train.py expands
  # configs/network.xconfig the same way itself (kaldi_avg/train/network.py).
  echo "$0: wrote $dir/configs/network.xconfig ($feat_dim-dim input, $num_targets pdfs)"
fi

if run_stage 14; then
  steps/kaldi_avg/chain/train.py --stage $train_stage \
    --cmd "$train_cmd" \
    --feat.cmvn-opts "$cmvn_opts" \
    --chain.xent-regularize $xent_regularize \
    --chain.leaky-hmm-coefficient 0.1 \
    --chain.l2-regularize 0.0 \
    --chain.apply-deriv-weights false \
    --chain.lm-opts="--num-extra-lm-states=2000" \
    --trainer.srand $srand \
    --trainer.num-chunk-per-minibatch $minibatch \
    --trainer.frames-per-iter $frames_per_iter \
    --trainer.max-param-change 2.0 \
    --trainer.num-epochs $num_epochs \
    --trainer.optimization.num-jobs-initial 2 \
    --trainer.optimization.num-jobs-final 2 \
    --trainer.optimization.initial-effective-lrate $initial_lrate \
    --trainer.optimization.final-effective-lrate $final_lrate \
    --trainer.optimization.momentum 0.0 \
    --trainer.deriv-truncate-margin 8 \
    --egs.opts "--frames-overlap-per-eg 0" \
    --egs.chunk-width $chunk_width \
    --egs.chunk-left-context $chunk_left_context \
    --egs.chunk-right-context $chunk_right_context \
    --egs.chunk-left-context-initial 0 \
    --egs.chunk-right-context-final 0 \
    --mpi.num-ranks 2 \
    --use-gpu false \
    --feat-dir $train_data_dir \
    --tree-dir $tree_dir \
    --lat-dir $lat_dir \
    --dir $dir
fi

graph_dir=$tree_dir/graph
if run_stage 15; then
  # Note: it might appear that this lang directory is mismatched, and it is as far as the 'topo'
  # is concerned, but mkgraph.sh reads the topology from the model, not from the lang dir.
  utils/mkgraph.sh --self-loop-scale 1.0 data/lang_test $tree_dir $graph_dir
fi

if run_stage 16; then
  nspk=$(wc -l < data/${test_set}_hires/spk2utt)
  steps/nnet3/decode.sh --acwt 1.0 --post-decode-acwt 10.0 \
    --nj $(( nspk < decode_nj ? nspk : decode_nj )) --cmd "$decode_cmd" \
    --extra-left-context $chunk_left_context \
    --extra-right-context $chunk_right_context \
    --extra-left-context-initial 0 \
    --extra-right-context-final 0 \
    --frames-per-chunk "$frames_per_chunk_primary" \
    $graph_dir data/${test_set}_hires $dir/decode_${test_set}
  best_wer $dir/decode_${test_set}
fi

if run_stage 17; then
  local/vosk_check.sh --fold-cmvn "$vosk_fold_cmvn" conf/mfcc_hires.conf $dir $graph_dir data/${test_set}_hires \
    $dir/decode_${test_set}_looped
fi
echo "$0: done"
