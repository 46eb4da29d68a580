#!/usr/bin/env bash
# Set up, write the tiny random-weight demo checkpoint (once), and run the chat example on it.
# Extra arguments go to the example, e.g. scripts/demo.sh --max_gen_len 32.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
[ -f demo/consolidated.00.pth ] || .venv/bin/python -m llama.tiny demo --mp 1
.venv/bin/torchrun --nproc_per_node 1 example_chat_completion.py \
    --ckpt_dir demo --tokenizer_path demo/tokenizer.model --max_seq_len 1024 --max_gen_len 64 "$@"
