"""Hugging Face format Llama checkpoints: loading them directly, and converting to and from Meta's layout.

A Hugging Face folder holds config.json and the weights as `*.safetensors` (or `pytorch_model*.bin`),
possibly split over several files listed in an index. Its tensor names differ from Meta's, and the rows
of q_proj and k_proj are permuted within each head, because Hugging Face rotates the two halves of a head
(rotate-half RoPE) where Meta rotates interleaved (even, odd) pairs. `Llama.build` opens such a folder
through `open_hf_checkpoint`, which maps names and undoes the permutation one tensor at a time, as it is
read, so that loading stays as lean as from Meta's memory-mapped shards.

    python -m llama.convert to-hf META_DIR OUT_DIR [--max-shard-size 5GB] [--tokenizer PATH]
    python -m llama.convert from-hf HF_DIR OUT_DIR [--mp N] [--tokenizer PATH]

Both go tensor by tensor, holding about one tensor in memory, and round-trip to bit-identical tensors
in their original dtypes.
"""

import argparse
import json
import math
import os
import shutil
import struct
import sys
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import torch

from .checkpoint import PARAMS_FILE, Progress, check_keys, check_out_dir, open_checkpoint, open_shard, read_slice, split_dim
from .errors import LlamaError
from .model import ModelArgs
from .reshard import save_meta_checkpoint
from .tokenizer import Tokenizer

CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.model"
SAFETENSORS_INDEX = "model.safetensors.index.json"
SAFETENSORS_SINGLE = "model.safetensors"
BIN_INDEX = "pytorch_model.bin.index.json"
BIN_SINGLE = "pytorch_model.bin"
DEFAULT_MAX_SHARD_SIZE = 5 * 10**9

# Meta's name of a per-layer weight -> Hugging Face's (both under the layer's prefix).
LAYER_NAMES = {
    "attention.wq": "self_attn.q_proj",
    "attention.wk": "self_attn.k_proj",
    "attention.wv": "self_attn.v_proj",
    "attention.wo": "self_attn.o_proj",
    "feed_forward.w1": "mlp.gate_proj",
    "feed_forward.w2": "mlp.down_proj",
    "feed_forward.w3": "mlp.up_proj",
    "attention_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
TOP_NAMES = {"tok_embeddings": "model.embed_tokens", "norm": "model.norm", "output": "lm_head"}
# Hugging Face tensors that hold nothing a Meta checkpoint needs (precomputed rotary frequencies).
HF_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)

SAFETENSORS_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
}
SAFETENSORS_TO_TORCH = {code: dtype for dtype, code in SAFETENSORS_DTYPES.items()}

Shard = Mapping[str, torch.Tensor]


# ---------------------------------------------------------------------------------------------------
# Names, shapes and the q/k row permutation


def meta_keys(n_layers: int) -> List[str]:
    """The weight names of a Meta checkpoint, in the model's state-dict order."""
    keys = ["tok_embeddings.weight"]
    for i in range(n_layers):
        keys += [f"layers.{i}.{name}.weight" for name in LAYER_NAMES]
    return keys + ["norm.weight", "output.weight"]


def hf_key(meta_key: str) -> str:
    """Hugging Face's name for a Meta weight name."""
    parts = meta_key.split(".")
    if parts[0] == "layers":
        return f"model.layers.{parts[1]}.{LAYER_NAMES['.'.join(parts[2:-1])]}.{parts[-1]}"
    return f"{TOP_NAMES[parts[0]]}.{parts[-1]}"


def full_shapes(args: ModelArgs) -> Dict[str, Tuple[int, ...]]:
    """The unsharded shape of every weight of a model with these settings."""
    dim, hidden, kv_dim = args.dim, args.ffn_hidden_dim, args.kv_heads * args.head_dim
    per_layer = {
        "attention.wq": (args.n_heads * args.head_dim, dim),
        "attention.wk": (kv_dim, dim),
        "attention.wv": (kv_dim, dim),
        "attention.wo": (dim, args.n_heads * args.head_dim),
        "feed_forward.w1": (hidden, dim),
        "feed_forward.w2": (dim, hidden),
        "feed_forward.w3": (hidden, dim),
        "attention_norm": (dim,),
        "ffn_norm": (dim,),
    }
    shapes = {"tok_embeddings.weight": (args.vocab_size, dim)}
    for i in range(args.n_layers):
        shapes.update({f"layers.{i}.{name}.weight": shape for name, shape in per_layer.items()})
    shapes.update({"norm.weight": (dim,), "output.weight": (args.vocab_size, dim)})
    return shapes


