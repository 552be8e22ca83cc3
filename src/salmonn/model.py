"""SALMONN: Whisper + BEATs -> window-level Q-Former -> LoRA LLM.

Attribute names are the reference's (`speech_encoder`, `ln_speech`, `beats`, `ln_audio`, `speech_Qformer`,
`speech_query_tokens`, `speech_llama_proj`, `llama_model`), so `state_dict()` keys are exactly the keys of the
released `salmonn_v1.pth` / `salmonn_7b.pth`.

This module composes and computes: audio -> tokens -> loss. Building from a config is `salmonn.builder`
(`load_model`), prompt text and LLM input pieces `salmonn.prompting`, generation `salmonn.decoding`, batches,
manifests and errors per item `salmonn.inference`, whose `generate` and `score` are bound here as methods (as
openai/whisper binds `transcribe`): they take the model as their first argument, typed under TYPE_CHECKING.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from transformers import WhisperFeatureExtractor
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from . import audio as A
from . import whisper as W
from .checkpoint import IGNORED_REFERENCE_KEYS, check_keys, read_state_dict, save_ours, save_reference_pth
from .config import Config, ModelConfig, config_to_dict
from .errors import ConfigError, SalmonnError
from .features import whisper_log_mel
from .frames import MAX_FRAMES, SAMPLES_PER_FRAME, frames_for, tokens_for_frames, window_size
from .inference import generate as generate_function
from .inference import score as score_function
from .prompting import IGNORE_INDEX, assemble, prompt_pieces, target_piece
from .qformer import QFormer, fuse_encoders, split_windows

AudioInput = Any  # path, bytes, np.ndarray / torch.Tensor (with sample_rate), or (array, sample_rate)


@dataclasses.dataclass
class EncoderOutput:
    """The frozen encoders' outputs for a batch of <=30 s segments (nothing here is trained: training caches it)."""
    speech: torch.Tensor  # Whisper [B, T, Cs]: T = 1500, or the longest segment's own frames (fast mode)
    audio: torch.Tensor | None = None  # BEATs [B, T', Ca]; None without BEATs
    audio_mask: torch.Tensor | None = None  # BEATs [B, T'], True = padding a segment would not have alone
    speech_frames: torch.Tensor | None = None  # [B] each segment's own Whisper frames (fast mode); None: 30 s


def add_lora(llm: nn.Module, m: ModelConfig) -> nn.Module:
    """The LLM wrapped with trainable peft LoRA adapters on `m.lora_target_modules`."""
    from peft import LoraConfig, get_peft_model
    lora = LoraConfig(task_type="CAUSAL_LM", r=m.lora_rank, lora_alpha=m.lora_alpha, lora_dropout=m.lora_dropout,
                      target_modules=list(m.lora_target_modules), inference_mode=False)
    return get_peft_model(llm, lora)


def attach_audio_side(module: nn.Module, m: ModelConfig, speech_encoder: WhisperEncoder, beats: nn.Module | None,
                      llm_width: int) -> None:
    """Give `module` the audio side under the reference's names (encoders, layer norms, Q-Former, queries,
    projection to `llm_width`): SALMONN's and the vLLM plugin's audio tower's."""
    module.speech_encoder = speech_encoder
    module.ln_speech = nn.LayerNorm(speech_encoder.config.d_model)
    module.beats = beats
    width = speech_encoder.config.d_model
    if beats is not None:
        module.ln_audio = nn.LayerNorm(beats.cfg.encoder_embed_dim)
        width += beats.cfg.encoder_embed_dim
    module.speech_Qformer = QFormer(m.qformer_hidden_size, m.qformer_num_attention_heads,
                                    m.qformer_intermediate_size, m.qformer_num_hidden_layers, width)
    module.speech_query_tokens = nn.Parameter(torch.zeros(1, m.num_speech_query_token, m.qformer_hidden_size))
    nn.init.normal_(module.speech_query_tokens, std=0.02)
    module.speech_llama_proj = nn.Linear(m.qformer_hidden_size, llm_width)


