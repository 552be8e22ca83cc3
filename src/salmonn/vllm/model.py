"""SALMONN as a vLLM model: the audio side is this package's own (Whisper [+ BEATs] -> window-level Q-Former ->
projection, the numbers of `salmonn infer`), the LLM is vLLM's own `LlamaForCausalLM` (paged attention, continuous
batching, tensor/pipeline parallel) with LoRA merged at export (`salmonn export --vllm`).

Audio is read by this package's audio code (any rate and channel count, resampled with soxr; `max_audio_seconds`
refused with our message), cut into 30 s segments, and each clip's placeholder token is expanded into exactly the
number of audio tokens `salmonn.frames.clip_tokens` counts. Registered with vLLM by `salmonn.vllm.register`
(the `vllm.general_plugins` entry point).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from transformers import BatchFeature, WhisperConfig, WhisperFeatureExtractor
from transformers.models.whisper.modeling_whisper import WhisperEncoder
from vllm.config import VllmConfig
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.inputs import MultiModalFieldConfig, MultiModalKwargsItems
from vllm.multimodal.parse import AudioProcessorItems, MultiModalDataItems, MultiModalDataParser
from vllm.multimodal.processing import (BaseDummyInputsBuilder, BaseMultiModalProcessor, BaseProcessingInfo,
                                        PromptReplacement, PromptUpdate)
from vllm.sequence import IntermediateTensors

from vllm.model_executor.models.interfaces import MultiModalEmbeddings, SupportsMultiModal, SupportsPP
from vllm.model_executor.models.utils import init_vllm_registered_model, maybe_prefix

from .. import audio as A
from ..beats import BEATs, BEATsConfig
from ..config import Config, GenerateConfig, ModelConfig, build_section
from ..errors import SalmonnError
from ..frames import SAMPLE_RATE, SEGMENT_SAMPLES, clip_tokens
from ..model import SALMONN, attach_audio_side
from ..prompting import AUDIO_PLACEHOLDER
from .export import FEATURE_EXTRACTOR_DIR, LLM_PREFIX, TOWER_PREFIX


def salmonn_config(hf_config) -> Config:
    """Our Config from the exported config.json's `salmonn` section."""
    section = hf_config.salmonn
    return Config(model=build_section(ModelConfig, section["model"], "config.json salmonn.model"),
                  generate=build_section(GenerateConfig, section["generate"], "config.json salmonn.generate"))


class AudioTower(nn.Module):
    """The audio side of SALMONN under the reference's attribute names; it computes with SALMONN's own methods."""

    encode = SALMONN.encode
    connect = SALMONN.connect
    encode_segments = SALMONN.encode_segments
    device = SALMONN.device

    def __init__(self, config: Config, whisper: dict, beats: dict | None, llm_width: int, feature_dir: str):
        super().__init__()
        self.config = config
        self.feature_extractor = WhisperFeatureExtractor.from_pretrained(feature_dir)
        attach_audio_side(self, config.model, WhisperEncoder(WhisperConfig.from_dict(whisper)),
                          BEATs(BEATsConfig.from_dict(beats)) if beats is not None else None, llm_width)

    def clip_tokens(self, segments: Sequence[np.ndarray]) -> torch.Tensor:
        """One clip's 16 kHz segments -> its audio tokens [L, d_llm], `model.encode_batch_size` segments at a time
        (what `SALMONN.encode_audio` does for one clip)."""
        chunk = max(1, int(self.config.model.encode_batch_size))
        return torch.cat([torch.cat(self.encode_segments(list(segments[i:i + chunk])))
                          for i in range(0, len(segments), chunk)])


# ---------------------------------------------------------------------------------------------------- processing
class Segments(list):
    """One clip, parsed: its 16 kHz mono segments (vLLM parses items again on a cache miss: they pass through)."""


def _with_rate(item) -> bool:
    """An (array, sample rate) pair (vLLM may hand it over as a list)."""
    return isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[1], (int, float)) \
        and not isinstance(item[0], (int, float))


