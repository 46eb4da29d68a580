"""An independent, deliberately plain float32 Llama forward (complex-number RoPE, repeated KV heads,
explicit softmax attention) over a full state dict, for checking the package's model against."""

import math

import torch

from llama.model import ModelArgs


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * weight


def rotate(x: torch.Tensor, theta: float) -> torch.Tensor:
    """x [S, H, D]: rotate (even, odd) pairs as complex numbers by position * theta^(-2i/D)."""
    seqlen, _, dim = x.shape
    freqs = theta ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    angles = torch.arange(seqlen, dtype=torch.float64)[:, None] * freqs[None]
    z = torch.view_as_complex(x.double().reshape(seqlen, -1, dim // 2, 2).contiguous())
    z = z * torch.polar(torch.ones_like(angles), angles)[:, None, :]
    return torch.view_as_real(z).reshape(x.shape).float()


def reference_logits(state: dict, args: ModelArgs, tokens: list) -> torch.Tensor:
    """Logits [S, vocab] of one sequence, computed from scratch."""
    w = {k: v.float() for k, v in state.items()}
    hd, n_rep = args.head_dim, args.n_heads // args.kv_heads
    h = w["tok_embeddings.weight"][torch.tensor(tokens)]
    seqlen = len(tokens)
    causal = torch.full((seqlen, seqlen), float("-inf")).triu(1)
    for i in range(args.n_layers):
        p = f"layers.{i}."
        x = rms_norm(h, w[p + "attention_norm.weight"], args.norm_eps)
        q = rotate((x @ w[p + "attention.wq.weight"].T).view(seqlen, args.n_heads, hd), args.rope_theta)
        k = rotate((x @ w[p + "attention.wk.weight"].T).view(seqlen, args.kv_heads, hd), args.rope_theta)
        v = (x @ w[p + "attention.wv.weight"].T).view(seqlen, args.kv_heads, hd)
        k, v = k.repeat_interleave(n_rep, dim=1), v.repeat_interleave(n_rep, dim=1)
        scores = torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(hd) + causal
        attn = torch.einsum("hqk,khd->qhd", scores.softmax(-1), v).reshape(seqlen, -1)
        h = h + attn @ w[p + "attention.wo.weight"].T
        x = rms_norm(h, w[p + "ffn_norm.weight"], args.norm_eps)
        gate = torch.nn.functional.silu(x @ w[p + "feed_forward.w1.weight"].T) * (x @ w[p + "feed_forward.w3.weight"].T)
        h = h + gate @ w[p + "feed_forward.w2.weight"].T
    return rms_norm(h, w["norm.weight"], args.norm_eps) @ w["output.weight"].T
