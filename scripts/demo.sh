#!/usr/bin/env bash
# Set up .venv and run the chat example. With no arguments it runs on a tiny random-weight checkpoint
# written to demo/ (once); give a model folder and tokenizer to run real weights:
#   scripts/demo.sh llama-2-7b-chat tokenizer.model      (NPROC=2 for two processes, e.g. two GPUs)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
ckpt=${1:-demo}
tokenizer=${2:-$ckpt/tokenizer.model}
if [ "$ckpt" = demo ] && [ ! -f demo/consolidated.00.pth ]; then
    .venv/bin/python -m llama.tiny demo
fi
.venv/bin/torchrun --nproc_per_node "${NPROC:-1}" example_chat_completion.py \
    --ckpt_dir "$ckpt" --tokenizer_path "$tokenizer" --max_seq_len 1024 --max_gen_len 64