class SalmonnDataParser(MultiModalDataParser):
    """Audio items -> each clip's 16 kHz mono segments, read by this package's audio code (its errors, its
    resampling, its channel rule and `max_audio_seconds`)."""

    def __init__(self, model_config: ModelConfig, **kwargs):
        super().__init__(**kwargs)
        self.model_config = model_config

    def _parse_audio_data(self, data):
        if data is None or self.is_embeddings(data):
            return super()._parse_audio_data(data)
        single = _with_rate(data) or isinstance(data, (str, bytes)) or (isinstance(data, np.ndarray) and data.ndim == 1)
        items = [data] if single else data
        return AudioProcessorItems([item if item is None or isinstance(item, Segments) else self.segments(item)
                                    for item in items])

    def segments(self, item) -> "Segments":
        """A path, encoded bytes, a 16 kHz array or an (array, rate) pair -> its <=30 s segments."""
        m = self.model_config
        if _with_rate(item):
            item = (np.asarray(item[0]), int(item[1]))
        try:
            return Segments(A.clip_segments(item, channel=m.channel, resample=m.resample, long_audio=m.long_audio,
                                        max_seconds=m.max_audio_seconds))
        except SalmonnError as err:
            raise ValueError(str(err)) from None  # vLLM answers a ValueError from input processing with a 400


