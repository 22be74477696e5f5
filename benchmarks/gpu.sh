#!/usr/bin/env bash
# Every GPU benchmark in one call, sized for one device-tool run (< 10 min on an H100/H200), short table last.
#   local prep (once):  echo /.whl/ >> .git/info/exclude; bash ../shared/tools/gpu-wheels.sh
#                       python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#                         --implementation cp --platform manylinux2014_x86_64 -d .whl safetensors av
#   device run:         bash benchmarks/gpu.sh          (carry: .whl; results in $OUT, else ./runs/gpu)
# The SR benchmark images are copied into the tree by the prep step below when ../shared is not there.
set -uo pipefail
cd "$(dirname "$0")/.."
OUTDIR=${OUT:-runs/gpu}; mkdir -p "$OUTDIR"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PWD RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0
fi
export PYTHONPATH=${PYTHONPATH:-$PWD} PYTHONUNBUFFERED=1
PY=${PY:-python3}
DATA=${SR_DATA:-../shared/data/sr-benchmarks}; [ -d "$DATA" ] || DATA=data/sr-benchmarks
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUTDIR/gpu.txt"

run() {  # name, timeout seconds, command...
  local name=$1 t=$2; shift 2
  echo "=== $name"; local t0=$SECONDS
  timeout "$t" "$@" 2>&1 | tee "$OUTDIR/$name.log" | tail -25
  echo "=== $name rc=${PIPESTATUS[0]} ($((SECONDS - t0)) s)"
}
run zssr_throughput 150 $PY benchmarks/zssr_throughput.py --device cuda --faces 2048 --slots 1024 \
    --single-faces 2 --json "$OUTDIR/zssr_throughput.json"
run zssr_fast_throughput 150 $PY benchmarks/zssr_throughput.py --config zssr_fast.yaml --device cuda --faces 2048 \
    --slots 1024 --single-faces 0 --json "$OUTDIR/zssr_fast_throughput.json"
run srgan_step      90  $PY benchmarks/srgan_train.py step --batch 50 512 --steps 20
run enhance_gpu     90  $PY benchmarks/enhance_gpu.py --seconds 5 --json "$OUTDIR/enhance_gpu.json"
run zssr_quality    200 $PY benchmarks/zssr_quality.py --device cuda --data "$DATA" --json "$OUTDIR/zssr_quality.json"

echo; echo "=== summary (see $OUTDIR/*.log for every row)"
grep -hE "faces/s|frames/s|mean|Set5|Set14" "$OUTDIR"/*.log | tail -30
