"""CTranslate2 Whisper -> transformers Whisper: a reader for CTranslate2's model.bin (no ctranslate2 dependency)
and the conversion of its Whisper spec into a WhisperForConditionalGeneration directory with tokenizer."""

from __future__ import annotations

import json
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterator, Sequence

import torch

from salmonn.errors import BackboneError

CT2_MAX_BINARY_VERSION = 6  # the newest model.bin layout this reader knows

# --------------------------------------------------------------------------------------------------
# CTranslate2 model.bin parser
# --------------------------------------------------------------------------------------------------

# Type ids of CTranslate2's DataType enum (include/ctranslate2/types.h), as written since binary version 4.
CT2_DTYPES: dict[int, torch.dtype] = {
    0: torch.float32,
    1: torch.int8,
    2: torch.int16,
    3: torch.int32,
    4: torch.float16,
    5: torch.bfloat16,
}
# Binary versions < 4 stored an item size instead of a type id.
_CT2_ITEM_SIZES: dict[int, torch.dtype] = {4: torch.float32, 2: torch.int16, 1: torch.int8}


@dataclass
class CT2Model:
    """The content of a CTranslate2 model.bin: spec name, revision, variables and aliases."""

    binary_version: int
    spec: str
    revision: int
    variables: dict[str, torch.Tensor] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)


