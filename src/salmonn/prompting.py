"""Prompts -> LLM inputs: the audio placeholder, templates, conversations, and the pieces the LLM is fed.

A single-turn prompt is the reference CLI's: the config's `prompt_template` around
`<Speech><SpeechHere></Speech> ` + instruction. A conversation is a list of `PromptTurn`s rendered turn by turn
(Vicuna style):

    USER: <Speech><SpeechHere></Speech> q1\\nASSISTANT: a1</s>USER: q2\\nASSISTANT:

The LLM input of one sample is a list of `Piece`s ([BOS], text, audio tokens, text, target...), each
embeddings + labels + mask; `assemble` pads a batch of them into the tensors the LLM takes.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Sequence, Union

import torch

from .errors import PromptError

if TYPE_CHECKING:
    from .model import SALMONN

AUDIO_PLACEHOLDER = "<SpeechHere>"
AUDIO_PREFIX = "<Speech><SpeechHere></Speech> "  # what the reference CLI puts before every instruction
IGNORE_INDEX = -100  # label of positions that are not learned (prompt, audio, padding)

# Bare test instructions per task: `salmonn eval`'s defaults, and "asr" is what the server's transcription
# endpoint asks. Where the reference's prompts/test_prompt.json has the task, this is its instruction (without
# the "<Speech><SpeechHere></Speech> " prefix the model adds); "{}" takes the sample's Q.
DEFAULT_TEST_PROMPTS: dict[str, str] = {
    "asr": "Recognize the speech and give me the transcription.",
    "asr_zh": "请将语音中的内容写下来。",
    "asr_de": "Hören Sie sich die Rede an und schreiben Sie ihren Inhalt auf.",
    "speech_separation": "Please write down what you hear each person says.",
    "phone_recognition": "Provide the phonetic transcription for the speech.",
    "translation_ec": "Listen to the speech and translate it into Chinese.",
    "translation_ed": "Listen to the speech and translate it into German.",
    "translation_ej": "Listen to the speech and translate it into Japanese.",
    "audiocaption": "Please describe the audio.",
    "audiocaption_v2": "Please write down what your hear in the audio.",
    "music_description": "Listen to this music clip and describe the music.",
    "emotion_recognition": "Describe the emotion of the speaker in one word.",
    "gender_recognition": "What is the gender of the speaker?",
    "speaker_verification": "Do you only hear the same person talking? Answer yes or no.",
    "sound_event": "What sound event do you hear in the audio? Answer in a few words.",
    "instrument": "Which musical instrument do you hear? Answer in a few words.",
    "QA": "{}",
    "inference_QA": "{}",
    "sqqa": "Please answer the question in detail.",
    "slot_filling": "According to the speech, what is the {}?",
    "keyword_extraction": "Give me only three keywords of the text.",
    "speech_audio_coreasoning": "Use your strong reasoning skills to answer the speaker's question in detail "
                                "based on the background sound.",
    "audio_story_telling": "Based on the audio, write a story in detail. Your story should be highly related "
                           "to the audio.",
}
DEFAULT_TEST_PROMPTS["story"] = DEFAULT_TEST_PROMPTS["audio_story_telling"]

Chunk = Union[str, list]  # a rendered conversation: text (may hold <SpeechHere>) or token ids


# ---------------------------------------------------------------------------------------------------- text
def check_placeholder(text: str, allowed: int = 0, hint: str = "pass the bare instruction") -> None:
    """PromptError unless `text` holds <SpeechHere> exactly `allowed` times; `hint` says what to do instead."""
    found = text.count(AUDIO_PLACEHOLDER)
    if found == allowed:
        return
    if allowed:
        raise PromptError(f"prompt {text[:60]!r} must contain {AUDIO_PLACEHOLDER} exactly {allowed} time(s): {hint}")
    raise PromptError(f"{text[:60]!r} contains {AUDIO_PLACEHOLDER}, which marks where the audio goes: {hint}")


def format_prompt(instruction: str, template: str) -> str:
    """Bare instruction -> the full templated single-turn prompt the reference CLI builds."""
    check_placeholder(instruction, hint="pass the bare instruction, or a full prompt with templated=True")
    return template.format(AUDIO_PREFIX + instruction)


def pair_prompts(clips: int, prompts: str | Sequence[str], what: str = "prompt") -> list[str]:
    """One prompt (or `what`) for every clip, or one per clip: the list of per-clip ones."""
    prompts = [prompts] * clips if isinstance(prompts, str) else list(prompts)
    if len(prompts) != clips:
        raise PromptError(f"got {len(prompts)} {what}s for {clips} clips: give one {what}, or one per clip")
    return prompts


@dataclasses.dataclass(frozen=True)
class PromptTurn:
    """One turn of a conversation (the one turn type of chat sessions and the server)."""
    user: str
    clips: int = 0  # clips attached to this user turn (their <SpeechHere> slots come first)
    answer: str | Sequence[int] | None = None  # earlier turns: the answer as text or as generated ids


def render(turns: Sequence[PromptTurn], template: str, end_sym: str, eos_id: int | None = None,
           hint: str = "write plain text (audio is inserted for you)") -> list[Chunk]:
    """Render a conversation into chunks: text (adjacent text joined, `<SpeechHere>` per clip) and id lists.

    Earlier answers: a text answer (all an HTTP client can send) becomes " " + answer + end_sym and goes through
    the tokenizer with the rest of the text. An answer given as ids (ChatSession keeps what the model generated)
    is used as is, followed by `eos_id`: exactly the tokens the model produced, including the EOS it stopped on,
    which re-tokenising the decoded text would not always reproduce. The last turn is left open ("ASSISTANT:").
    """
    chunks: list[Chunk] = []

    def add(text: str) -> None:
        if chunks and isinstance(chunks[-1], str):
            chunks[-1] += text
        else:
            chunks.append(text)

    for turn in turns:
        for text in (turn.user, turn.answer if isinstance(turn.answer, str) else ""):
            check_placeholder(text, hint=hint)
        add(template.format(AUDIO_PREFIX * turn.clips + turn.user))
        if isinstance(turn.answer, str):
            add(" " + turn.answer + end_sym)
        elif turn.answer is not None:
            if eos_id is None:
                raise ValueError("answers given as ids need eos_id")
            chunks.append(list(turn.answer) + [eos_id])
    return chunks


def render_text(turns: Sequence[PromptTurn], template: str, end_sym: str, **kwargs) -> str:
    """The conversation as one templated prompt string (every answer given as text)."""
    chunks = render(turns, template, end_sym, **kwargs)
    if any(not isinstance(c, str) for c in chunks):
        raise ValueError("render_text needs every answer as text")
    return "".join(chunks)


# ---------------------------------------------------------------------------------------------------- LLM inputs
@dataclasses.dataclass
class Piece:
    """A stretch of one sample's LLM input."""
    embeds: torch.Tensor  # [n, d]
    labels: torch.Tensor  # [n], IGNORE_INDEX where nothing is learned
    mask: torch.Tensor  # [n], 1 = real position, 0 = padding
    audio: bool = False  # the piece is a clip's audio tokens (what CTC rescoring reads: salmonn.rescoring)

    def __len__(self) -> int:
        return self.embeds.shape[0]

    def padded(self, length: int, side: str) -> "Piece":
        """Padded to `length` on `side` with zero embeds, IGNORE labels and mask 0."""
        extra = length - len(self)
        if extra == 0:
            return self
        pads = (self.embeds.new_zeros(extra, self.embeds.shape[1]), self.labels.new_full((extra,), IGNORE_INDEX),
                self.mask.new_zeros(extra))
        parts = zip(pads, self.astuple()) if side == "left" else zip(self.astuple(), pads)
        return Piece(*(torch.cat(pair) for pair in parts), self.audio)

    def astuple(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.embeds, self.labels, self.mask


def piece(embeds: torch.Tensor, labels: torch.Tensor | None = None, audio: bool = False) -> Piece:
    """A piece of real positions; labels default to IGNORE_INDEX (not learned)."""
    if labels is None:
        labels = torch.full((embeds.shape[0],), IGNORE_INDEX, dtype=torch.long, device=embeds.device)
    return Piece(embeds, labels, torch.ones_like(labels), audio)


def text_piece(model: "SALMONN", text: str | list[int]) -> Piece:
    """Text (tokenised without special tokens) or ids, embedded by the model's LLM; nothing learned."""
    return piece(model.embed(text if isinstance(text, list) else model.token_ids(text)))


def prompt_pieces(model: "SALMONN", prompt: str, audio_tokens: torch.Tensor) -> list[Piece]:
    """[BOS] + prompt before <SpeechHere> + audio tokens [L, d] + prompt after it."""
    check_placeholder(prompt, allowed=1, hint="a full prompt holds the audio's place once")
    before, after = prompt.split(AUDIO_PLACEHOLDER)
    bos = text_piece(model, [model.tokenizer.bos_token_id])
    return [bos, text_piece(model, before), piece(audio_tokens.to(bos.embeds.dtype), audio=True),
            text_piece(model, after)]


def conversation_pieces(model: "SALMONN", chunks: Sequence[Chunk], clip_tokens: Sequence[torch.Tensor]) -> list[Piece]:
    """[BOS] + a rendered conversation, the k-th <SpeechHere> replaced by clip_tokens[k] ([L_k, d])."""
    pieces = [text_piece(model, [model.tokenizer.bos_token_id])]
    clips = iter(clip_tokens)
    for chunk in chunks:
        if isinstance(chunk, list):  # an earlier answer's ids + EOS
            pieces.append(text_piece(model, chunk))
            continue
        for k, text in enumerate(chunk.split(AUDIO_PLACEHOLDER)):
            if k:
                pieces.append(piece(next(clips).to(model.device, pieces[0].embeds.dtype), audio=True))
            pieces.append(text_piece(model, text))
    return [p for p in pieces if len(p)]


def target_piece(model: "SALMONN", text: str | list[int]) -> Piece:
    """Training target: text + end_sym tokenised (first max_txt_len tokens), or given ids; labels = ids."""
    m = model.config.model
    ids = text if isinstance(text, list) else model.token_ids(text + m.end_sym)[: m.max_txt_len]
    return piece(model.embed(ids), torch.tensor(ids, dtype=torch.long, device=model.device))


def assemble(rows: list[list[Piece]], side: str = "right", reference_batching: bool = False):
    """Pad per-sample piece lists into (inputs_embeds [B, L, d], attention_mask [B, L], labels [B, L],
    position_ids [B, L]).

    reference_batching pads every piece column to its longest (the reference's mid-sequence padding);
    otherwise each sample stays contiguous and only the whole sequence is padded (left for generation).
    """
    if reference_batching:
        widths = [max(len(p) for p in column) for column in zip(*rows)]
        rows = [[p.padded(w, "right") for p, w in zip(row, widths)] for row in rows]
    joined = [Piece(*(torch.cat(parts) for parts in zip(*(p.astuple() for p in row)))) for row in rows]
    length = max(len(j) for j in joined)
    embeds, labels, mask = (torch.stack(t) for t in zip(*(j.padded(length, side).astuple() for j in joined)))
    if side == "left":
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
    else:
        positions = torch.arange(length, device=mask.device).expand(len(rows), -1)
    return embeds, mask, labels, positions