class SALMONN(nn.Module):
    def __init__(self, config: Config, speech_encoder: WhisperEncoder, feature_extractor: WhisperFeatureExtractor,
                 beats: nn.Module | None, llm: nn.Module, tokenizer):
        super().__init__()
        m = config.model
        if not m.use_speech_Qformer:
            raise ConfigError("model.use_speech_Qformer: False is not supported (the reference ships only the Q-Former)")
        self.config = config
        self.feature_extractor, self.tokenizer = feature_extractor, tokenizer
        attach_audio_side(self, m, speech_encoder, beats, llm.config.hidden_size)
        llm.requires_grad_(False)
        self.llama_model = add_lora(llm, m) if m.lora else llm
        self._unmerged_weights: dict[nn.Module, torch.Tensor] = {}  # LoRA layer -> its base weight before merging
        self._freeze()
        self.set_lora_scale(m.lora_scale)

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
        if mode or not self.config.model.merge_lora:
            self.unmerge_lora()  # training needs the adapters apart (their gradients)
        else:
            self.merge_lora()
        return self

    @property
    def device(self) -> torch.device:
        return self.speech_query_tokens.device

    @property
    def causal_lm(self) -> nn.Module:
        """The LLM's causal-LM module under any peft wrapper (`.model` the decoder, `.lm_head` the head)."""
        llm = self.llama_model
        return llm.get_base_model() if hasattr(llm, "get_base_model") else llm

    @property
    def context_length(self) -> int:
        """Positions the LLM was trained for: prompt, audio tokens and answer must fit in them."""
        return int(self.causal_lm.config.max_position_embeddings)

    # ------------------------------------------------------------------ checkpoints and LoRA scale
    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The trainable tensors under the reference's key names (what the reference trainer saves)."""
        return {k: v for k, v in self.state_dict(keep_vars=True).items() if v.requires_grad}

    def load_checkpoint(self, path: str | Path, allow_missing: Sequence[str] = ()) -> None:
        """Load a SALMONN checkpoint strictly: every trainable tensor must be there, nothing unknown may be.

        allow_missing: key substrings that may be absent (e.g. "lora_" when a stage-1 checkpoint seeds stage 2).
        """
        state = read_state_dict(path)
        required = {k for k in self.trainable_state_dict() if not any(s in k for s in allow_missing)}
        usable = check_keys(self.state_dict(), state, required, str(path), IGNORED_REFERENCE_KEYS)
        merged = bool(self._unmerged_weights)
        self.unmerge_lora()  # new adapters are merged from the original weights
        self.load_state_dict(usable, strict=False)
        if merged:
            self.merge_lora()

    def save_checkpoint(self, directory: str | Path) -> Path:
        """Our format: `trainable.safetensors` (reference key names) + `config.json`."""
        return save_ours(self.trainable_state_dict(), config_to_dict(self.config), directory)

    def export_reference(self, path: str | Path) -> Path:
        """The reference trainer's `.pth` layout ({"model": trainable tensors})."""
        return save_reference_pth(self.trainable_state_dict(), path)

    def set_lora_scale(self, scale: float) -> None:
        """Multiply LoRA's alpha / r by `scale` at run time (1.0 = as trained; activation uses 0.5). Merged
        adapters are merged again at the new scale."""
        if scale == getattr(self, "lora_scale", None):
            return
        merged = bool(self._unmerged_weights)
        self.unmerge_lora()
        m = self.config.model
        for module in self._lora_layers():
            module.scaling["default"] = scale * m.lora_alpha / m.lora_rank
        self.lora_scale = scale
        if merged:
            self.merge_lora()

    def _lora_layers(self) -> list[nn.Module]:
        """The LLM's peft LoRA layers (those with a "default" adapter)."""
        return [module for module in self.llama_model.modules()
                if isinstance(getattr(module, "scaling", None), dict) and "default" in module.scaling]

    def merge_lora(self) -> None:
        """Fold each adapter (at the current scale) into its base weight, so inference runs no adapter matmuls
        (model.merge_lora; eval() calls this). The original weights are kept, so unmerging restores them exactly.
        Quantized LLMs, and models in a distributed (DDP/FSDP) run, keep their adapters apart."""
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if self._unmerged_weights or self.config.model.quantize != "none" or self.config.model.low_resource \
                or distributed:  # DDP/FSDP own the parameters' storage: merging is for single-process inference
            return
        with torch.no_grad():
            for layer in self._lora_layers():
                if "default" not in getattr(layer, "lora_A", {}):
                    continue
                base = layer.get_base_layer()
                delta = layer.get_delta_weight("default")  # [out, in] = scale * B @ A
                self._unmerged_weights[layer] = base.weight.data
                base.weight.data = (base.weight.data.float() + delta.float()).to(base.weight.dtype)
                layer.merged_adapters.append("default")  # peft's forward now skips the adapter

    def unmerge_lora(self) -> None:
        """Put the original base weights back (train() calls this: the adapters are trained apart)."""
        for layer, weight in self._unmerged_weights.items():
            base = layer.get_base_layer()
            base.weight.data = weight.to(base.weight.device)
            layer.merged_adapters.remove("default")
        self._unmerged_weights.clear()

    # ------------------------------------------------------------------ audio -> tokens
    def encode(self, spectrogram: torch.Tensor, raw_wav: torch.Tensor | None = None,
               padding_mask: torch.Tensor | None = None, num_samples: torch.Tensor | None = None) -> EncoderOutput:
        """Whisper log-mel [B, 80, 3000] (+ raw 16 kHz audio [B, N] and its padding mask for BEATs) -> the frozen
        encoders' outputs. With model.whisper_full_window=False, Whisper runs on each segment's own frames only;
        the lengths come from `num_samples`, else `padding_mask`, else raw_wav's width."""
        m = self.config.model
        whisper_dtype = self.speech_encoder.conv1.weight.dtype
        frames = None
        if m.whisper_full_window:
            speech = self.speech_encoder(spectrogram.to(whisper_dtype)).last_hidden_state
        else:
            if num_samples is None:
                width = raw_wav.shape[1] if raw_wav is not None else MAX_FRAMES * SAMPLES_PER_FRAME
                num_samples = (~padding_mask).sum(-1) if padding_mask is not None else \
                    torch.full((spectrogram.shape[0],), width)
            frames = frames_for(num_samples).to(spectrogram.device)
            speech = W.encode(self.speech_encoder, spectrogram.to(whisper_dtype), frames)
        out = EncoderOutput(speech, speech_frames=frames)
        if self.beats is not None and raw_wav is not None:
            exact = not m.reference_batching
            out.audio, mask = self.beats.extract_features(raw_wav, padding_mask, exact_padding=exact)
            out.audio_mask = mask if exact else None
        return out

    def connect(self, enc: EncoderOutput) -> list[torch.Tensor]:
        """Encoder outputs -> layer norms -> Q-Former per window -> each segment's LLM-space tokens [L_b, d_llm].

        audio_mask zeroes BEATs frames a segment would not have on its own; with speech_frames (fast mode) only
        each segment's own windows go through the Q-Former.
        """
        m = self.config.model
        dtype = self.ln_speech.weight.dtype
        speech = self.ln_speech(enc.speech.to(dtype))  # [B, T, Cs]
        audio = None
        if enc.audio is not None:
            audio = self.ln_audio(enc.audio.to(dtype))  # [B, T', Ca]
            if enc.audio_mask is not None:  # padded frames become the zeros a single segment gets from padding
                audio = audio.masked_fill(enc.audio_mask[..., None], 0.0)
        x = fuse_encoders(speech, audio)  # [B, T, C]
        batch = x.shape[0]
        if m.window_level_Qformer:
            x = split_windows(x, window_size(m.second_per_window), window_size(m.second_stride))  # [B * L, k, C]
        windows_per_row = x.shape[0] // batch  # 1 without the window-level Q-Former
        counts = [windows_per_row * m.num_speech_query_token] * batch
        if enc.speech_frames is not None:  # only each segment's own windows
            tokens = tokens_for_frames(enc.speech_frames.to(x.device), m)  # [B]
            own = torch.div(tokens, m.num_speech_query_token, rounding_mode="floor")  # [B] windows per segment
            x = x[(torch.arange(windows_per_row, device=x.device)[None, :] < own[:, None]).reshape(-1)]  # [W, k, C]
            counts = tokens.tolist()
        queries = self.speech_query_tokens.expand(x.shape[0], -1, -1)  # [W, Q, H]
        out = self.speech_llama_proj(self.speech_Qformer(queries, x))  # [W, Q, d_llm]
        return list(out.reshape(-1, out.shape[-1]).split(counts))  # [W * Q, d_llm] -> B x [L_b * Q, d_llm]

    def encode_segments(self, segments: list[np.ndarray]) -> list[torch.Tensor]:
        """A batch of <=30 s waveforms -> each one's audio tokens [L_b, d_llm] (88 per 30 s window, faithful)."""
        spectrogram = whisper_log_mel(segments, self.feature_extractor).to(self.device)
        raw_wav, padding_mask = A.batch_waveforms(segments)
        return self.connect(self.encode(spectrogram, raw_wav.to(self.device), padding_mask.to(self.device)))

    def clip_segments(self, item: AudioInput, sample_rate: int | None = None):
        """One clip's <=30 s segments under this model's audio settings, decoded as they are needed."""
        m = self.config.model
        return A.clip_segments(item, sample_rate, channel=m.channel, resample=m.resample, long_audio=m.long_audio,
                               max_seconds=m.max_audio_seconds)

    def encode_audio(self, items: Sequence[AudioInput], sample_rate: int | None = None, *,
                     errors: str = "raise") -> list[torch.Tensor | SalmonnError]:
        """Audio tokens per clip [L_i, d_llm]; long clips are the concatenation of their 30 s segments' tokens.

        Files are decoded as their segments are needed and segments are encoded `model.encode_batch_size` at a
        time, so memory holds one chunk of segments and encoder activations plus the tokens, whatever the lengths.
        errors="return" puts an item's SalmonnError in its place instead of raising (the others still encode).
        """
        if errors not in ("raise", "return"):
            raise ValueError(f"errors must be 'raise' or 'return', got {errors!r}")
        chunk = max(1, int(self.config.model.encode_batch_size))
        tokens_per_clip: list[list[torch.Tensor]] = [[] for _ in items]
        failed: dict[int, SalmonnError] = {}
        pending: list[tuple[int, np.ndarray]] = []  # (clip index, segment) not yet encoded

        def flush() -> None:
            for (index, _), tokens in zip(pending, self.encode_segments([segment for _, segment in pending])):
                tokens_per_clip[index].append(tokens)
            pending.clear()

        for index, item in enumerate(items):
            try:
                for segment in self.clip_segments(item, sample_rate):
                    pending.append((index, segment))
                    if len(pending) == chunk:
                        flush()
            except SalmonnError as err:
                if errors == "raise":
                    raise
                failed[index] = err  # a problem found mid-file (NaN, cut off, too long): drop what it had
                tokens_per_clip[index] = []
                pending[:] = [p for p in pending if p[0] != index]
        if pending:
            flush()
        return [failed[i] if i in failed else torch.cat(rows) for i, rows in enumerate(tokens_per_clip)]

    # ------------------------------------------------------------------ text -> LLM space
    def embed(self, ids: list[int]) -> torch.Tensor:
        """Token ids -> the LLM's input embeddings [n, d]."""
        table = self.llama_model.get_input_embeddings()
        return table(torch.tensor(ids, dtype=torch.long, device=self.device))

    def token_ids(self, text: str) -> list[int]:
        """Text -> token ids, without special tokens."""
        return self.tokenizer(text, add_special_tokens=False).input_ids

    # ------------------------------------------------------------------ loss
    def forward(self, audio_tokens: list[torch.Tensor], prompts: list[str], texts: list[str | list[int]],
                return_logits: bool = True):
        """Mean next-token loss over all target tokens of the batch (the reference's training loss), logits
        [B, L, vocab] and labels [B, L]. Prompts are full (templated, with <SpeechHere>).

        return_logits=False (training) applies the LM head to the target positions only: the same loss without
        the [B, L, vocab] logits, which are a fifth of a small LLM's compute (SmolLM2: 49k vocab); logits is None.
        """
        rows = [prompt_pieces(self, p, a) + [target_piece(self, t)] for p, a, t in zip(prompts, audio_tokens, texts)]
        embeds, mask, labels, positions = assemble(rows, "right", self.config.model.reference_batching)
        if return_logits:
            out = self.llama_model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, labels=labels)
            return out.loss, out.logits, labels
        logits, targets, _ = self.target_logits(embeds, mask, labels, positions)
        return nn.functional.cross_entropy(logits.float(), targets), None, labels

    def target_logits(self, embeds: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor,
                      positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The LM head at the positions whose next token is a target only: logits [n_targets, vocab], targets
        [n_targets] (row after row) and each row's target count [B] (the full [B, L, vocab] logits of a long clip
        would take gigabytes)."""
        causal_lm = self.causal_lm
        hidden = causal_lm.model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions).last_hidden_state
        targets = labels[:, 1:]  # position t predicts token t + 1
        keep = targets != IGNORE_INDEX  # [B, L-1]
        return causal_lm.lm_head(hidden[:, :-1][keep]), targets[keep], keep.sum(1)

    def training_loss(self, audio: Sequence[AudioInput], prompts: list[str], texts: list[str]) -> torch.Tensor:
        """Loss of full prompts (templated, with <SpeechHere>) and target texts for a batch of clips."""
        return self(self.encode_audio(audio), prompts, texts)[0]

    @torch.no_grad()
    def sequence_logprob(self, audio_tokens: torch.Tensor, prompt: str, ids: list[int]) -> float:
        """Sum of log-probabilities of the given continuation ids (no end symbol added) after a full prompt."""
        loss, _, labels = self([audio_tokens], [prompt], [list(ids)])
        return -float(loss) * int((labels[:, 1:] != IGNORE_INDEX).sum())

    # ------------------------------------------------------------------ the Python API (salmonn.inference)
    generate = generate_function  # model.generate(audio, prompt, **options): salmonn.inference.generate
    score = score_function  # model.score(audio, prompt, text): salmonn.inference.score
