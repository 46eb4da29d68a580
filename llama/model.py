"""The Llama 2 transformer: model arguments, layers and the KV-cached forward pass."""

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.distributed._functional_collectives as funcol
import torch.nn.functional as F
from fairscale.nn.model_parallel.initialize import get_model_parallel_group, get_model_parallel_world_size
from fairscale.nn.model_parallel.layers import (
    ColumnParallelLinear,
    ParallelEmbedding,
    RowParallelLinear,
)
from torch import nn

from .errors import LlamaError


@dataclass
class ModelArgs:
    dim: int = 4096
    n_layers: int = 32
    n_heads: int = 32
    n_kv_heads: Optional[int] = None
    vocab_size: int = -1  # set from the tokenizer
    multiple_of: int = 256  # SwiGLU hidden size is rounded up to a multiple of this
    ffn_dim_multiplier: Optional[float] = None
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    max_batch_size: int = 32
    max_seq_len: int = 2048

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    @property
    def ffn_hidden_dim(self) -> int:
        hidden = int(2 * (4 * self.dim) / 3)
        if self.ffn_dim_multiplier is not None:
            hidden = int(self.ffn_dim_multiplier * hidden)
        return self.multiple_of * math.ceil(hidden / self.multiple_of)

    def local_kv_heads(self, world_size: int) -> int:
        """KV heads held by one of `world_size` ranks: a share, or one replicated head
        when there are more ranks than KV heads."""
        return max(1, self.kv_heads // world_size)

    def n_rep(self, world_size: int) -> int:
        """Query heads per KV head on one of `world_size` ranks."""
        return self.n_heads // world_size // self.local_kv_heads(world_size)


def _keep(weight: torch.Tensor) -> torch.Tensor:
    """Leave a weight uninitialised: every weight is loaded from a checkpoint."""
    return weight


# The fairscale layers below hold the weights and define how they are split over the model-parallel
# group; their forward passes are written out here with functional collectives, which torch.compile
# can trace (fairscale's own forwards break the graph at every layer).


def column_parallel(x: torch.Tensor, layer: ColumnParallelLinear, gather: bool = False) -> torch.Tensor:
    """x @ W.T with W split by output rows; `gather` joins the ranks' output columns."""
    out = F.linear(x, layer.weight)
    return gather_last_dim(out) if gather else out


def row_parallel(x: torch.Tensor, layer: RowParallelLinear) -> torch.Tensor:
    """x @ W.T with W split by input columns and x already split to match: the ranks' partial sums add up."""
    out = F.linear(x, layer.weight)
    if get_model_parallel_world_size() == 1:
        return out
    return funcol.all_reduce(out, "sum", get_model_parallel_group())


def gather_last_dim(x: torch.Tensor) -> torch.Tensor:
    if get_model_parallel_world_size() == 1:
        return x
    return funcol.all_gather_tensor(x.contiguous(), x.dim() - 1, get_model_parallel_group())


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


def rope_tables(head_dim: int, max_seq_len: int, theta: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Cosine and sine of the rotary angles, [max_seq_len, head_dim // 2], in float32."""
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 2)[: head_dim // 2].float() / head_dim))
    angles = torch.outer(torch.arange(max_seq_len, dtype=torch.float32), freqs)
    return torch.cos(angles), torch.sin(angles)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved (even, odd) pairs of x [B, S, H, D] by per-position angles [B, S, D/2]."""
    pairs = x.float().unflatten(-1, (-1, 2))
    even, odd = pairs[..., 0], pairs[..., 1]
    cos, sin = cos.unsqueeze(2), sin.unsqueeze(2)
    rotated = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1)
    return rotated.flatten(-2).type_as(x)


class Attention(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        world_size = get_model_parallel_world_size()
        self.n_local_heads = args.n_heads // world_size
        self.n_local_kv_heads = args.local_kv_heads(world_size)
        self.head_dim = args.head_dim
        self.max_batch_size = args.max_batch_size
        self.max_seq_len = args.max_seq_len
        kv_dim = self.n_local_kv_heads * world_size * self.head_dim

        self.wq = ColumnParallelLinear(args.dim, args.n_heads * self.head_dim, bias=False, gather_output=False, init_method=_keep)
        self.wk = ColumnParallelLinear(args.dim, kv_dim, bias=False, gather_output=False, init_method=_keep)
        self.wv = ColumnParallelLinear(args.dim, kv_dim, bias=False, gather_output=False, init_method=_keep)
        self.wo = RowParallelLinear(args.n_heads * self.head_dim, args.dim, bias=False, input_is_parallel=True, init_method=_keep)

    def init_cache(self, device: torch.device, dtype: torch.dtype) -> None:
        """Allocate a zeroed KV cache [max_batch_size, local KV heads, max_seq_len, head_dim]."""
        shape = (self.max_batch_size, self.n_local_kv_heads, self.max_seq_len, self.head_dim)
        self.register_buffer("cache_k", torch.zeros(shape, device=device, dtype=dtype), persistent=False)
        self.register_buffer("cache_v", torch.zeros(shape, device=device, dtype=dtype), persistent=False)

    def forward(
        self,
        x: torch.Tensor,
        positions: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor,
    ) -> torch.Tensor:
        """Attend from x [B, S, dim] at `positions` [B, S] to the cache, after writing this step's keys
        and values into it. `mask` [B or 1, 1, n_rep * S, T] says which of the first T cache slots each
        query row of the grouped view below may see."""
        bsz, seqlen, _ = x.shape
        q = column_parallel(x, self.wq).view(bsz, seqlen, self.n_local_heads, self.head_dim)
        k = column_parallel(x, self.wk).view(bsz, seqlen, self.n_local_kv_heads, self.head_dim)
        v = column_parallel(x, self.wv).view(bsz, seqlen, self.n_local_kv_heads, self.head_dim)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)

        rows = torch.arange(bsz, device=x.device).unsqueeze(1)
        self.cache_k[rows, :, positions] = k
        self.cache_v[rows, :, positions] = v
        kv_len = mask.shape[-1]
        keys = self.cache_k[:bsz, :, :kv_len]
        values = self.cache_v[:bsz, :, :kv_len]

        # Grouped-query attention as a grouped view: the query heads that share a KV head become extra
        # query rows of that head (heads kv*n_rep .. kv*n_rep + n_rep - 1 use KV head kv). No KV copy.
        q = q.transpose(1, 2).reshape(bsz, self.n_local_kv_heads, -1, self.head_dim)
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        out = out.view(bsz, self.n_local_heads, seqlen, self.head_dim).transpose(1, 2)
        return row_parallel(out.reshape(bsz, seqlen, -1), self.wo)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.w1 = ColumnParallelLinear(dim, hidden_dim, bias=False, gather_output=False, init_method=_keep)
        self.w2 = RowParallelLinear(hidden_dim, dim, bias=False, input_is_parallel=True, init_method=_keep)
        self.w3 = ColumnParallelLinear(dim, hidden_dim, bias=False, gather_output=False, init_method=_keep)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return row_parallel(F.silu(column_parallel(x, self.w1)) * column_parallel(x, self.w3), self.w2)


class TransformerBlock(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.attention = Attention(args)
        self.feed_forward = FeedForward(args.dim, args.ffn_hidden_dim)
        self.attention_norm = RMSNorm(args.dim, eps=args.norm_eps)
        self.ffn_norm = RMSNorm(args.dim, eps=args.norm_eps)

    def forward(self, x, positions, cos, sin, mask) -> torch.Tensor:
        h = x + self.attention(self.attention_norm(x), positions, cos, sin, mask)
        return h + self.feed_forward(self.ffn_norm(h))


class Transformer(nn.Module):
    def __init__(self, params: ModelArgs):
        super().__init__()
        self.params = params
        self.vocab_size = params.vocab_size
        self.n_layers = params.n_layers
        self.tok_embeddings = ParallelEmbedding(params.vocab_size, params.dim, init_method=_keep)
        self.layers = nn.ModuleList(TransformerBlock(params) for _ in range(params.n_layers))
        self.norm = RMSNorm(params.dim, eps=params.norm_eps)
        self.output = ColumnParallelLinear(params.dim, params.vocab_size, bias=False, init_method=_keep)
        self.n_rep = params.n_rep(get_model_parallel_world_size())
        self.init_buffers()

    def init_buffers(self) -> None:
        """(Re)build the rotary tables and zeroed KV caches where the final norm's weight lives, in its
        dtype. Called again once weights are loaded into a model built on the meta device."""
        device, dtype = self.norm.weight.device, self.norm.weight.dtype
        cos, sin = rope_tables(self.params.head_dim, self.params.max_seq_len, self.params.rope_theta)
        self.register_buffer("rope_cos", cos.to(device), persistent=False)
        self.register_buffer("rope_sin", sin.to(device), persistent=False)
        for layer in self.layers:
            layer.attention.init_cache(device, dtype)

    @torch.inference_mode()
    def forward(self, tokens: torch.Tensor, start_pos: int) -> torch.Tensor:
        """Logits [B, S, vocab] (float32) for tokens [B, S] placed at positions start_pos..start_pos+S-1
        of every row, reading and filling the KV cache."""
        bsz, seqlen = tokens.shape
        if bsz > self.params.max_batch_size or start_pos + seqlen > self.params.max_seq_len:
            raise LlamaError(
                f"A batch of {bsz} x positions {start_pos}..{start_pos + seqlen - 1} does not fit the KV cache "
                f"(max_batch_size={self.params.max_batch_size}, max_seq_len={self.params.max_seq_len})."
            )
        positions = torch.arange(start_pos, start_pos + seqlen, device=tokens.device).expand(bsz, seqlen)
        return self.forward_rows(tokens, positions, kv_len=start_pos + seqlen)

    def forward_rows(
        self,
        tokens: torch.Tensor,
        positions: torch.Tensor,
        kv_len: int,
        logits_at: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """The forward pass with a position for every token, so that each row of a batch can be at its
        own place in its sequence. Attention covers the first `kv_len` cache slots (any bound at or
        above the largest position works); kv_len equal to the number of tokens means a fresh prefill,
        every row at positions 0..S-1. With `logits_at` [B], only the logits at those sequence indices
        are computed, shaped [B, 1, vocab]; otherwise all of them."""
        h = gather_last_dim(F.embedding(tokens, self.tok_embeddings.weight))
        cos, sin = self.rope_cos[positions], self.rope_sin[positions]
        # One mask for every layer, its rows laid out as the attention's grouped view (n_rep query heads
        # per KV head); a fresh prefill needs only one row's, shared across the batch.
        mask_positions = positions[:1] if kv_len == tokens.shape[1] else positions
        visible = torch.arange(kv_len, device=tokens.device) <= mask_positions.unsqueeze(-1)
        mask = visible.unsqueeze(1).repeat(1, 1, self.n_rep, 1)
        for layer in self.layers:
            h = layer(h, positions, cos, sin, mask)
        if logits_at is not None:
            h = h[torch.arange(h.shape[0], device=h.device), logits_at].unsqueeze(1)
        return column_parallel(self.norm(h), self.output, gather=True).float()
