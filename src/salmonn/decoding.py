"""Decoding: options and presets, the one generate step (HF generate on assembled pieces, optionally through a
compiled per-token step), answer clean-up and scores, stop strings and a token streamer.

The CLI, chat sessions, the server and evaluation all decode through `generate_answers`.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import sys
import types
from typing import Callable, Sequence

import torch
from torch import nn
from transformers import StoppingCriteria, StoppingCriteriaList

from .config import GenerateConfig
from .errors import ConfigError
from .prompting import Piece, assemble


@dataclasses.dataclass
class Answer:
    text: str  # the answer, stripped, cut before any stop string
    token_ids: list[int]  # generated ids (no prompt, no echoed BOS, stopped before EOS; incl. a stop string's)
    score: float | None = None  # with return_scores=True: sum of the chosen tokens' log-probabilities (incl. EOS)
    #                             under the processed distribution; beam search: the beam's length-normalised score;
    #                             CTC rescoring (ctc_weight > 0): the combined score it chose by (salmonn.rescoring)

# Named decoding settings (`--preset NAME`, generate(preset=NAME)). Explicit options override a preset; a preset
# overrides the config's `generate:` section.
PRESETS: dict[str, dict] = {
    # the reference implementation's decode defaults
    "reference": dict(num_beams=4, max_new_tokens=200, min_length=1, top_p=0.9, temperature=1.0,
                      repetition_penalty=1.0, no_repeat_ngram_size=0, length_penalty=1.0, do_sample=False),
    # fastest; needed for --stream
    "greedy": dict(num_beams=1, do_sample=False),
    # nucleus sampling (give a seed to make it repeatable)
    "sample": dict(num_beams=1, do_sample=True, top_p=0.9, temperature=1.0),
}

_FIELDS = [f.name for f in dataclasses.fields(GenerateConfig)]
MAX_STOP_STRINGS = 4  # OpenAI's limit
MAX_STOP_CHARS = 256  # each stop string is looked for in the decoded tail of every row at every step
UTF8_MAX_BYTES = 4  # so at most 4 byte-fallback pieces per character
BYTE_PIECE = re.compile(r"<0x[0-9A-Fa-f]{2}>")  # sentencepiece's byte-fallback pieces


def decoding_config(base: GenerateConfig, preset: str | None = None, **options) -> GenerateConfig:
    """`base` (the config's generate section) <- preset <- options that are not None."""
    values: dict = {}
    if preset:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        values.update(PRESETS[preset])
    for key, value in options.items():
        if key not in _FIELDS:
            close = difflib.get_close_matches(key, _FIELDS, n=1)
            raise ConfigError(f"unknown decoding option {key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        if value is not None:
            values[key] = value
    gen = dataclasses.replace(base, **values)
    if isinstance(gen.stop, str):
        gen = dataclasses.replace(gen, stop=[gen.stop])
    _validate(gen)
    return gen


def _validate(gen: GenerateConfig) -> None:
    problems = []
    if gen.num_beams < 1:
        problems.append(f"num_beams must be >= 1, got {gen.num_beams}")
    if gen.max_new_tokens < 1:
        problems.append(f"max_new_tokens must be >= 1, got {gen.max_new_tokens}")
    if gen.min_new_tokens < 0 or gen.min_new_tokens > gen.max_new_tokens:
        problems.append(f"min_new_tokens must be between 0 and max_new_tokens ({gen.max_new_tokens}), "
                        f"got {gen.min_new_tokens}")
    if gen.do_sample and gen.temperature <= 0:
        problems.append(f"temperature must be > 0 when sampling, got {gen.temperature}")
    if not 0 < gen.top_p <= 1:
        problems.append(f"top_p must be in (0, 1], got {gen.top_p}")
    if gen.top_k < 0:
        problems.append(f"top_k must be >= 0 (0 = off), got {gen.top_k}")
    if gen.repetition_penalty <= 0:
        problems.append(f"repetition_penalty must be > 0 (1 = off), got {gen.repetition_penalty}")
    if gen.no_repeat_ngram_size < 0:
        problems.append(f"no_repeat_ngram_size must be >= 0 (0 = off), got {gen.no_repeat_ngram_size}")
    if any(not s for s in gen.stop):
        problems.append("stop strings must not be empty")
    if len(gen.stop) > MAX_STOP_STRINGS:
        problems.append(f"at most {MAX_STOP_STRINGS} stop strings, got {len(gen.stop)}")
    if any(len(s) > MAX_STOP_CHARS for s in gen.stop):
        problems.append(f"a stop string may be at most {MAX_STOP_CHARS} characters, got "
                        f"{max(len(s) for s in gen.stop)}")
    if not 0 <= gen.ctc_weight <= 1:
        problems.append(f"ctc_weight must be in [0, 1] (0 = off), got {gen.ctc_weight}")
    if gen.ctc_weight > 0 and gen.do_sample:
        problems.append("ctc_weight rescores beam search's answers: set do_sample=false")
    if problems:
        raise ConfigError("decoding: " + "; ".join(problems))


def check_streamable(gen: GenerateConfig, rows: int = 1) -> None:
    """Streaming shows one answer's tokens as they are chosen: one clip and num_beams 1."""
    if gen.num_beams > 1:
        raise ConfigError(f"streaming shows tokens as they are chosen, which beam search (num_beams="
                          f"{gen.num_beams}) cannot do: use num_beams=1 (--num-beams 1 or --preset greedy)")
    if rows != 1:
        raise ConfigError(f"streaming shows one answer at a time: pass a single clip (got {rows})")
    if gen.ctc_weight > 0:
        raise ConfigError("streaming shows tokens as they are chosen, which CTC rescoring (choosing among whole "
                          "answers) cannot do: use ctc_weight=0")


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Text before the earliest stop string (and whether one was found)."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


class TokenStreamer:
    """Streams a single answer's text as tokens are generated (the `streamer=` of SALMONN.generate).

    Calls `write(piece)` with new text; the pieces concatenate to exactly `Answer.text`. Text is written once it
    is settled: decoded without special tokens, leading whitespace dropped, and held back until more text follows
    are trailing whitespace, a run of byte-fallback pieces (sentencepiece decodes the run as a unit: one invalid
    byte turns all of it into U+FFFD), an incomplete UTF-8 character (byte-level BPE), and a tail that may be the
    start of a stop string; nothing is written from a stop string on. Default `write` prints to stdout; end() then
    writes a newline.
    """

    def __init__(self, tokenizer, write: Callable[[str], None] | None = None, stop: Sequence[str] = (),
                 newline: bool = True):
        self.tokenizer = tokenizer
        self.stop = list(stop)
        self.newline = newline and write is None
        self._write = write or self._print
        self.ids: list[int] = []
        self.printed = ""
        self.stopped = False
        self._prompt_seen = False
        self._byte_piece: dict[int, bool] = {}

    @staticmethod
    def _print(piece: str) -> None:
        sys.stdout.write(piece)
        sys.stdout.flush()

    def put(self, value) -> None:
        if value.dim() > 1 and value.shape[0] > 1:
            raise ConfigError("streaming shows one answer at a time: pass a single clip")
        if not self._prompt_seen:  # generate() first hands over the prompt ids (empty with inputs_embeds)
            self._prompt_seen = True
            return
        self.ids.extend(int(i) for i in value.reshape(-1).tolist())
        self._emit(final=False)

    def end(self) -> None:
        self._emit(final=True)
        if self.newline:
            self._write("\n")

    def _emit(self, final: bool) -> None:
        if self.stopped:
            return
        eos = self.tokenizer.eos_token_id
        ids = self.ids[: self.ids.index(eos)] if eos in self.ids else self.ids
        if not final:
            ids = ids[: self._settled(ids)]
        text, found = cut_at_stop(self.tokenizer.decode(ids, skip_special_tokens=True).lstrip(), self.stop)
        self.stopped = found
        if not (final or found):
            text = text.rstrip("\ufffd")  # an incomplete UTF-8 character: its next byte may complete it
            text = text[: len(text) - self._stop_prefix(text)]
        text = text.rstrip()
        if text.startswith(self.printed) and len(text) > len(self.printed):
            self._write(text[len(self.printed):])
            self.printed = text

    def _settled(self, ids: list[int]) -> int:
        """How many of `ids` have text that later tokens cannot change: all but a trailing run of byte pieces."""
        n = len(ids)
        while n and self._is_byte_piece(ids[n - 1]):
            n -= 1
        return n

    def _is_byte_piece(self, token: int) -> bool:
        if token not in self._byte_piece:
            piece = self.tokenizer.convert_ids_to_tokens(token) or ""
            self._byte_piece[token] = BYTE_PIECE.fullmatch(piece) is not None
        return self._byte_piece[token]

    def _stop_prefix(self, text: str) -> int:
        """Length of the longest tail of `text` that a stop string starts with (it may be completed next)."""
        return max((k for s in self.stop for k in range(min(len(s) - 1, len(text)), 0, -1) if text.endswith(s[:k])),
                   default=0)


# ---------------------------------------------------------------------------------------------------- generation
@torch.no_grad()
def generate_answers(model, rows: list[list[Piece]], gen: GenerateConfig, streamer=None,
                     return_scores: bool = False) -> list[Answer]:
    """The one generate step: per-sample LLM input pieces -> one answer each (left-padded batch, so every row
    gets its single-row answer). `streamer`: anything with put(ids)/end(), one row, num_beams 1. Plain greedy
    decoding goes through salmonn.greedy's own loop with model.greedy_loop, CTC rescoring (ctc_weight > 0) through
    salmonn.rescoring, the rest through HF generate()."""
    from . import greedy
    if streamer is not None:
        check_streamable(gen, len(rows))
    if gen.ctc_weight > 0:
        from .rescoring import rescored_answers
        return rescored_answers(model, rows, gen)
    embeds, mask, _, _ = assemble(rows, side="left", reference_batching=model.config.model.reference_batching)
    m = model.config.model
    if m.compile:
        stream_small_linears(model.llama_model)
    pack_gqa_steps(model.llama_model, PACKED_GQA_STEPS)
    contiguous_head_input(model.llama_model)
    fuse_projections(model.llama_model, FUSED_PROJECTIONS and _merged_for_inference(model))
    if m.greedy_loop and greedy.handles(gen, return_scores):
        ids = greedy.greedy_decode(model.causal_lm, embeds, mask, gen, model.tokenizer.eos_token_id,
                                   model.tokenizer.pad_token_id, compile=m.compile, streamer=streamer)
        return [clean_answer(seq.tolist(), model.tokenizer, gen.stop) for seq in ids]
    kwargs = hf_generate_kwargs(gen, model.tokenizer)
    if m.compile:
        kwargs.update(compiled_decoding(embeds.shape[1] + gen.max_new_tokens))
    if return_scores:
        kwargs.update(output_scores=True, return_dict_in_generate=True)
    device = model.device
    seeded = gen.do_sample and gen.seed is not None
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else [], enabled=seeded):
        if seeded:
            torch.manual_seed(gen.seed)
        out = model.llama_model.generate(inputs_embeds=embeds, attention_mask=mask, streamer=streamer, **kwargs)
    sequences = out.sequences if return_scores else out
    eos = model.tokenizer.eos_token_id
    scores = sequence_scores(out, gen, eos) if return_scores else [None] * len(sequences)
    return [clean_answer(seq.tolist(), model.tokenizer, gen.stop, score) for seq, score in zip(sequences, scores)]


def hf_generate_kwargs(gen: GenerateConfig, tokenizer) -> dict:
    """transformers' generate() arguments for these decoding options."""
    kwargs = dict(max_new_tokens=gen.max_new_tokens, num_beams=gen.num_beams, do_sample=gen.do_sample,
                  repetition_penalty=gen.repetition_penalty, length_penalty=gen.length_penalty,
                  no_repeat_ngram_size=gen.no_repeat_ngram_size or None,
                  min_new_tokens=gen.min_new_tokens or None, eos_token_id=tokenizer.eos_token_id,
                  pad_token_id=tokenizer.pad_token_id)
    if gen.do_sample:
        kwargs.update(temperature=gen.temperature, top_p=gen.top_p, top_k=gen.top_k or None)
    else:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    if gen.stop:
        kwargs.update(stopping_criteria=StoppingCriteriaList([StopStrings(tokenizer, gen.stop)]))
    return {k: v for k, v in kwargs.items() if v is not None or k in ("temperature", "top_p", "top_k")}


class StopStrings(StoppingCriteria):
    """Ends a row once its generated text contains a stop string. Decodes only the tail of tokens that can hold
    the longest one, and keeps nothing between requests (transformers' StopStringCriteria caches per-vocabulary
    tables that grow with the strings' lengths: gigabytes for one long string)."""

    def __init__(self, tokenizer, stop: Sequence[str]):
        self.tokenizer, self.stop = tokenizer, list(stop)
        self.window = UTF8_MAX_BYTES * max(len(s) for s in self.stop) + 2  # + pieces a match may start in

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        tails = input_ids[:, -self.window:].tolist()
        found = [any(s in self.tokenizer.decode(tail, skip_special_tokens=True) for s in self.stop) for tail in tails]
        return torch.tensor(found, dtype=torch.bool, device=input_ids.device)


def clean_answer(ids: list[int], tokenizer, stop: Sequence[str] = (), score: float | None = None) -> Answer:
    """Generated ids -> Answer: cut at EOS, trailing pads dropped, text stripped and cut before a stop string
    (the ids then end with the token that completed it)."""
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    if eos in ids:
        ids = ids[: ids.index(eos)]
    while ids and ids[-1] == pad and pad != eos:
        ids = ids[:-1]
    text = tokenizer.decode(ids, skip_special_tokens=True).strip()
    if stop:
        text, found = cut_at_stop(text, stop)
        text = text.rstrip()
        if found:
            ids = ids[:next((n for n in range(1, len(ids) + 1)
                             if cut_at_stop(tokenizer.decode(ids[:n], skip_special_tokens=True), stop)[1]), len(ids))]
    return Answer(text=text, token_ids=ids, score=score)


def sequence_scores(out, gen: GenerateConfig, eos_token_id: int) -> list[float]:
    """Per returned sequence: beam search's own score, else the sum of log-probabilities of the chosen tokens
    (processed scores: after temperature / top-p / penalties) up to and including EOS."""
    if gen.num_beams > 1:
        return [float(x) for x in out.sequences_scores]
    steps = torch.stack(out.scores, dim=1).float().log_softmax(-1)  # [B, T, V]
    new = out.sequences[:, -steps.shape[1]:]  # [B, T] the generated ids
    chosen = steps.gather(-1, new[..., None])[..., 0]  # [B, T]
    results = []
    for row, ids in zip(chosen, new.tolist()):
        n = ids.index(eos_token_id) + 1 if eos_token_id in ids else len(ids)  # finished rows continue with pads
        results.append(float(row[:n].sum()))
    return results


# ---------------------------------------------------------------------------------------------------- compiled step
COMPILE_CACHE_BUCKET = 256  # static KV cache lengths are rounded up to this: fewer recompilations
STREAMING_MAX_ROWS = 1  # compiled linears with one input row (a one-clip decoding step) stream their weight: with
#                         8 rows the weight-major reduction ran 3.4x slower than F.linear in bf16 (equal in fp32)


def compile_config():
    """transformers' CompileConfig for the per-token step, on any device (transformers compiles automatically only
    on CUDA)."""
    from transformers import CompileConfig
    config = CompileConfig(fullgraph=False, dynamic=False)
    config._compile_all_devices = True  # noqa: SLF001 - the documented switch has no public setter
    return config


def cache_length(length: int) -> int:
    """`length` rounded up to a COMPILE_CACHE_BUCKET multiple."""
    return -(-length // COMPILE_CACHE_BUCKET) * COMPILE_CACHE_BUCKET


def compiled_decoding(length: int) -> dict:
    """generate() arguments that run the per-token step through torch.compile with a static KV cache. The cache is
    sized in COMPILE_CACHE_BUCKET steps and transformers keeps the largest size seen, so a compiled step is reused
    across calls of the same batch size."""
    return {"cache_implementation": "static", "compile_config": compile_config(),
            "max_cache_len": cache_length(length)}


PACKED_GQA_STEPS = True  # one-token steps attend per key/value head (see pack_gqa_steps); False: transformers' sdpa
PACKED_GQA = "salmonn_packed_gqa"  # the attention implementation's registered name
FILLED_PROMPT_KEYS = True  # under PACKED_GQA_STEPS, a prompt's forward into an empty static cache attends to its own
#                            positions only (not the masked free slots: 2.2x faster prompt attention at 204 of 512)


def _packed_gqa_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                          attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                          **kwargs):
    """transformers' sdpa attention, except that a one-token step of a grouped-query layer attends per key/value
    head: the query [B, H, 1, D] is viewed as [B, H_kv, H / H_kv, D] (the group's heads as query rows) against the
    cache's own [B, H_kv, L, D] keys and values. transformers does this only outside torch.compile; inside it, every
    compiled step copied the whole static cache H / H_kv times (repeat_kv) and ran one-row flash attention per head:
    20x slower attention on a 512-slot bf16 cache (benchmarks/decode_step.md). A prompt (several query tokens)
    runs transformers' sdpa, over only the keys its mask can see when the rest of the static cache is masked
    everywhere (FILLED_PROMPT_KEYS; the same terms of the softmax, summed in other blocks)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    groups = getattr(module, "num_key_value_groups", 1)
    if (query.shape[2] == 1 and groups > 1 and kwargs.get("position_bias") is None and kwargs.get("softcap") is None
            and (attention_mask is None or attention_mask.shape[1] == 1)):
        batch, heads, _, dim = query.shape
        out = torch.nn.functional.scaled_dot_product_attention(
            query.reshape(batch, heads // groups, groups, dim), key, value, attn_mask=attention_mask,
            dropout_p=dropout, scale=scaling)  # [B, H_kv, H / H_kv, D]; a [B, 1, 1, L] mask broadcasts
        return out.reshape(batch, heads, 1, dim).transpose(1, 2).contiguous(), None  # [B, 1, H, D]
    if (not torch.compiler.is_compiling() and FILLED_PROMPT_KEYS and attention_mask is not None
            and attention_mask.dtype == torch.bool and key.shape[2] > query.shape[2] == attention_mask.shape[-2] > 1
            and attention_mask.shape[-1] == key.shape[2] and not attention_mask[..., query.shape[2]:].any()):
        length = query.shape[2]  # a prompt into an empty static cache: the slots after it are masked everywhere
        key, value, attention_mask = key[:, :, :length], value[:, :, :length], attention_mask[..., :length]
    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                  **kwargs)


def pack_gqa_steps(llm: nn.Module, on: bool = True) -> None:
    """Switch an sdpa LLM to _packed_gqa_attention (on) or back to transformers' sdpa (off); other attention
    implementations (eager, flash) are left alone. Same masks as sdpa; prompts (several tokens) run sdpa itself."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    if PACKED_GQA not in AttentionInterface._global_mapping:  # noqa: SLF001 - register() writes this mapping
        AttentionInterface.register(PACKED_GQA, _packed_gqa_attention)
        AttentionMaskInterface.register(PACKED_GQA, sdpa_mask)
    configs = {id(c): c for c in (getattr(m, "config", None) for m in llm.modules())
               if getattr(c, "_attn_implementation", None) in ("sdpa", PACKED_GQA)}
    for config in configs.values():
        config._attn_implementation_internal = PACKED_GQA if on else "sdpa"  # noqa: SLF001 - no per-call setter


CONTIGUOUS_HEAD_INPUT = True  # the output head gets a contiguous input (see contiguous_head_input); False: as is


def _contiguous_input(module: nn.Module, args: tuple):
    if torch.compiler.is_compiling():  # a compiled step's [B, 1, d] input is contiguous; no guard on the switch
        return None
    if CONTIGUOUS_HEAD_INPUT and args and isinstance(args[0], torch.Tensor) and not args[0].is_contiguous():
        return (args[0].contiguous(), *args[1:])
    return None


def contiguous_head_input(llm: nn.Module) -> None:
    """Give the output head (lm_head) a contiguous input (once; a forward pre-hook). A prompt's forward keeps only
    the last position's hidden state (logits_to_keep=1), a strided [B, 1, d] slice of [B, T, d]: with B > 1,
    F.linear over that slice took 1.0-1.3 s in bf16 against 5-9 ms once contiguous (same values) for SALMONN-mini's
    49152 x 576 head (3.4x slower in fp32), every 8-segment long-form batch (benchmarks/decode_step.md)."""
    head = llm.get_output_embeddings() if hasattr(llm, "get_output_embeddings") else None
    if head is None or getattr(head, "_salmonn_contiguous_input", False):
        return
    head.register_forward_pre_hook(_contiguous_input)
    head._salmonn_contiguous_input = True


def _streaming_linear_forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """nn.Linear.forward, except inside torch.compile for a few input rows (a decoding step): the product is
    written as a weight-major reduction that inductor turns into one parallel, vectorised pass over the weight.
    Decoding is bound by reading the weights, and this reads them about twice as fast as BLAS's matrix-vector
    product on 2 AVX2 cores (benchmarks/RESULTS.md). Eager calls (the prompt) keep F.linear."""
    return _streaming_linear(x, self.weight, self.bias)


def _streaming_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    if torch.compiler.is_compiling() and x.dim() >= 2 and x.shape[:-1].numel() <= STREAMING_MAX_ROWS:
        rows = x.reshape(-1, x.shape[-1]).to(weight.dtype)  # [M, K]
        out = (weight[:, None, :] * rows[None, :, :]).sum(-1).t()  # [N, M, K] -> [N, M] -> [M, N]
        if bias is not None:
            out = out + bias
        return out.reshape(*x.shape[:-1], out.shape[-1])  # [..., N]
    return torch.nn.functional.linear(x, weight, bias)


def stream_small_linears(llm: nn.Module) -> None:
    """Route the LLM's nn.Linear modules through _streaming_linear_forward (once; harmless to eager calls)."""
    if getattr(llm, "_salmonn_streaming_linears", False):
        return
    for module in llm.modules():
        if type(module) is nn.Linear:
            module.forward = types.MethodType(_streaming_linear_forward, module)
    llm._salmonn_streaming_linears = True


# ---------------------------------------------------------------------------------------------------- fused projections
FUSED_PROJECTIONS = False  # merged layers run q/k/v and gate/up as one product each (see fuse_projections); off
#                            until benchmarks/decode_step.py has measured it (4 weight reads per layer step, not 7)
FUSED_GROUPS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))  # linears of one module, same input


