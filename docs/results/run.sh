#!/usr/bin/env bash
# Reproduces the published results in docs/results/: the no-press baseline and every press of the
# registry that can run on the embedded 260K-parameter stories model's tasks, at compression
# ratios 0.25/0.5/0.75/0.875, on the three sets that model can do (continuation fidelity, name
# recall on template stories, name recall on stories the model samples itself).
# Run from anywhere after `npm install`; about 60 minutes on one core of a loaded 2-core machine.
# Runs land in $1 (default results/stories260K; resumable: rerunning skips complete runs), the
# report in docs/results/. The README lists the presses that cannot run here and why.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${1:-results/stories260K}"
KV=node\ bin/kvpress.js

# Prefill presses (ratio = share of context entries removed; think: of key channels; duo_attention:
# of heads made streaming), four wrappers over the flagship and SnapKV, and presses the recall and
# continuation sets cannot run, kept in the list so that the report states why (decoding presses:
# nothing is generated; finch: no question). sim_layer_kv sets its own budget: one run at ratio 0.
PRESSES=expected_attention,adakv_expected_attention,adakv_expected_attention_e2,expected_attention_stats,critical_expected_attention,critical_adakv_expected_attention
PRESSES+=,random,knorm,streaming_llm,snapkv,tova,observed_attention,keydiff,lagkv,pyramidkv,qfilter,adakv_snapkv,critical_snapkv,critical_adakv_snapkv,block_keydiff
PRESSES+=,non_causal_attn,leverage_score,compactor,cur,cap,think,duo_attention,kvzip,kvzap,fast_kvzip,kv_compose,sim_layer_kv
PRESSES+=,chunkkv_snapkv,chunkkv_expected_attention,merging_expected_attention,lukv_expected_attention
PRESSES+=,finch,decoding_expected_attention,decoding_adakv_expected_attention_e2,prefill_decoding_expected_attention,compression_ratio_decoding_expected_attention,cam_knorm

npx tsc -p .
mkdir -p "$OUT"
# Everything calibrated is computed by the project's own commands on generated stories from a
# seed the evaluation sets do not use (they draw from seed 42).
if [ ! -s "$OUT/calibration.txt" ]; then
  node --input-type=module -e "
    import { loadModel } from './dist/src/model/load.js';
    import { storyBook } from './dist/src/eval/datasets/stories.js';
    const model = await loadModel();
    process.stdout.write(storyBook(model.tokenizer, 30000, 2024));
  " > "$OUT/calibration.txt"
fi
C=(--input "$OUT/calibration.txt")
# Query statistics (expected_attention_stats, qfilter).
[ -s "$OUT/stats.json" ] || $KV calibrate "${C[@]}" --output "$OUT/stats.json"
# DuoAttention head patterns; sink 4 and recent 32 instead of kvpress's 128/256, which would keep
# every entry of these 70–270-token contexts.
[ -s "$OUT/duo/full_attention_heads.tsv" ] || $KV calibrate "${C[@]}" --duo-patterns "$OUT/duo" --duo-sink 4 --duo-recent 32
# LU-KV budget curves (lukv_expected_attention).
[ -s "$OUT/lukv.json" ] || $KV calibrate "${C[@]}" --lukv-budgets --output "$OUT/lukv.json"
# KVzap's surrogate and Fast KVzip's gates, trained on the model's own KVzip scores. To fit the
# session's time the surrogate is the linear one (closed-form ridge; the library's default MLP
# took over 20 minutes of a loaded core) and the gates train on the first 12 samples for 100
# epochs (defaults: all 60, 200).
[ -s "$OUT/kvzap.safetensors" ] || $KV calibrate kvzap "${C[@]}" --type linear --output "$OUT/kvzap.safetensors"
[ -s "$OUT/fast-kvzip.safetensors" ] || $KV calibrate fast-kvzip "${C[@]}" --max-samples 12 --epochs 100 --output "$OUT/fast-kvzip.safetensors"

# One kernel thread: the model is far too small for threads to pay off.
COMMON=(--press "$PRESSES" --ratios 0.25,0.5,0.75,0.875 --threads 1 --output "$OUT"
  --press-option "stats=$OUT/stats.json" --press-option "patterns=$OUT/duo" --press-option "budgets=$OUT/lukv.json"
  --press-option "surrogate=$OUT/kvzap.safetensors" --press-option kvzap.modelType=linear --press-option "gates=$OUT/fast-kvzip.safetensors"
  --press-option sim_layer_kv.lazyThreshold=0.9 --press-option sim_layer_kv.nRecent=32)
# The recall sets first (the reading rests on them). Limits cut to fit the session: 100 items
# per recall set (200 by default), 25 continuation stories (100 by default).
$KV eval --dataset sampled_recall --limit 100 "${COMMON[@]}"
$KV eval --dataset name_recall --limit 100 "${COMMON[@]}"
$KV eval --dataset continuation --limit 25 "${COMMON[@]}"
$KV report "$OUT" --output docs/results