class SalmonnProcessingInfo(BaseProcessingInfo):
    def salmonn(self) -> Config:
        return salmonn_config(self.get_hf_config())

    def audio_token_id(self) -> int:
        return int(self.get_hf_config().salmonn["audio_token_id"])

    def get_data_parser(self) -> MultiModalDataParser:
        return SalmonnDataParser(self.salmonn().model, expected_hidden_size=self._get_expected_hidden_size())

    def get_supported_mm_limits(self) -> Mapping[str, int | None]:
        return {"audio": None}

    def max_audio_samples(self, seq_len: int) -> int:
        """The longest clip (samples) whose tokens fit `seq_len` and `max_audio_seconds`, in whole segments."""
        m = self.salmonn().model
        longest = int(m.max_audio_seconds * SAMPLE_RATE)
        if m.long_audio == "truncate":
            longest = min(longest, SEGMENT_SAMPLES)
        segments = max(1, longest // SEGMENT_SAMPLES)
        while segments > 1 and clip_tokens(segments * SEGMENT_SAMPLES, m) > seq_len:
            segments -= 1
        return segments * SEGMENT_SAMPLES

    def get_mm_max_tokens_per_item(self, seq_len: int, mm_counts: Mapping[str, int] | None = None):
        return {"audio": clip_tokens(self.max_audio_samples(seq_len), self.salmonn().model)}


class SalmonnDummyInputs(BaseDummyInputsBuilder[SalmonnProcessingInfo]):
    def get_dummy_text(self, mm_counts: Mapping[str, int]) -> str:
        return AUDIO_PLACEHOLDER * mm_counts.get("audio", 0)

    def get_dummy_mm_data(self, seq_len: int, mm_counts: Mapping[str, int], mm_options=None):
        length = self.info.max_audio_samples(seq_len)
        overrides = mm_options.get("audio") if mm_options else None
        clips = self._get_dummy_audios(length=length, num_audios=mm_counts.get("audio", 0), overrides=overrides)
        return {"audio": [(clip.astype(np.float32), SAMPLE_RATE) for clip in clips]}


def _fields(hf_inputs: Mapping[str, torch.Tensor]) -> dict[str, MultiModalFieldConfig]:
    return {"audio_segments": MultiModalFieldConfig.batched("audio"),
            "audio_segment_samples": MultiModalFieldConfig.batched("audio", keep_on_cpu=True)}


class SalmonnProcessor(BaseMultiModalProcessor[SalmonnProcessingInfo]):
    """Each clip's segments travel zero-padded to its longest ([S, N] float32) with their lengths ([S])."""

    def _call_hf_processor(self, hf_data: Mapping[str, object], hf_kwargs: Mapping[str, object]) -> BatchFeature:
        clips = hf_data.get("audio", [])
        segments, samples = [], []
        for clip in clips:
            raw, mask = A.batch_waveforms(clip)  # [S, N], [S, N]
            segments.append(raw)
            samples.append((~mask).sum(-1))  # [S]
        return BatchFeature({"audio_segments": segments, "audio_segment_samples": samples})

    def _postprocess_prompt(self, prompt: list[int]) -> list[int]:
        """The ids `salmonn.prompting` feeds: BOS, then each stretch between clips tokenized on its own. vLLM
        tokenized the whole rendered text at once, which a SentencePiece tokenizer (LLaMA, Vicuna) does not split
        the same way (no word-start mark after BOS or after a clip): each stretch is decoded and tokenized again."""
        tokenizer = self.info.get_tokenizer()
        token, bos = self.info.audio_token_id(), tokenizer.bos_token_id
        body = prompt[1:] if prompt and prompt[0] == bos else prompt
        stretches: list[list[int]] = [[]]
        for i in body:
            if i == token:
                stretches.append([])
            else:
                stretches[-1].append(i)
        ids = [bos]
        for k, stretch in enumerate(stretches):
            if k:
                ids.append(token)
            text = tokenizer.decode(stretch, skip_special_tokens=False, clean_up_tokenization_spaces=False)
            ids += tokenizer.encode(text, add_special_tokens=False) if text else []
        return ids

    def _get_mm_fields_config(self, hf_inputs: BatchFeature, hf_processor_mm_kwargs: Mapping[str, object]):
        return _fields(hf_inputs)

    def _get_prompt_updates(self, mm_items: MultiModalDataItems, hf_processor_mm_kwargs: Mapping[str, object],
                            out_mm_kwargs: MultiModalKwargsItems) -> Sequence[PromptUpdate]:
        token = self.info.audio_token_id()
        m = self.info.salmonn().model
        lengths = out_mm_kwargs.get_data().get("audio_segment_samples", [])

        def replacement(index: int) -> list[int]:
            count = sum(clip_tokens(int(n), m) for n in lengths[index])  # each segment on its own
            return [token] * count

        return [PromptReplacement(modality="audio", target=[token], replacement=replacement)]


# ---------------------------------------------------------------------------------------------------- the model
@MULTIMODAL_REGISTRY.register_processor(SalmonnProcessor, info=SalmonnProcessingInfo, dummy_inputs=SalmonnDummyInputs)
class SalmonnForConditionalGeneration(nn.Module, SupportsMultiModal, SupportsPP):
    @classmethod
    def get_placeholder_str(cls, modality: str, i: int) -> str | None:
        if modality.startswith("audio"):
            return AUDIO_PLACEHOLDER
        raise ValueError("SALMONN takes audio only")

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = ""):
        super().__init__()
        hf_config = vllm_config.model_config.hf_config
        section = hf_config.salmonn
        self.config = hf_config
        feature_dir = f"{vllm_config.model_config.model}/{FEATURE_EXTRACTOR_DIR}"
        with self._mark_tower_model(vllm_config, "audio"):
            self.audio_tower = AudioTower(salmonn_config(hf_config), section["whisper"], section["beats"],
                                          hf_config.hidden_size, feature_dir)
        with self._mark_language_model(vllm_config):
            self.language_model = init_vllm_registered_model(vllm_config=vllm_config, hf_config=hf_config,
                                                             prefix=maybe_prefix(prefix, "language_model"),
                                                             architectures=["LlamaForCausalLM"])
        self.make_empty_intermediate_tensors = self.language_model.make_empty_intermediate_tensors
        self.configure_mm_token_handling(hf_config.vocab_size, [int(section["audio_token_id"])])

    def embed_multimodal(self, **kwargs: object) -> MultiModalEmbeddings:
        segments, samples = kwargs.get("audio_segments"), kwargs.get("audio_segment_samples")
        if segments is None:
            return []
        clips = []
        for raw, lengths in zip(segments, samples):  # one clip: [S, N] and [S]
            clips.append(self.audio_tower.clip_tokens([row[:int(n)].cpu().numpy() for row, n in zip(raw, lengths)]))
        return clips

    def forward(self, input_ids: torch.Tensor | None, positions: torch.Tensor,
                intermediate_tensors: IntermediateTensors | None = None, inputs_embeds: torch.Tensor | None = None,
                **kwargs: object) -> torch.Tensor | IntermediateTensors:
        if intermediate_tensors is not None:
            inputs_embeds = None
        return self.language_model.model(input_ids, positions, intermediate_tensors, inputs_embeds=inputs_embeds)

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
        return self.language_model.compute_logits(hidden_states)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        """The audio side strictly (reference names, through our Q-Former's renaming), the LLM through vLLM."""
        tower: dict[str, torch.Tensor] = {}

        def llm_weights():
            for name, tensor in weights:
                if name.startswith(TOWER_PREFIX):
                    tower[name[len(TOWER_PREFIX):]] = tensor
                elif name.startswith(LLM_PREFIX):
                    yield name[len(LLM_PREFIX):], tensor
                else:
                    raise ValueError(f"unexpected tensor {name!r} in a SALMONN export (expected {TOWER_PREFIX}* or "
                                     f"{LLM_PREFIX}*): export the model again with `salmonn export --vllm`")

        loaded = {LLM_PREFIX + name for name in self.language_model.load_weights(llm_weights())}
        self.audio_tower.load_state_dict(tower, strict=True)
        self.audio_tower.eval()
        return loaded | {TOWER_PREFIX + name for name, _ in self.audio_tower.named_parameters()} | \
            {TOWER_PREFIX + name for name, _ in self.audio_tower.named_buffers()}
