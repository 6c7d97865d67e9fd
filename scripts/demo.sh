#!/usr/bin/env bash
# The Quickstart, end to end on the bundled sample: a local Elasticsearch node, ingest, search, retrieve, train,
# predict with explanations. Leaves the node running for Kibana or more searches (`ralm-es es stop --name demo`).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-$HOME/.cache/ralm-es/venv}"
ralm() { "$VENV/bin/ralm-es" "$@"; }
step() { printf '\n== %s\n' "$*"; }

step "local Elasticsearch"
url=$(ralm es start --name demo --port auto)
export RALM_ES_URL="$url"
ralm es status --name demo

step "ingest the sample corpus (BM25 + 384-dim vectors)"
ralm ingest corpora/sample_corpus.jsonl --index demo-passages

step "hybrid search"
ralm search "which hormone lowers blood sugar" --index demo-passages -k 3

step "retrieve 4 passages for every NER sentence into the cache training reads"
mkdir -p runs/demo
ralm retrieve corpora/sample_ner.txt --index demo-passages -k 4 --exclude doc+content --out runs/demo/ner.cache.jsonl

step "train (attention fusion over the retrieved passages)"
ralm train --config configs/demo_ner.yaml

step "predict with explanations"
awk -v RS= -v ORS='\n\n' 'NR <= 3' corpora/sample_ner.txt > runs/demo/ner-input.txt
ralm retrieve runs/demo/ner-input.txt --index demo-passages -k 4 --exclude doc+content --quiet \
    --out runs/demo/ner-input.cache.jsonl
ralm predict --model runs/demo/ner-attention runs/demo/ner-input.txt --cache runs/demo/ner-input.cache.jsonl --explain

printf '\nDone. The node still runs at %s (stop it with: ralm-es es stop --name demo).\n' "$url"