class _FusedLinears:
    """One weight for linears of one module that read the same input (a LLaMA layer's q/k/v, or its gate/up).

    Their base weights (and biases) become row blocks, i.e. views, of the one weight: no memory is added, the
    module tree and state_dict() keep their names, and in-place writes (load_state_dict) reach the fused weight.
    Each linear's forward is replaced (an instance attribute, as stream_small_linears does): the first call for an
    input computes the one product and keeps it, the others take their columns of it (by tensor identity: any
    call order and a lone call are right), the last one drops it. In eager mode a linear whose weight is no longer
    its view (.data replaced: a re-merge, .to()) runs its own forward again."""

    def __init__(self, linears: list[nn.Module], bases: list[nn.Linear]):
        self.linears, self.bases = linears, bases
        self.sizes = [base.out_features for base in bases]
        self.streaming = getattr(bases[0].forward, "__func__", None) is _streaming_linear_forward  # compiled runs
        with torch.no_grad():
            self.weight = torch.cat([base.weight.detach() for base in bases])  # [sum N, K]
            self.bias = None if bases[0].bias is None else torch.cat([base.bias.detach() for base in bases])
        for index, base in enumerate(bases):
            start = sum(self.sizes[:index])
            base.weight.data = self.weight[start:start + self.sizes[index]]
            if self.bias is not None:
                base.bias.data = self.bias[start:start + self.sizes[index]]
        self.pointers = [base.weight.data_ptr() for base in bases]
        self.pending: tuple[torch.Tensor, tuple[torch.Tensor, ...]] | None = None  # (input, its parts)
        self.own_forwards = [linear.__dict__.get("forward") for linear in linears]  # instance forwards to restore
        for index, linear in enumerate(linears):
            linear.forward = types.MethodType(_fused_linear_forward, linear)
            linear._salmonn_fused = (self, index)
        self.forwards = [linear.forward for linear in linears]

    def intact(self) -> bool:
        """Whether every base weight is still its view of the fused weight."""
        return all(base.weight.data_ptr() == pointer for base, pointer in zip(self.bases, self.pointers))

    def current(self) -> bool:
        """intact(), and every linear still runs the fused forward (stream_small_linears did not replace it)."""
        return self.intact() and all(linear.__dict__.get("forward") is forward
                                     for linear, forward in zip(self.linears, self.forwards))

    def parts(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        pending = self.pending
        if pending is not None and pending[0] is x:
            return pending[1]
        if self.streaming:
            out = _streaming_linear(x, self.weight, self.bias)  # compiled one-row steps: one streamed pass
        else:
            out = torch.nn.functional.linear(x, self.weight, self.bias)
        parts = out.split(self.sizes, dim=-1)
        self.pending = (x, parts)
        return parts

    def unfuse(self) -> None:
        """Give the linears their own forwards back, and each base weight still inside the fused one a copy of
        its own (so that the fused storage is freed once nothing else holds it)."""
        for linear, own, forward in zip(self.linears, self.own_forwards, self.forwards):
            del linear._salmonn_fused
            if linear.__dict__.get("forward") is forward:  # (not replaced since)
                del linear.forward
                if own is not None:
                    linear.forward = own
        for base, pointer in zip(self.bases, self.pointers):
            if base.weight.data_ptr() == pointer:
                base.weight.data = base.weight.data.clone()
                if self.bias is not None:
                    base.bias.data = base.bias.data.clone()
        self.pending = None


def _fused_linear_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    fused, index = self._salmonn_fused
    if not torch.compiler.is_compiling() and not fused.intact():
        forward = fused.own_forwards[index] or type(self).forward.__get__(self)
        return forward(x)
    part = fused.parts(x)[index]
    if index == len(fused.sizes) - 1:
        fused.pending = None  # the module's last linear (v_proj, up_proj): nothing is kept between calls
    return part


def _base_linear(module: nn.Module) -> nn.Linear | None:
    """The plain nn.Linear that computes `module`: itself, or the base layer of a peft LoRA layer whose active
    adapters are all merged into it; None otherwise (unmerged adapters, quantized layers, a forward replaced by
    anything but stream_small_linears)."""
    if not _plain_forward(module):
        return None
    if type(module) is nn.Linear:
        return module
    if hasattr(module, "get_base_layer") and hasattr(module, "merged_adapters"):
        base = module.get_base_layer()
        active = getattr(module, "active_adapters", [])
        if (type(base) is nn.Linear and _plain_forward(base) and not getattr(module, "disable_adapters", False)
                and active and set(active) <= set(module.merged_adapters)):
            return base
    return None


def _plain_forward(module: nn.Module) -> bool:
    forward = vars(module).get("forward")
    return forward is None or getattr(forward, "__func__", None) is _streaming_linear_forward


def _merged_for_inference(model) -> bool:
    """SALMONN in eval mode with its LoRA merged (or without LoRA): what fuse_projections may fuse."""
    return not model.training and (bool(model._unmerged_weights) or not model.config.model.lora)  # noqa: SLF001


def fuse_projections(llm: nn.Module, on: bool = True) -> None:
    """Fuse (on) each module's FUSED_GROUPS linears into one product (see _FusedLinears), or put them back (off).
    A one-token step then reads its weights in 4 products per LLaMA layer instead of 7. Only groups whose
    linears are all plain nn.Linear or merged LoRA layers are fused, and only in eval mode; call it with off (or
    unfuse_projections) before weights are merged or unmerged. Fused groups whose weights were replaced since are
    fused again. Values: the same products (eager fp32 and bf16, compiled fp32: identical logits here); a compiled
    bf16 step can differ in the last bit (inductor keeps a product unrounded inside the kernel that consumes it,
    and the split changes which kernels those are). Greedy ids: tests/test_fast_decode.py."""
    fused: list[_FusedLinears] = llm.__dict__.get("_salmonn_fused_linears", [])
    if fused and (not on or llm.training or not all(group.current() for group in fused)):
        unfuse_projections(llm)
    if not on or llm.training or fused:
        return
    fused = llm.__dict__.setdefault("_salmonn_fused_linears", [])
    for module in llm.modules():
        for names in FUSED_GROUPS:
            linears = [getattr(module, name, None) for name in names]
            if not all(isinstance(linear, nn.Module) for linear in linears):
                continue
            bases = [_base_linear(linear) for linear in linears]
            if any(base is None for base in bases) or len({(b.in_features, b.weight.dtype, b.weight.device,
                                                              b.bias is None) for b in bases}) > 1:
                continue
            fused.append(_FusedLinears(linears, bases))


def unfuse_projections(llm: nn.Module) -> None:
    """Undo fuse_projections (nothing to do when nothing is fused). SALMONN.unmerge_lora calls it."""
    for group in llm.__dict__.get("_salmonn_fused_linears", []):
        group.unfuse()
    llm.__dict__.get("_salmonn_fused_linears", []).clear()
