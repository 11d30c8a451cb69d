#!/usr/bin/env bash
# Pretrain the shipped reference model (examples/reference/) with downcycle's own trainer.
#
#   bash scripts/pretrain_reference.sh [WORK_DIR]      # default WORK_DIR: ./reference-work
#
# Three steps, each an ordinary downcycle command (resumable: re-running the script after an
# interruption continues training from its last checkpoint):
#   1. pack the shipped corpus (examples/corpus/) with the shipped tokenizer into 256-token sequences;
#   2. initialise a 12-layer Llama (hidden 192, GQA 6/2 heads, untied LM head, 7.9M parameters) at random;
#   3. train it from scratch: AdamW, lr 3e-3, 100 warmup steps, cosine, weight decay 0.1,
#      16 x 256 tokens per step, 4.5M tokens (about 0.67 epochs).
# The shipped model took about an hour on 2 shared CPU cores (log: examples/reference/train_log.jsonl).
# Finally WORK_DIR/model/ is copied to examples/reference/ (SHIP_TO=DIR to put it elsewhere), which
# must stay under 40 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK="${1:-reference-work}"
DC="${DOWNCYCLE:-downcycle}"
mkdir -p "$WORK"

[ -f "$WORK/corpus/corpus.json" ] || "$DC" data --tokenizer examples/tokenizer --source 'examples/corpus/*.jsonl.gz' \
    --out "$WORK/corpus" --seq-len 256 --val 0.01 --seed 0 --force

[ -f "$WORK/init/model.safetensors" ] || python - "$WORK/init" <<'PY'
import shutil, sys
from pathlib import Path
from downcycle.tiny import build_tiny
out = build_tiny("llama", Path(sys.argv[1]), seed=0, num_hidden_layers=12, hidden_size=192, intermediate_size=512,
                 num_attention_heads=6, num_key_value_heads=2, vocab_size=8192, max_position_embeddings=1024,
                 initializer_range=0.02, tie_word_embeddings=False, rope_theta=10000.0, bos_token_id=1, eos_token_id=2)
for f in Path("examples/tokenizer").iterdir():
    shutil.copy2(f, out / f.name)
PY

RESUME=()
[ -d "$WORK/model.run" ] && RESUME=(--resume)
"$DC" train "$WORK/init" --data "$WORK/corpus" --out "$WORK/model" --method full \
    --lr 3e-3 --warmup-steps 100 --schedule cosine --weight-decay 0.1 --micro-batch 16 --max-tokens 4500000 \
    --eval-every 250 --save-every 100 --log-every 10 --seed 0 "${RESUME[@]}"

SHIP_TO="${SHIP_TO:-examples/reference}"
rm -rf "$SHIP_TO" && cp -r "$WORK/model" "$SHIP_TO"
SIZE=$(du -sm "$SHIP_TO" | cut -f1)
echo "shipped $WORK/model to $SHIP_TO ($SIZE MB)"
[ "$SIZE" -le 40 ] || { echo "error: $SHIP_TO is larger than 40 MB" >&2; exit 1; }