class _ChainReader:
    """Reads a sequence of files as one byte stream (for a model.bin split into parts)."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)
        self._files: Iterator[BinaryIO] = (open(p, "rb") for p in self.paths)
        self._cur: BinaryIO | None = next(self._files, None)
        self.offset = 0

    def read(self, n: int) -> bytes:
        """Read exactly n bytes, or raise BackboneError naming the file when it is truncated."""
        chunks, left = [], n
        while left and self._cur is not None:
            data = self._cur.read(left)
            chunks.append(data)
            left -= len(data)
            if left:
                self._cur.close()
                self._cur = next(self._files, None)
        self.offset += n - left
        if left:
            names = " + ".join(str(p) for p in self.paths)
            raise BackboneError(f"{names} is truncated or corrupted (needed {n} bytes at offset {self.offset})")
        return b"".join(chunks)

    def close(self) -> None:
        """Close the file being read and drop the rest."""
        if self._cur is not None:
            self._cur.close()
        self._cur, self._files = None, iter(())

    def at_end(self) -> bool:
        """Return True when every file has been read completely (and close them)."""
        while self._cur is not None:
            if self._cur.read(1):
                self._cur.close()
                return False
            self._cur.close()
            self._cur = next(self._files, None)
        return True


def _unpack(reader: _ChainReader, fmt: str) -> tuple:
    """Read one little-endian struct."""
    return struct.unpack("<" + fmt, reader.read(struct.calcsize("<" + fmt)))


def _read_string(reader: _ChainReader) -> str:
    """Read a CT2 string: uint16 length (incl. the trailing NUL), bytes, NUL."""
    (length,) = _unpack(reader, "H")
    raw = reader.read(length)
    if length == 0 or raw[-1] != 0:
        raise BackboneError(f"{reader.paths[0]}: corrupted string at offset {reader.offset}")
    return raw[:-1].decode("utf-8")


def _read_variable(reader: _ChainReader, version: int) -> tuple[str, torch.Tensor]:
    """Read one named tensor: name, rank, dims, dtype, byte count, data."""
    name = _read_string(reader)
    (rank,) = _unpack(reader, "B")
    shape = _unpack(reader, "I" * rank) if rank else ()
    (code,) = _unpack(reader, "B")
    table = CT2_DTYPES if version >= 4 else _CT2_ITEM_SIZES
    if code not in table:
        raise BackboneError(f"{reader.paths[0]}: variable {name!r} has unknown dtype code {code}")
    dtype = table[code]
    (count,) = _unpack(reader, "I")
    nbytes = count if version >= 4 else count * code
    expected = dtype.itemsize * (int(torch.Size(shape).numel()) if shape else 1)
    if nbytes != expected:
        msg = f"variable {name!r} has {nbytes} bytes, shape {shape} needs {expected}"
        raise BackboneError(f"{reader.paths[0]}: {msg}")
    return name, torch.frombuffer(bytearray(reader.read(nbytes)), dtype=dtype).reshape(shape)


def read_ct2_model(paths: Path | Sequence[Path]) -> CT2Model:
    """Parse a CTranslate2 model.bin (optionally split into parts, concatenated in order)."""
    paths = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    for p in paths:
        if not p.is_file():
            raise BackboneError(f"CTranslate2 model file {p} not found")
    reader = _ChainReader(paths)
    try:
        return _parse_ct2(reader)
    except (struct.error, UnicodeDecodeError, RuntimeError, ValueError) as exc:
        raise BackboneError(f"{paths[0]} is corrupted at offset {reader.offset}: {exc}") from exc
    finally:
        reader.close()


def _parse_ct2(reader: _ChainReader) -> CT2Model:
    """Parse the header, variables and aliases of a model.bin stream (layout of CT2's model_spec._serialize)."""
    (version,) = _unpack(reader, "I")
    if not 1 <= version <= CT2_MAX_BINARY_VERSION:
        raise BackboneError(f"{reader.paths[0]} is not a CTranslate2 model.bin (binary version {version})")
    spec, revision = ("", 1) if version < 2 else (_read_string(reader), _unpack(reader, "I")[0])
    model = CT2Model(version, spec, revision)
    (count,) = _unpack(reader, "I")
    for _ in range(count):
        name, tensor = _read_variable(reader, version)
        model.variables[name] = tensor
    if version >= 3:
        (n_aliases,) = _unpack(reader, "I")
        for _ in range(n_aliases):
            alias = _read_string(reader)
            model.aliases[alias] = _read_string(reader)
    if not reader.at_end():
        raise BackboneError(f"{reader.paths[-1]} has trailing bytes after the model: corrupted or parts misordered")
    return model


# --------------------------------------------------------------------------------------------------
# CTranslate2 Whisper -> transformers Whisper
# --------------------------------------------------------------------------------------------------

# Scalar flags of CT2's Transformer specs, with the only value HF Whisper supports.
_CT2_FLAGS = {
    "pre_norm": 1,
    "activation": 3,  # common_spec.Activation.GELU
    "alibi": 0,
    "alibi_use_positive_positions": 0,
    "scale_alibi": 0,
    "scale_embeddings": 0,
    "start_from_zero_embedding": 0,
    "rms_norm": 0,
    "multi_query_attention": 0,
}
_CT2_IGNORED = {"alignment_layer", "alignment_heads"}  # legacy alignment info, superseded by config.json


class _Taker:
    """Hands out CT2 variables by name (resolving aliases) and remembers which ones were used."""

    def __init__(self, model: CT2Model, dtype: torch.dtype) -> None:
        self.vars = model.variables
        self.aliases = dict(model.aliases)
        self.aliases |= {a + "_scale": t + "_scale" for a, t in model.aliases.items()}
        self.used: set[str] = set()
        self.dtype = dtype

    def has(self, name: str) -> bool:
        """Return True if the variable (or alias) exists."""
        return self.aliases.get(name, name) in self.vars

    def raw(self, name: str) -> torch.Tensor:
        """Take one variable as stored."""
        real = self.aliases.get(name, name)
        if real not in self.vars:
            raise BackboneError(f"CTranslate2 Whisper model has no variable {name!r}")
        self.used.add(real)
        return self.vars[real]

    def float(self, name: str) -> torch.Tensor:
        """Take one variable as float (dequantizing int8/int16 weights with their '_scale')."""
        t = self.raw(name)
        if t.dtype in (torch.int8, torch.int16):
            scale = self.raw(name + "_scale").float()
            scale = scale.reshape(-1, *([1] * (t.dim() - 1))) if scale.numel() > 1 else scale
            t = t.float() / scale
        return t.to(self.dtype).contiguous()

    def scalar(self, name: str) -> int:
        """Take one scalar variable as a Python int."""
        return int(self.raw(name).reshape(-1)[0].item())

    def leftovers(self) -> list[str]:
        """Names of stored variables that were never used."""
        return sorted(set(self.vars) - self.used)


def _count_layers(taker: _Taker, scope: str) -> int:
    """Count the layer_N scopes under encoder/ or decoder/."""
    n = 0
    while any(k.startswith(f"{scope}/layer_{n}/") for k in taker.vars):
        n += 1
    return n


def _linear(taker: _Taker, src: str, dst: str, sd: dict[str, torch.Tensor]) -> None:
    """Copy a CT2 LinearSpec to an nn.Linear."""
    sd[dst + ".weight"] = taker.float(src + "/weight")
    if taker.has(src + "/bias"):
        sd[dst + ".bias"] = taker.float(src + "/bias")


def _norm(taker: _Taker, src: str, dst: str, sd: dict[str, torch.Tensor]) -> None:
    """Copy a CT2 LayerNormSpec (gamma, beta) to an nn.LayerNorm."""
    sd[dst + ".weight"] = taker.float(src + "/gamma")
    sd[dst + ".bias"] = taker.float(src + "/beta")


def _split_linear(taker: _Taker, src: str, dsts: Sequence[str], sd: dict[str, torch.Tensor]) -> None:
    """Split a fused CT2 linear (q|k|v or k|v) into HF projections; the k bias must be zero and is dropped."""
    weights = taker.float(src + "/weight").chunk(len(dsts), dim=0)
    biases = taker.float(src + "/bias").chunk(len(dsts), dim=0) if taker.has(src + "/bias") else [None] * len(dsts)
    for dst, w, b in zip(dsts, weights, biases):
        sd[dst + ".weight"] = w.clone()
        if b is None:
            continue
        if dst.endswith("k_proj"):
            if b.abs().max().item() != 0:
                raise BackboneError(f"{src}/bias has a non-zero key bias, which HF Whisper cannot hold")
        else:
            sd[dst + ".bias"] = b.clone()


def _attention(taker: _Taker, src: str, dst: str, sd: dict[str, torch.Tensor], cross: bool) -> None:
    """Copy a CT2 MultiHeadAttentionSpec to an HF WhisperAttention."""
    proj = [f"{dst}.{p}_proj" for p in "qkv"]
    if cross:
        _linear(taker, src + "/linear_0", proj[0], sd)
        _split_linear(taker, src + "/linear_1", proj[1:], sd)
        _linear(taker, src + "/linear_2", dst + ".out_proj", sd)
    else:
        _split_linear(taker, src + "/linear_0", proj, sd)
        _linear(taker, src + "/linear_1", dst + ".out_proj", sd)


def _layer(taker: _Taker, scope: str, i: int, sd: dict[str, torch.Tensor]) -> None:
    """Copy one encoder or decoder layer."""
    src, dst = f"{scope}/layer_{i}", f"model.{scope}.layers.{i}"
    _norm(taker, src + "/self_attention/layer_norm", dst + ".self_attn_layer_norm", sd)
    _attention(taker, src + "/self_attention", dst + ".self_attn", sd, cross=False)
    if scope == "decoder":
        _norm(taker, src + "/attention/layer_norm", dst + ".encoder_attn_layer_norm", sd)
        _attention(taker, src + "/attention", dst + ".encoder_attn", sd, cross=True)
    _norm(taker, src + "/ffn/layer_norm", dst + ".final_layer_norm", sd)
    _linear(taker, src + "/ffn/linear_0", dst + ".fc1", sd)
    _linear(taker, src + "/ffn/linear_1", dst + ".fc2", sd)


def _check_flags(taker: _Taker) -> dict[str, int]:
    """Validate the CT2 scalar flags against HF Whisper; return the head counts."""
    heads = {}
    for name, t in list(taker.vars.items()):
        if t.dim() != 0:
            continue
        scope, _, key = name.rpartition("/")
        if key == "num_heads":
            heads[scope] = taker.scalar(name)
        elif key in _CT2_IGNORED:
            taker.raw(name)
        elif key in _CT2_FLAGS:
            value = taker.scalar(name)
            if value != _CT2_FLAGS[key]:
                raise BackboneError(f"CT2 Whisper has {name}={value}; HF Whisper needs {_CT2_FLAGS[key]}")
    if set(heads) != {"encoder", "decoder"}:
        raise BackboneError(f"CT2 Whisper model lacks encoder/decoder num_heads (found {sorted(heads)})")
    return heads


def ct2_whisper_state_dict(
    model: CT2Model, dtype: torch.dtype = torch.float32
) -> tuple[dict[str, torch.Tensor], dict]:
    """Map every CT2 Whisper variable to HF WhisperForConditionalGeneration names; return (state_dict, dims)."""
    if model.spec != "WhisperSpec":
        raise BackboneError(f"model.bin holds a {model.spec or 'pre-v2'} model, not a WhisperSpec")
    taker = _Taker(model, dtype)
    heads = _check_flags(taker)
    sd: dict[str, torch.Tensor] = {}
    for name in ("conv1", "conv2"):
        _linear(taker, f"encoder/{name}", f"model.encoder.{name}", sd)
    for scope in ("encoder", "decoder"):
        sd[f"model.{scope}.embed_positions.weight"] = taker.float(f"{scope}/position_encodings/encodings")
        _norm(taker, f"{scope}/layer_norm", f"model.{scope}.layer_norm", sd)
    sd["model.decoder.embed_tokens.weight"] = taker.float("decoder/embeddings/weight")
    tied = model.aliases.get("decoder/projection/weight") == "decoder/embeddings/weight"
    sd["proj_out.weight"] = taker.float("decoder/projection/weight")
    tied = tied or torch.equal(sd["proj_out.weight"], sd["model.decoder.embed_tokens.weight"])
    layers = {s: _count_layers(taker, s) for s in ("encoder", "decoder")}
    for scope, n in layers.items():
        for i in range(n):
            _layer(taker, scope, i, sd)
    leftovers = taker.leftovers()
    if leftovers:
        raise BackboneError(f"CT2 Whisper variables not mapped to HF Whisper: {', '.join(leftovers)}")
    dims = {"heads": heads, "layers": layers, "tied": tied}
    return sd, dims


def _special_ids(vocab: list[str]) -> dict[str, int]:
    """Map Whisper's special tokens to ids, raising if a required one is missing from the vocabulary."""
    ids = {tok: i for i, tok in enumerate(vocab) if tok.startswith("<|")}
    for tok in ("<|endoftext|>", "<|startoftranscript|>", "<|notimestamps|>", "<|transcribe|>", "<|translate|>"):
        if tok not in ids:
            raise BackboneError(f"the CT2 Whisper vocabulary lacks the special token {tok}")
    return ids


def _whisper_config(sd: dict[str, torch.Tensor], dims: dict, vocab: list[str], ct2_cfg: dict):
    """Build the transformers WhisperConfig matching the converted weights."""
    from transformers import WhisperConfig

    ids = _special_ids(vocab)
    eot, sot = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    vocab_size, d_model = sd["model.decoder.embed_tokens.weight"].shape
    return WhisperConfig(
        vocab_size=vocab_size,
        num_mel_bins=sd["model.encoder.conv1.weight"].shape[1],
        d_model=d_model,
        encoder_layers=dims["layers"]["encoder"],
        decoder_layers=dims["layers"]["decoder"],
        encoder_attention_heads=dims["heads"]["encoder"],
        decoder_attention_heads=dims["heads"]["decoder"],
        encoder_ffn_dim=sd["model.encoder.layers.0.fc1.weight"].shape[0],
        decoder_ffn_dim=sd["model.decoder.layers.0.fc1.weight"].shape[0],
        max_source_positions=sd["model.encoder.embed_positions.weight"].shape[0],
        max_target_positions=sd["model.decoder.embed_positions.weight"].shape[0],
        activation_function="gelu",
        pad_token_id=eot,
        bos_token_id=eot,
        eos_token_id=eot,
        decoder_start_token_id=sot,
        suppress_tokens=None,  # generation settings live in generation_config.json only
        begin_suppress_tokens=None,
        tie_word_embeddings=dims["tied"],
    )


def _whisper_generation_config(config, vocab: list[str], ct2_cfg: dict):
    """Build the Whisper GenerationConfig (languages, tasks, special token ids) from the CT2 vocabulary."""
    from transformers import GenerationConfig

    ids = _special_ids(vocab)
    multilingual = config.vocab_size >= 51865  # openai: 51865 multilingual, 51864 English-only
    gen = GenerationConfig(
        decoder_start_token_id=config.decoder_start_token_id,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        max_length=config.max_target_positions,
        suppress_tokens=ct2_cfg.get("suppress_ids", []),
        begin_suppress_tokens=ct2_cfg.get("suppress_ids_begin", [220, config.eos_token_id]),
        no_timestamps_token_id=ids["<|notimestamps|>"],
        prev_sot_token_id=ids.get("<|startofprev|>"),
        max_initial_timestamp_index=50,
        return_timestamps=False,
        is_multilingual=multilingual,
        alignment_heads=ct2_cfg.get("alignment_heads"),
    )
    if multilingual:
        gen.lang_to_id = {vocab[i]: i for i in ct2_cfg.get("lang_ids", [])}
        gen.task_to_id = {"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]}
    return gen


def _read_vocabulary(ct2_dir: Path) -> list[str]:
    """Read CT2's vocabulary.json (a list) or vocabulary.txt (one token a line)."""
    if (ct2_dir / "vocabulary.json").is_file():
        return json.loads((ct2_dir / "vocabulary.json").read_text(encoding="utf-8"))
    path = ct2_dir / "vocabulary.txt"
    if not path.is_file():
        raise BackboneError(f"{ct2_dir} has no vocabulary.txt or vocabulary.json")
    tokens = path.read_text(encoding="utf-8").split("\n")
    return tokens[:-1] if tokens and tokens[-1] == "" else tokens


def _save_tokenizer(ct2_dir: Path, vocab: list[str], out_dir: Path) -> None:
    """Write a WhisperTokenizer: CT2's tokenizer.json plus the timestamp tokens only in the vocabulary."""
    from tokenizers import AddedToken, Tokenizer
    from transformers import WhisperTokenizer

    if not (ct2_dir / "tokenizer.json").is_file():
        raise BackboneError(f"{ct2_dir} has no tokenizer.json: cannot build the Whisper tokenizer")
    tok = Tokenizer.from_file(str(ct2_dir / "tokenizer.json"))
    n = tok.get_vocab_size(with_added_tokens=True)
    mismatch = [i for i in range(n) if tok.id_to_token(i) != vocab[i]]
    if n > len(vocab) or mismatch:
        raise BackboneError(f"{ct2_dir}: tokenizer.json disagrees with the vocabulary (e.g. ids {mismatch[:5]})")
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in vocab[n:]])
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        tok.save(str(Path(tmp) / "tokenizer.json"))
        cfg = {"tokenizer_class": "WhisperTokenizer", "model_max_length": 1024, "errors": "replace"}
        cfg |= {k: "<|endoftext|>" for k in ("bos_token", "eos_token", "unk_token", "pad_token")}
        # Whisper's decode takes the token after the last special one as the first timestamp.
        specials = sorted((i, t.content) for i, t in tok.get_added_tokens_decoder().items() if t.special)
        cfg["extra_special_tokens"] = [t for _, t in specials]
        (Path(tmp) / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2))
        WhisperTokenizer.from_pretrained(tmp).save_pretrained(out_dir)
    cfg_path = out_dir / "tokenizer_config.json"
    saved = json.loads(cfg_path.read_text())
    saved = {k: v for k, v in saved.items() if k not in ("is_local", "local_files_only")}
    cfg_path.write_text(json.dumps(saved, indent=2))


