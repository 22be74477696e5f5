#!/usr/bin/env bash
# SRGAN-paper (configs/srgan.yaml) vs SRGAN-distill (configs/srgan_distill.yaml), trained on the SAME faces, in the
# ground-truth table next to bicubic and ZSSR: carphone (pristine) faces and the faces of the two head-pose clips
# of ../shared/data/footage. Results: RUN/eval/index.html, RUN/eval/metrics.json (docs/benchmarks.md).
#   CPU budget (2 cores, ~25 min):  bash benchmarks/srgan_paper_vs_distill.sh cpu  [RUN]
#   full schedule (GPU):            bash benchmarks/srgan_paper_vs_distill.sh gpu  [RUN]
# ZSSR runs on every face here (select.generator_faces=true) because the distill option needs the G faces' own
# ZSSR outputs; the paper run never reads them (plan_data drops them: `lr_with_pseudo_pair` = 0 in its
# train_meta.json). Both runs share one faces.parquet, hence the same D:G roles by track.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-cpu}
RUN=${2:-runs/paper_vs_distill_$MODE}
SURVSR=${SURVSR:-.venv/bin/survsr}
[ -x "$SURVSR" ] || SURVSR="python3 -m survsr.cli"
export RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0
FOOT=${FOOTAGE:-../shared/data/footage}
[ -d "$FOOT" ] || FOOT=/work/shared/data/footage
PY=${PY:-.venv/bin/python}; [ -x "$PY" ] || PY=python3
CARPHONE=$($PY -c 'from survsr.data import carphone_paths; print(carphone_paths()["pristine"])')
INPUTS=("$CARPHONE" "$FOOT/head-pose-face-detection-female.gif" "$FOOT/head-pose-face-detection-male.gif")
if [ "$MODE" = cpu ]; then
  ZSSR_CFG=zssr_demo.yaml; PAPER=srgan_paper_demo.yaml; DISTILL=srgan_demo.yaml; EVAL=evaluate_demo.yaml
  # The generator's set here is one short track (~15 faces): batch 5. Both runs get 60 G updates: distill 60
  # steps of D+G; paper 40 epochs in 1+1 blocks = 20 G epochs x 3 steps (and 20 D epochs x 13 steps).
  PAPER_SET=("train.batch_size=5" "train.epochs=40"); DISTILL_SET=("train.batch_size=5" "train.max_steps=60")
  EVAL_SET=("zssr.config=zssr_demo.yaml")
else
  ZSSR_CFG=zssr.yaml; PAPER=srgan.yaml; DISTILL=srgan_distill.yaml; EVAL=evaluate.yaml
  # no ImageNet VGG-19 offline: the same explicit, recorded random-init fallback for both runs
  # Everything else is the full schedule (2,000 epochs, 16 blocks, VGG54). The paper's batch of 50 needs >= 50
  # faces in G's set; on these three clips G's set is one track of ~15 faces, hence BATCH (default 15).
  B=${BATCH:-15}
  PAPER_SET=("mediator.allow_fallback=true" "train.batch_size=$B")
  DISTILL_SET=("mediator.allow_fallback=true" "train.batch_size=$B"); EVAL_SET=()
fi
t0=$SECONDS
$SURVSR ingest "${INPUTS[@]}" --out "$RUN/ingest" select.best_k=120
$SURVSR zssr --faces "$RUN/ingest" --out "$RUN/zssr" --config "$ZSSR_CFG" select.generator_faces=true
echo "ingest+zssr: $((SECONDS - t0)) s"; t1=$SECONDS
$SURVSR train --faces "$RUN/ingest" --zssr "$RUN/zssr" --out "$RUN/train_paper" --config "$PAPER" ${PAPER_SET[@]+"${PAPER_SET[@]}"}
echo "train paper: $((SECONDS - t1)) s"; t1=$SECONDS
$SURVSR train --faces "$RUN/ingest" --zssr "$RUN/zssr" --out "$RUN/train_distill" --config "$DISTILL" ${DISTILL_SET[@]+"${DISTILL_SET[@]}"}
echo "train distill: $((SECONDS - t1)) s"; t1=$SECONDS
$SURVSR evaluate --faces "$RUN/ingest" --zssr "$RUN/zssr" --out "$RUN/eval" --config "$EVAL" \
  --generator "paper=$RUN/train_paper/generator.safetensors" \
  --generator "distill=$RUN/train_distill/generator.safetensors" \
  ground_truth.split=all ground_truth.astronaut=false real_footage.max_faces=2 ${EVAL_SET[@]+"${EVAL_SET[@]}"}
echo "evaluate: $((SECONDS - t1)) s; total $((SECONDS - t0)) s"
