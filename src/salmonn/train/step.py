"""One training forward: a batch -> the loss over its target tokens (+ the optional CTC loss), and validation's
per-sample scores."""

from __future__ import annotations

import contextlib
import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from ..model import SALMONN, EncoderOutput
from ..prompting import IGNORE_INDEX


def to_device(batch: dict, device: torch.device) -> dict:
    """The batch with its tensors on `device` (other values as they are)."""
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


class TrainStep(nn.Module):
    """What DDP wraps: a batch -> (mean loss over its target tokens, number of target tokens)."""

    def __init__(self, model: SALMONN, encoders_trainable: bool = False, run=None, tokenizer=None):
        super().__init__()
        self.model = model
        self.encoders_trainable = encoders_trainable
        self.lm_weight = run.lm_weight if run is not None else 1.0
        self.ctc_weight = run.ctc_weight if run is not None else 0.0
        self.last_ctc: float | None = None  # the latest CTC loss per transcript token (metrics)
        self.last_gender: tuple[float, float] | None = None  # the latest gender loss and accuracy (metrics)
        self.queries = model.config.model.num_speech_query_token
        self.gender_weight = run.gender_weight if run is not None else 0.0
        masks = run is not None and (run.time_mask_ratio or run.channel_mask_ratio)
        self.masking = (run.time_mask_ratio, run.time_mask_span, run.channel_mask_ratio) if masks else None
        if self.gender_weight:
            from .gender import label_ids
            self.gender_query, self.gender_labels = run.gender_query, list(run.gender_labels)
            self.gender_ids, self.gender_scale = label_ids(tokenizer, self.gender_labels), run.ctc_scale
        if self.ctc_weight:
            from .ctc import blank_id
            self.ctc_tasks, self.ctc_scale = set(run.ctc_tasks), run.ctc_scale
            self.ctc_query = run.ctc_query
            self.ctc_blank = blank_id(tokenizer, run.ctc_blank)
            self.end_ids = tokenizer(model.config.model.end_sym, add_special_tokens=False).input_ids
            from salmonn.data.jobs import NO_SPEECH_TEXT
            self.no_speech_ids = tokenizer(NO_SPEECH_TEXT, add_special_tokens=False).input_ids

    def audio_tokens(self, batch: dict) -> list[torch.Tensor]:
        m = self.model
        if "whisper" in batch:
            # cached; whisper_len when Whisper ran on each clip's own length
            frozen = EncoderOutput(batch["whisper"], batch.get("beats"), batch.get("beats_mask"),
                                   batch.get("whisper_len"))
        else:
            with contextlib.nullcontext() if self.encoders_trainable else torch.no_grad():
                frozen = m.encode(batch["spectrogram"], batch["raw_wav"], batch["padding_mask"])
        if m.training and self.masking is not None:
            frozen = self.masked(frozen)
        tokens = m.connect(frozen)  # S x [L_s, d]
        out, at = [], 0
        for n in batch["n_segments"]:
            out.append(torch.cat(tokens[at:at + n]))  # [sum of L_s, d]
            at += n
        return out

    def masked(self, frozen: EncoderOutput) -> EncoderOutput:
        """The Whisper frames with run.time_mask_ratio / run.channel_mask_ratio masks (train/masking.py)."""
        from .masking import channel_mask, time_mask
        ratio, span, channels = self.masking
        speech = time_mask(frozen.speech, frozen.speech_frames, ratio, span) if ratio else frozen.speech
        speech = channel_mask(speech, channels) if channels else speech
        return dataclasses.replace(frozen, speech=speech)

    def forward(self, batch: dict):
        tokens = self.audio_tokens(batch)
        if self.lm_weight:
            lm, _, labels = self.model(tokens, batch["prompts"], batch["targets"], return_logits=False)
            n = (labels[:, 1:] != IGNORE_INDEX).sum()
            loss = self.lm_weight * lm
        else:  # connector only: the LLM does not run; the CTC sum is still taken per LM target token
            n = torch.tensor(batch["n_tokens"])
            loss = torch.zeros((), device=tokens[0].device)
        if self.ctc_weight:  # summed over transcript tokens, then per LM target token like the LM loss
            loss = loss + self.ctc_weight * self.ctc_loss(tokens, batch) / n.clamp(min=1).to(loss.device)
        if self.gender_weight:
            loss = loss + self.gender_weight * self.gender_loss(tokens, batch)
        return loss, n

    def gender_loss(self, tokens: list[torch.Tensor], batch: dict) -> torch.Tensor:
        """Mean gender loss of the batch's rows with a gender label (train/gender.py); 0 without any."""
        from .ctc import query_tokens
        from .gender import gender_loss
        rows = [i for i, g in enumerate(batch["genders"]) if g is not None and batch["weights"][i] > 0]
        if not rows:
            self.last_gender = None
            return sum(t.sum() for t in tokens) * 0.0  # keeps every connector parameter in the graph (DDP)
        unknown = sorted({batch["genders"][i] for i in rows} - set(self.gender_labels))
        if unknown:
            raise ValueError(f"gender labels {unknown} are not in run.gender_labels {self.gender_labels}")
        table = self.model.llama_model.get_input_embeddings().weight.detach()[self.gender_ids]  # [K, d]
        labels = [self.gender_labels.index(batch["genders"][i]) for i in rows]
        chosen = [query_tokens(tokens[i], self.queries, self.gender_query) for i in rows]
        loss, accuracy = gender_loss(chosen, labels, table, self.gender_scale)
        self.last_gender = (float(loss.detach()), accuracy)
        return loss

    def ctc_loss(self, tokens: list[torch.Tensor], batch: dict) -> torch.Tensor:
        """Summed CTC loss of the batch's ctc_tasks samples (train/ctc.py); its per-token mean goes to last_ctc."""
        from .ctc import ctc_loss_sum, query_tokens
        rows = [i for i, task in enumerate(batch["tasks"]) if task in self.ctc_tasks and batch["weights"][i] > 0]
        if not rows:
            self.last_ctc = None
            return sum(t.sum() for t in tokens) * 0.0  # keeps every connector parameter in the graph (DDP)
        k = len(self.end_ids)
        targets = [t[:-k] if t[-k:] == self.end_ids else t for t in (batch["targets"][i] for i in rows)]
        # audio without speech ("there is no speech in this audio") spells nothing: every token is blank
        targets = [[] if list(t) == self.no_speech_ids else t for t in targets]
        table = self.model.llama_model.get_input_embeddings().weight.detach()
        spelling = [query_tokens(tokens[i], self.queries, self.ctc_query) for i in rows]
        loss, count = ctc_loss_sum(spelling, targets, table, self.ctc_blank, self.ctc_scale)
        self.last_ctc = float(loss.detach()) / max(count, 1)
        return loss

    @torch.no_grad()
    def per_sample(self, batch: dict, tokens: list[torch.Tensor] | None = None):
        """Per-sample summed token NLL, token count and correct argmax tokens (validation).

        tokens: the batch's audio tokens if already computed (validation also scores them rolled by one sample,
        each target with another clip's audio: a model that listens does clearly worse there)."""
        tokens = self.audio_tokens(batch) if tokens is None else tokens
        _, logits, labels = self.model(tokens, batch["prompts"], batch["targets"])
        logits, labels = logits[:, :-1].float(), labels[:, 1:]
        valid = labels != IGNORE_INDEX
        nll = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none")
        correct = (logits.argmax(-1) == labels) & valid
        return (nll * valid).sum(-1), valid.sum(-1), correct.sum(-1)