def _check_against_hf(sd: dict[str, torch.Tensor], config) -> None:
    """Raise unless the state dict fills every parameter of an HF Whisper built from config, shapes included."""
    from transformers import WhisperForConditionalGeneration

    with torch.device("meta"):
        ref = WhisperForConditionalGeneration(config).state_dict()
    missing = sorted(set(ref) - set(sd))
    extra = sorted(set(sd) - set(ref))
    shapes = sorted(k for k in set(ref) & set(sd) if ref[k].shape != sd[k].shape)
    if missing or extra or shapes:
        msg = f"missing {missing}, unexpected {extra}, wrong shape {shapes}"
        raise BackboneError(f"CT2->HF Whisper mismatch: {msg}")


def convert_ct2_whisper(
    ct2_dir: Path, out_dir: Path, model_bin: Sequence[Path] | None = None, dtype: torch.dtype = torch.float32
) -> Path:
    """Convert a CTranslate2 Whisper directory to a transformers Whisper directory (weights in dtype)."""
    from safetensors.torch import save_file
    from transformers import WhisperFeatureExtractor

    ct2_dir, out_dir = Path(ct2_dir), Path(out_dir)
    bins = list(model_bin) if model_bin is not None else [ct2_dir / "model.bin"]
    sd, dims = ct2_whisper_state_dict(read_ct2_model(bins), dtype)
    vocab = _read_vocabulary(ct2_dir)
    if len(vocab) != sd["model.decoder.embed_tokens.weight"].shape[0]:
        rows = sd["model.decoder.embed_tokens.weight"].shape[0]
        raise BackboneError(f"{ct2_dir}: vocabulary has {len(vocab)} tokens, embeddings have {rows}")
    cfg_path = ct2_dir / "config.json"
    ct2_cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
    config = _whisper_config(sd, dims, vocab, ct2_cfg)
    _check_against_hf(sd, config)
    if config.tie_word_embeddings:
        del sd["proj_out.weight"]
    out_dir.mkdir(parents=True, exist_ok=True)
    config.architectures = ["WhisperForConditionalGeneration"]
    config.save_pretrained(out_dir)
    _whisper_generation_config(config, vocab, ct2_cfg).save_pretrained(out_dir)
    save_file(sd, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(out_dir)
    _save_tokenizer(ct2_dir, vocab, out_dir)
    return out_dir
