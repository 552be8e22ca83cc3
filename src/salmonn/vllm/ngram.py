"""SALMONN-mini's n-gram ban on vLLM: a per-request logits processor (vLLM has no `no_repeat_ngram_size`).

It bans what `salmonn.greedy.repeated_ngram_ends` bans (transformers' rule: no run of n tokens twice in the
answer). A request sets `extra_args={"no_repeat_ngram_size": n}` (`vllm_xargs` over HTTP; 0 turns it off); without
it, a SALMONN export's own `generate.no_repeat_ngram_size` applies, so the defaults match `salmonn infer`.
Registered for every model through the `vllm.logits_processors` entry point; other models are left alone.
"""

from __future__ import annotations

import torch
from vllm.sampling_params import SamplingParams
from vllm.v1.sample.logits_processor import AdapterLogitsProcessor

from ..greedy import repeated_ngram_ends

KEY = "no_repeat_ngram_size"


class NoRepeatNGram(AdapterLogitsProcessor):
    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool):
        super().__init__(vllm_config, device, is_pin_memory)
        section = getattr(vllm_config.model_config.hf_config, "salmonn", None) if vllm_config.model_config else None
        self.default = int(section["generate"].get(KEY, 0)) if isinstance(section, dict) else 0

    def is_argmax_invariant(self) -> bool:
        return False  # it changes which token greedy search picks

    @classmethod
    def validate_params(cls, params: SamplingParams) -> None:
        value = (params.extra_args or {}).get(KEY)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ValueError(f"{KEY} must be an integer >= 0 (0 = off), got {value!r}")

    def new_req_logits_processor(self, params: SamplingParams):
        size = (params.extra_args or {}).get(KEY, self.default)
        if not size:
            return None

        def ban(output_ids: list[int], logits: torch.Tensor) -> torch.Tensor:
            banned = repeated_ngram_ends(list(output_ids), size)
            if banned:
                logits[banned] = -float("inf")
            return logits

        return ban