def rotary_heads(meta_key: str, args: ModelArgs) -> Optional[int]:
    """How many heads' rows the weight holds, if RoPE is applied to its output (wq, wk); else None."""
    name = meta_key.split(".")[-2]
    return {"wq": args.n_heads, "wk": args.kv_heads}.get(name)


def _check_rotary_shape(weight: torch.Tensor, heads: int, key: str) -> Tuple[int, int, int]:
    rows, cols = weight.shape if weight.dim() == 2 else (-1, -1)
    if weight.dim() != 2 or rows % heads or (rows // heads) % 2:
        raise LlamaError(
            f"{key} has shape {tuple(weight.shape)}, which cannot be split into {heads} heads of an even size. "
            "Check that the config belongs to these weights."
        )
    return rows, cols, rows // heads


def hf_to_meta_rows(weight: torch.Tensor, heads: int, key: str = "weight") -> torch.Tensor:
    """Reorder q_proj / k_proj rows from Hugging Face's per-head [first halves; second halves] to
    Meta's interleaved (even, odd) pairs."""
    rows, cols, head_dim = _check_rotary_shape(weight, heads, key)
    return weight.reshape(heads, 2, head_dim // 2, cols).transpose(1, 2).reshape(rows, cols)


def meta_to_hf_rows(weight: torch.Tensor, heads: int, key: str = "weight") -> torch.Tensor:
    """The inverse of hf_to_meta_rows."""
    rows, cols, head_dim = _check_rotary_shape(weight, heads, key)
    return weight.reshape(heads, head_dim // 2, 2, cols).transpose(1, 2).reshape(rows, cols)


# ---------------------------------------------------------------------------------------------------
# config.json <-> ModelArgs settings


def ffn_settings(dim: int, intermediate_size: int) -> Tuple[int, Optional[float]]:
    """A (multiple_of, ffn_dim_multiplier) for which ModelArgs.ffn_hidden_dim equals intermediate_size.
    Prefers the settings of Meta's params.json files, then a power-of-two multiple_of without multiplier;
    otherwise multiple_of=intermediate_size with a multiplier that brings the hidden size down to it."""
    if not isinstance(intermediate_size, int) or isinstance(intermediate_size, bool) or intermediate_size < 1:
        raise LlamaError(f"intermediate_size must be a positive integer; got {intermediate_size!r}. Fix config.json.")

    def hidden(multiple_of: int, multiplier: Optional[float]) -> int:
        return ModelArgs(dim=dim, multiple_of=multiple_of, ffn_dim_multiplier=multiplier).ffn_hidden_dim

    # Meta's own settings first (Llama 2 7B and 13B; 70B), then any power-of-two multiple_of.
    for multiple_of, multiplier in [(256, None), (4096, 1.3)] + [(2**p, None) for p in range(12, -1, -1)]:
        if hidden(multiple_of, multiplier) == intermediate_size:
            return multiple_of, multiplier
    base = int(2 * (4 * dim) / 3)
    if base <= intermediate_size:
        candidates = [None]
    else:
        exact = intermediate_size / base
        candidates = [exact, math.nextafter(exact, math.inf), (intermediate_size + 0.5) / base]
    for multiplier in candidates:
        if hidden(intermediate_size, multiplier) == intermediate_size:
            return intermediate_size, multiplier
    raise LlamaError(
        f"intermediate_size={intermediate_size} cannot be expressed with multiple_of / ffn_dim_multiplier for "
        f"hidden_size={dim}. This model does not fit Llama 2's feed-forward sizing."
    )


def _get_int(config: dict, key: str, where: Path, default: Optional[int] = None) -> int:
    value = config.get(key, default)
    if value is None:
        raise LlamaError(f"{where} has no {key!r}. A Llama config.json must set it.")
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise LlamaError(f"{where}: {key} must be a positive integer; got {value!r}.")
    return value


def params_from_hf_config(config: dict, where: Path = Path(CONFIG_FILE)) -> dict:
    """ModelArgs settings (as in a Meta params.json) for a Hugging Face LlamaConfig, or a LlamaError
    naming what this package cannot run."""
    if not isinstance(config, dict):
        raise LlamaError(f"{where} must hold a JSON object.")
    model_type = config.get("model_type")
    if model_type != "llama":
        raise LlamaError(
            f"{where} describes a {model_type!r} model, but only model_type 'llama' (Llama 2 architecture) can be "
            "loaded. Use a Llama checkpoint, or the library the model was made for."
        )
    if config.get("tie_word_embeddings", False):
        raise LlamaError(
            f"{where} sets tie_word_embeddings: true (the output layer reuses the token embedding). Llama 2 "
            "checkpoints have a separate output weight; this model cannot be loaded. Use an untied checkpoint."
        )
    for key in ("attention_bias", "mlp_bias"):
        if config.get(key, False):
            raise LlamaError(f"{where} sets {key}: true, but Llama 2 layers have no biases. This model cannot be loaded.")
    act = config.get("hidden_act", "silu")
    if act != "silu":
        raise LlamaError(f"{where} sets hidden_act {act!r}; Llama 2 uses 'silu'. This model cannot be loaded.")

    rope_theta = config.get("rope_theta", 10000.0)
    if config.get("rope_scaling") is not None:
        raise LlamaError(
            f"{where} sets rope_scaling {config['rope_scaling']!r}; only plain RoPE (rope_scaling: null) is "
            "supported. Use a checkpoint without RoPE scaling."
        )
    rope = config.get("rope_parameters")  # transformers >= 5 keeps rope_theta (and any scaling) here
    if rope is not None:
        if not isinstance(rope, dict):
            raise LlamaError(f"{where}: rope_parameters must be an object; got {rope!r}.")
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        extra = sorted(set(rope) - {"rope_type", "type", "rope_theta"})
        if rope_type != "default" or extra:
            raise LlamaError(
                f"{where} sets rope_parameters {rope!r}; only plain RoPE (rope_type 'default' with rope_theta) "
                "is supported. Use a checkpoint without RoPE scaling."
            )
        rope_theta = rope.get("rope_theta", rope_theta)
    if not isinstance(rope_theta, (int, float)) or isinstance(rope_theta, bool) or rope_theta <= 0:
        raise LlamaError(f"{where}: rope_theta must be a positive number; got {rope_theta!r}.")

    dim = _get_int(config, "hidden_size", where)
    n_layers = _get_int(config, "num_hidden_layers", where)
    n_heads = _get_int(config, "num_attention_heads", where)
    n_kv_heads = _get_int(config, "num_key_value_heads", where, default=n_heads)
    if dim % n_heads:
        raise LlamaError(f"{where}: hidden_size {dim} is not divisible by num_attention_heads {n_heads}.")
    head_dim = config.get("head_dim")
    if head_dim is not None and head_dim != dim // n_heads:
        raise LlamaError(
            f"{where} sets head_dim {head_dim}, but Llama 2 heads are hidden_size / num_attention_heads = "
            f"{dim // n_heads} wide. This model cannot be loaded."
        )
    if n_heads % n_kv_heads:
        raise LlamaError(
            f"{where}: num_attention_heads {n_heads} is not a multiple of num_key_value_heads {n_kv_heads}."
        )
    if (dim // n_heads) % 2:
        raise LlamaError(f"{where}: the head size {dim // n_heads} is odd; rotary embeddings need an even one.")
    norm_eps = config.get("rms_norm_eps", 1e-6)
    if not isinstance(norm_eps, (int, float)) or isinstance(norm_eps, bool) or norm_eps < 0:
        raise LlamaError(f"{where}: rms_norm_eps must be a non-negative number; got {norm_eps!r}.")
    multiple_of, multiplier = ffn_settings(dim, config.get("intermediate_size"))
    params = {
        "dim": dim,
        "n_layers": n_layers,
        "n_heads": n_heads,
        "n_kv_heads": n_kv_heads,
        "multiple_of": multiple_of,
        "ffn_dim_multiplier": multiplier,
        "norm_eps": float(norm_eps),
        "rope_theta": float(rope_theta),
    }
    if config.get("vocab_size") is not None:
        params["vocab_size"] = _get_int(config, "vocab_size", where)
    return params


def hf_config(args: ModelArgs, dtype: torch.dtype, max_position_embeddings: int = 4096) -> dict:
    """A transformers LlamaConfig (as config.json) for a model with these settings."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": args.dim,
        "intermediate_size": args.ffn_hidden_dim,
        "num_hidden_layers": args.n_layers,
        "num_attention_heads": args.n_heads,
        "num_key_value_heads": args.kv_heads,
        "head_dim": args.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": max_position_embeddings,
        "initializer_range": 0.02,
        "rms_norm_eps": args.norm_eps,
        "rope_theta": args.rope_theta,
        "rope_scaling": None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "pretraining_tp": 1,
        "tie_word_embeddings": False,
        "torch_dtype": str(dtype).removeprefix("torch."),
        "use_cache": True,
        "vocab_size": args.vocab_size,
        "bos_token_id": 1,
        "eos_token_id": 2,
    }


# ---------------------------------------------------------------------------------------------------
# Reading a Hugging Face folder


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise LlamaError(f"{path} is not valid JSON ({err}). Re-download it.") from None


def _weight_files(ckpt_dir: Path) -> Tuple[Optional[Dict[str, Path]], List[Path]]:
    """The weight files of a Hugging Face folder: (the index's name -> file map, or None without an
    index; the files). Safetensors are preferred over .bin when both are present."""
    for index_name, single_name, pattern in (
        (SAFETENSORS_INDEX, SAFETENSORS_SINGLE, "*.safetensors"),
        (BIN_INDEX, BIN_SINGLE, "pytorch_model*.bin"),
    ):
        index_path = ckpt_dir / index_name
        if index_path.is_file():
            index = _read_json(index_path)
            weight_map = index.get("weight_map") if isinstance(index, dict) else None
            if not isinstance(weight_map, dict) or not weight_map:
                raise LlamaError(f"{index_path} has no weight_map. Re-download it.")
            files = {name: ckpt_dir / str(file) for name, file in weight_map.items()}
            missing = sorted({str(p.name) for p in files.values() if not p.is_file()})
            if missing:
                raise LlamaError(
                    f"{index_path} lists weight files that are not in {ckpt_dir}: {missing[:5]}. "
                    "Finish the download (every file the index names is needed)."
                )
            return files, sorted(set(files.values()))
        if (ckpt_dir / single_name).is_file():
            return None, [ckpt_dir / single_name]
        found = sorted(ckpt_dir.glob(pattern))
        if found:
            return None, found
    raise LlamaError(
        f"{ckpt_dir} holds config.json but no weights: expected model.safetensors, model-*.safetensors with "
        f"{SAFETENSORS_INDEX}, or pytorch_model*.bin. Finish the download."
    )


class HFWeights(Mapping[str, torch.Tensor]):
    """The weights of a Hugging Face folder under Meta's names and in Meta's row order, as a lazy
    mapping: a tensor is read (memory-mapped) only when it is looked up, so loading never holds more
    than the tensors in use. Keys and files are checked when it is made."""

    def __init__(self, ckpt_dir: Path, args: ModelArgs):
        self.dir, self.args = ckpt_dir, args
        self._keys = meta_keys(args.n_layers)
        self._key_set = set(self._keys)
        self._handles: Dict[Path, object] = {}
        index, files = _weight_files(ckpt_dir)
        if index is None:
            index = {name: path for path in files for name in self._open(path).keys()}
        self._file = index
        self._check_names(set(index))

    def _open(self, path: Path):
        if path not in self._handles:
            if path.suffix == ".safetensors":
                try:
                    from safetensors import safe_open
                except ImportError:
                    raise LlamaError(
                        f"{path} is a safetensors file; reading it needs the safetensors package "
                        "(pip install safetensors)."
                    ) from None
                try:
                    self._handles[path] = safe_open(str(path), framework="pt", device="cpu")
                except Exception as err:  # safetensors raises its own error types for bad headers
                    raise LlamaError(f"{path} is truncated or corrupt ({err}). Re-download it.") from None
            else:
                self._handles[path] = open_shard(path, fix="Re-download it.")
        return self._handles[path]

    def _check_names(self, names: set) -> None:
        biases = sorted(n for n in names if n.endswith(".bias"))
        if biases:
            raise LlamaError(
                f"{self.dir} holds bias tensors ({', '.join(biases[:3])}), but Llama 2 layers have no biases. "
                "This model cannot be loaded."
            )
        if "lm_head.weight" not in names:
            raise LlamaError(
                f"{self.dir} has no lm_head.weight: the output layer is tied to the token embedding (or the "
                "checkpoint is a bare LlamaModel). Llama 2 needs a separate output weight; use a "
                "LlamaForCausalLM checkpoint with tie_word_embeddings false."
            )
        expected = {hf_key(k) for k in self._keys}
        unexpected = sorted(n for n in names - expected if not n.endswith(HF_IGNORED_SUFFIXES))
        missing = sorted(expected - names)
        if missing or unexpected:
            raise LlamaError(
                f"{self.dir}'s weights do not match its config.json: missing {missing[:5]}, unexpected "
                f"{unexpected[:5]}. Check that config.json belongs to these weights and that the download is complete."
            )

    def _source(self, key: str):
        if key not in self._key_set:
            raise KeyError(key)
        name = hf_key(key)
        return self._open(self._file[name]), name

    def __getitem__(self, key: str) -> torch.Tensor:
        handle, name = self._source(key)
        tensor = handle.get_tensor(name) if hasattr(handle, "get_tensor") else handle[name]
        heads = rotary_heads(key, self.args)
        return tensor if heads is None else hf_to_meta_rows(tensor, heads, f"{name} in {self.dir}")

    def shape(self, key: str) -> Tuple[int, ...]:
        """The tensor's shape, read from the file's header without reading the tensor."""
        handle, name = self._source(key)
        if hasattr(handle, "get_slice"):
            return tuple(handle.get_slice(name).get_shape())
        return tuple(handle[name].shape)

    def dtype(self, key: str) -> torch.dtype:
        handle, name = self._source(key)
        if hasattr(handle, "get_slice"):
            code = handle.get_slice(name).get_dtype()
            if code not in SAFETENSORS_TO_TORCH:
                raise LlamaError(f"{name} in {self.dir} is stored as {code}; only floating-point weights are supported.")
            return SAFETENSORS_TO_TORCH[code]
        return handle[name].dtype

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._key_set


def open_hf_checkpoint(ckpt_dir: Path) -> Tuple[dict, List[Shard]]:
    """The ModelArgs settings and the weights (one lazy, unsharded mapping under Meta's names) of a
    Hugging Face Llama folder, for checkpoint.load_model."""
    ckpt_dir = Path(ckpt_dir)
    config_path = ckpt_dir / CONFIG_FILE
    params = params_from_hf_config(_read_json(config_path), config_path)
    args = ModelArgs(**params)
    return params, [HFWeights(ckpt_dir, args)]


# ---------------------------------------------------------------------------------------------------
# Writing


def _check_weight(
    name: str, shape: Tuple[int, ...], dtype: torch.dtype, expected: Tuple[int, ...], where: Path, settings: str
) -> None:
    """Before converting: a weight must have the shape its settings file (`settings`) describes, and a
    floating-point dtype that safetensors can hold."""
    if shape != expected:
        raise LlamaError(
            f"{name} in {where} has shape {shape}, but {settings} describes {expected}. "
            f"Check that {settings} belongs to these weights."
        )
    if dtype not in SAFETENSORS_DTYPES:
        raise LlamaError(f"{name} in {where} is {dtype}; only floating-point weights can be converted.")


def _check_tokenizer(tokenizer: Optional[Path], vocab_size: int) -> None:
    """Before converting: the tokenizer to copy must fit the embedding."""
    if tokenizer is None:
        return
    if not tokenizer.is_file():
        raise LlamaError(f"Tokenizer {tokenizer} not found.")
    words = Tokenizer(str(tokenizer)).n_words
    if words != vocab_size:
        raise LlamaError(
            f"The tokenizer {tokenizer} has {words} tokens but the checkpoint's embedding has {vocab_size} rows. "
            "Pass the tokenizer.model that came with these weights (--tokenizer)."
        )


def _copy_tokenizer(tokenizer: Optional[Path], out_dir: Path) -> None:
    """Copy the tokenizer next to the converted weights, or say that it is missing."""
    if tokenizer is None:
        print(f"No {TOKENIZER_FILE} found; copy the model's tokenizer into {out_dir} yourself.", file=sys.stderr)
    else:
        shutil.copyfile(tokenizer, out_dir / TOKENIZER_FILE)


def _write_safetensors(
    path: Path,
    entries: Sequence[Tuple[str, Tuple[int, ...], torch.dtype]],
    produce: Callable[[str], torch.Tensor],
    progress: Progress,
) -> None:
    """Write a safetensors file one tensor at a time: the header is built from the planned names,
    shapes and dtypes, then each tensor is produced, written and dropped."""
    if sys.byteorder != "little":
        raise LlamaError("Writing safetensors needs a little-endian machine.")
    header: Dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape, dtype in entries:
        nbytes = math.prod(shape) * dtype.itemsize
        header[name] = {"dtype": SAFETENSORS_DTYPES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name, shape, dtype in entries:
            tensor = produce(name)
            if tuple(tensor.shape) != tuple(shape) or tensor.dtype != dtype:
                raise LlamaError(f"{name} is {tuple(tensor.shape)} {tensor.dtype}, expected {tuple(shape)} {dtype}.")
            data = tensor.contiguous().reshape(-1).view(torch.uint8)
            f.write(memoryview(data.numpy()))
            progress.update(data.numel())
    os.replace(tmp, path)


def parse_size(text: str) -> int:
    """Bytes in a size such as 5GB, 500MB, 2GiB or 1000000."""
    units = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}
    text = text.strip().upper()
    number = text.rstrip("KMGIB")
    try:
        size = int(float(number) * units[text[len(number):]])
    except (KeyError, ValueError):
        raise LlamaError(f"Cannot read the size {text!r}; write it like 5GB, 500MB or 2GiB.") from None
    if size < 1:
        raise LlamaError(f"The size {text!r} must be positive.")
    return size


def _find_tokenizer(ckpt_dir: Path, explicit: Optional[Path], parent: bool) -> Optional[Path]:
    """The tokenizer to copy: the one given, else tokenizer.model in the folder or (with `parent`, for
    Meta's download layout) in the folder above it."""
    if explicit is not None:
        return explicit
    candidates = [ckpt_dir / TOKENIZER_FILE] + ([ckpt_dir.parent / TOKENIZER_FILE] if parent else [])
    return next((c for c in candidates if c.is_file()), None)


def _group_by_size(plan: List[Tuple[str, Tuple[int, ...], torch.dtype]], max_bytes: int) -> List[list]:
    """Split the planned (name, shape, dtype) entries, in order, into groups of at most max_bytes (a
    bigger tensor gets a group of its own): the tensors of each safetensors file."""
    groups: List[list] = [[]]
    size = 0
    for entry in plan:
        nbytes = math.prod(entry[1]) * entry[2].itemsize
        if groups[-1] and size + nbytes > max_bytes:
            groups.append([])
            size = 0
        groups[-1].append(entry)
        size += nbytes
    return groups


def meta_to_hf(
    meta_dir: Path,
    out_dir: Path,
    max_shard_size: int = DEFAULT_MAX_SHARD_SIZE,
    tokenizer: Optional[Path] = None,
) -> None:
    """Convert a Meta checkpoint (any number of consolidated.NN.pth shards) to a Hugging Face folder."""
    meta_dir, out_dir = Path(meta_dir), Path(out_dir)
    params, shards = open_checkpoint(meta_dir)
    if "tok_embeddings.weight" not in shards[0]:
        raise LlamaError(f"{meta_dir} has no tok_embeddings.weight. Check that it is a Llama checkpoint.")
    vocab = shards[0]["tok_embeddings.weight"].shape[0]
    args = ModelArgs(**{**params, "vocab_size": vocab})
    keys = meta_keys(args.n_layers)
    for i, shard in enumerate(shards):
        check_keys(shard, keys, f"Shard {i} of {meta_dir}")
    expected = full_shapes(args)
    plan = []  # (Hugging Face name, shape, dtype)
    for key in keys:
        parts = [shard[key] for shard in shards]
        dim = split_dim(key)
        shape = list(parts[0].shape)
        if dim is not None:
            shape[dim] = sum(p.shape[dim] for p in parts)
        _check_weight(key, tuple(shape), parts[0].dtype, expected[key], meta_dir, PARAMS_FILE)
        plan.append((hf_key(key), tuple(shape), parts[0].dtype))
    tokenizer = _find_tokenizer(meta_dir, tokenizer, parent=True)
    _check_tokenizer(tokenizer, vocab)
    check_out_dir(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    groups = _group_by_size(plan, max_shard_size)
    if len(groups) == 1:
        names = [SAFETENSORS_SINGLE]
    else:
        names = [f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors" for i in range(len(groups))]
    to_meta = {hf_key(key): key for key in keys}

    def produce(name: str) -> torch.Tensor:
        key = to_meta[name]
        tensor = read_slice(shards, key, 0, 1, args)  # the full tensor, joined from all shards
        heads = rotary_heads(key, args)
        return tensor if heads is None else meta_to_hf_rows(tensor, heads, f"{key} in {meta_dir}")

    total = sum(math.prod(shape) * dtype.itemsize for _, shape, dtype in plan)
    progress = Progress(total, enabled=True, label=f"Converting {meta_dir} to Hugging Face format")
    for file_name, group in zip(names, groups):
        _write_safetensors(out_dir / file_name, group, produce, progress)
    if len(groups) > 1:
        weight_map = {name: file_name for file_name, group in zip(names, groups) for name, _, _ in group}
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (out_dir / SAFETENSORS_INDEX).write_text(json.dumps(index, indent=2) + "\n")
    _copy_tokenizer(tokenizer, out_dir)
    config = hf_config(args, shards[0]["tok_embeddings.weight"].dtype)
    (out_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")  # last: marks the folder complete
    print(f"Wrote a Hugging Face checkpoint ({len(names)} safetensors file(s)) to {out_dir}", file=sys.stderr)


def hf_to_meta(hf_dir: Path, out_dir: Path, mp: int = 1, tokenizer: Optional[Path] = None) -> None:
    """Convert a Hugging Face folder to Meta's layout: `mp` consolidated.NN.pth shards split as
    fairscale splits them, params.json, and tokenizer.model."""
    hf_dir, out_dir = Path(hf_dir), Path(out_dir)
    config_path = hf_dir / CONFIG_FILE
    if not config_path.is_file():
        raise LlamaError(f"{config_path} not found. HF_DIR must be a Hugging Face model folder holding config.json.")
    params, (source,) = open_hf_checkpoint(hf_dir)
    vocab = source.shape("tok_embeddings.weight")[0]
    expected = full_shapes(ModelArgs(**{**params, "vocab_size": vocab}))
    for key in source:
        _check_weight(hf_key(key), source.shape(key), source.dtype(key), expected[key], hf_dir, CONFIG_FILE)
    tokenizer = _find_tokenizer(hf_dir, tokenizer, parent=False)
    _check_tokenizer(tokenizer, vocab)
    check_out_dir(out_dir)
    save_meta_checkpoint(params, [source], out_dir, mp, label=f"Converting {hf_dir} to Meta format")
    _copy_tokenizer(tokenizer, out_dir)
    print(f"Wrote a Meta checkpoint ({mp} shard(s)) to {out_dir}", file=sys.stderr)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m llama.convert", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    to_hf = commands.add_parser("to-hf", help="Meta checkpoint -> Hugging Face (config.json + safetensors)")
    to_hf.add_argument("meta_dir", type=Path, help="folder with params.json and consolidated.NN.pth")
    to_hf.add_argument("out_dir", type=Path, help="new, empty output folder")
    to_hf.add_argument("--max-shard-size", default="5GB", help="largest safetensors file (default 5GB)")
    to_hf.add_argument("--tokenizer", type=Path, help="tokenizer.model to copy (default: found in META_DIR or its parent)")
    from_hf = commands.add_parser("from-hf", help="Hugging Face checkpoint -> Meta (params.json + consolidated.NN.pth)")
    from_hf.add_argument("hf_dir", type=Path, help="folder with config.json and *.safetensors or pytorch_model*.bin")
    from_hf.add_argument("out_dir", type=Path, help="new, empty output folder")
    from_hf.add_argument("--mp", type=int, default=1, help="number of shards (model-parallel size), default 1")
    from_hf.add_argument("--tokenizer", type=Path, help="tokenizer.model to copy (default: found in HF_DIR)")
    args = parser.parse_args(argv)
    try:
        if args.command == "to-hf":
            meta_to_hf(args.meta_dir, args.out_dir, parse_size(args.max_shard_size), args.tokenizer)
        else:
            hf_to_meta(args.hf_dir, args.out_dir, args.mp, args.tokenizer)
    except LlamaError as err:
        print(f"Error: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
