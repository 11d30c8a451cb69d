#!/usr/bin/env bash
# Depth vs width at equal size on the real reference (issue 15): SmolLM2-135M-Instruct (134.5M
# parameters, 28.3M of them the tied embeddings) cut by depth only, pruned by width only (MLP neurons,
# Minitron's activation importance) and both, to about 100M and about 70M parameters; each evaluated
# before healing and after the same distillation from the uncut model as the headline recipe
# (24,576 tokens, KL + LM loss); every model on the shipped corpus's held-out loss and nine
# benchmarks, the same 30 seeded items each. `make width` runs it; resumable: a stage whose output
# exists is skipped (delete it to redo it).
#
#   size   depth only (layers kept, chosen by     width only (MLP neurons     both (block24's layers
#          ShortGPT's Block Influence)            kept of 1536, 30 layers)    + MLP neurons)
#   ~100M  20 layers: 99.1M                       864: 99.7M                  24 layers, 1200: 99.3M
#   ~70M   12 layers: 70.8M                       304: 70.6M                  20 layers (bi), 720: 70.9M
#
# Depth by Block Influence: at 22 layers it beat the contiguous block on held-out loss (4.63 vs 5.89,
# README "Result"); at 24, the block (layers 13-18) was best, so "both" at ~100M keeps block24's layers.
# The layer lists are those strategies' choices on the headline run's analysis (16 x 256 calibration
# tokens of the shipped corpus), written out so that this script needs no second layer analysis.
set -euo pipefail

OUT=${1:-width-out}
PY=${PY:-.venv/bin/python}
REF=${REF:-models/smollm2-135m-instruct}
DC="$PY -m downcycle"
mkdir -p "$OUT"

step() { # step NAME COMMAND...: run COMMAND unless OUT/NAME exists
    local name=$1; shift
    if [ -e "$OUT/$name" ]; then echo "== $name: done, skipped"; return; fi
    echo "== $name"; /usr/bin/env time -f "   $name: %e s" "$@"
}

step corpus $DC data --source "examples/corpus/*.jsonl.gz" --tokenizer "$REF" --tokens 300K --seq-len 256 --val 0.02 --seed 0 --out "$OUT/corpus"
step analysis $DC analyze "$REF" --width --data "examples/corpus/*.jsonl.gz" --samples 16 --seq-len 256 --keep 24 --strategy block --out "$OUT/analysis"
SCORES="$OUT/analysis/width/scores.json"

L100="0-2,5-11,18-24,27-29"            # bi: 10 layers of least Block Influence dropped
L70="0,1,8,10,20-24,27-29"             # bi: 18 dropped
B24="0-12,19-29"                       # block: layers 13-18 dropped

step depth100 $DC cut "$REF" "$OUT/depth100" --layers "$L100"
step width100 $DC prune "$REF" "$OUT/width100" --ffn 864 --scores "$SCORES"
step both100 $DC prune "$REF" "$OUT/both100" --ffn 1200 --layers "$B24" --scores "$SCORES"
step depth70 $DC cut "$REF" "$OUT/depth70" --layers "$L70"
step width70 $DC prune "$REF" "$OUT/width70" --ffn 304 --scores "$SCORES"
step both70 $DC prune "$REF" "$OUT/both70" --ffn 720 --layers "$L100" --scores "$SCORES"

MODELS=(depth100 width100 both100 depth70 width70 both70)
for m in "${MODELS[@]}"; do
    step "$m-distill" $DC train "$OUT/$m" --method distill --teacher "$REF" --data "$OUT/corpus" --distill-alpha 0.5 \
        --lr 1e-4 --warmup-steps 4 --micro-batch 4 --max-tokens 24576 --eval-max-seqs 8 --eval-every 8 --out "$OUT/$m-distill"
done

EVAL_MODELS=("$REF")
for m in "${MODELS[@]}"; do EVAL_MODELS+=("$OUT/$m" "$OUT/$m-distill"); done
step eval $DC eval "${EVAL_MODELS[@]}" --tasks loss,hellaswag,arc_easy,arc_challenge,piqa,winogrande,openbookqa,boolq,sciq,mmlu \
    --sample 30 --seed 1234 --shots 0 --batch-size 32 --data "$OUT/corpus" --window 256 --out "$OUT/eval"
step compare $DC compare "$OUT"/eval/*/results.json --reference "$(basename "$REF")" --out "$OUT/compare"
step size_quality.png $PY scripts/size_quality.py "$OUT"
echo "wrote $OUT: compare/compare.md, size_quality.png, size_quality.md"
