"""Write a small random-weight checkpoint in the exact layout of Meta's downloads (params.json, bf16
`consolidated.NN.pth` shards split as fairscale splits them, `rope.freqs`) plus a SentencePiece
tokenizer.model trained on text shipped with the package. Tests and the demo run on it.

    python -m llama.tiny OUT_DIR [--mp 2] [--seed 0] [--params '{"dim": 1024, "n_layers": 8}']
"""

import argparse
import io
import json
from pathlib import Path
from typing import Dict, Optional

import sentencepiece as spm
import torch

from .model import ModelArgs
from .reshard import save_meta_checkpoint

CORPUS = Path(__file__).with_name("tiny_corpus.txt")
TINY_PARAMS = {"dim": 64, "n_layers": 2, "n_heads": 8, "n_kv_heads": 4, "multiple_of": 32, "norm_eps": 1e-5, "vocab_size": -1}
TINY_VOCAB = 512


def train_tokenizer(path: Path, vocab_size: int = TINY_VOCAB) -> None:
    """Train a byte-fallback BPE model with Llama 2's special ids (unk 0, bos 1, eos 2, no pad)."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS.read_text(encoding="utf-8").splitlines()),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=1.0,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        split_digits=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        minloglevel=2,
    )
    path.write_bytes(model.getvalue())


def random_weights(args: ModelArgs, seed: int) -> Dict[str, torch.Tensor]:
    """A full (unsharded) state dict with the checkpoint's keys and shapes."""
    gen = torch.Generator().manual_seed(seed)

    def linear(rows: int, cols: int) -> torch.Tensor:
        return torch.randn(rows, cols, generator=gen) / cols**0.5

    def norm() -> torch.Tensor:
        return 1 + 0.1 * torch.randn(args.dim, generator=gen)

    kv_dim = args.kv_heads * args.head_dim
    hidden = args.ffn_hidden_dim
    state = {"tok_embeddings.weight": torch.randn(args.vocab_size, args.dim, generator=gen)}
    for i in range(args.n_layers):
        p = f"layers.{i}."
        state[p + "attention.wq.weight"] = linear(args.dim, args.dim)
        state[p + "attention.wk.weight"] = linear(kv_dim, args.dim)
        state[p + "attention.wv.weight"] = linear(kv_dim, args.dim)
        state[p + "attention.wo.weight"] = linear(args.dim, args.dim)
        state[p + "feed_forward.w1.weight"] = linear(hidden, args.dim)
        state[p + "feed_forward.w2.weight"] = linear(args.dim, hidden)
        state[p + "feed_forward.w3.weight"] = linear(hidden, args.dim)
        state[p + "attention_norm.weight"] = norm()
        state[p + "ffn_norm.weight"] = norm()
    state["norm.weight"] = norm()
    state["output.weight"] = linear(args.vocab_size, args.dim)
    return {k: v.to(torch.bfloat16) for k, v in state.items()}


def write_tiny_checkpoint(out_dir: Path, mp: int = 1, seed: int = 0, params: Optional[dict] = None) -> Path:
    """Write tokenizer.model, params.json and `mp` random shards to out_dir; `params` overrides the
    tiny model's settings (e.g. {"n_kv_heads": None} for multi-head attention)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer_path = out_dir / "tokenizer.model"
    if not tokenizer_path.exists():
        train_tokenizer(tokenizer_path)
    settings = {**TINY_PARAMS, **(params or {})}
    args = ModelArgs(**{**settings, "vocab_size": spm.SentencePieceProcessor(model_file=str(tokenizer_path)).vocab_size()})
    save_meta_checkpoint(settings, [random_weights(args, seed)], out_dir, mp)
    return out_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--mp", type=int, default=1, help="number of shards (model-parallel size)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--params", type=json.loads, default=None, help="JSON object overriding params.json fields")
    args = parser.parse_args()
    write_tiny_checkpoint(args.out_dir, args.mp, args.seed, args.params)
    print(f"Wrote a random {args.mp}-shard checkpoint and tokenizer.model to {args.out_dir}")


if __name__ == "__main__":
    main()
