"""Random-weight SALMONN of the speed issue's shapes, built once into a cache dir (not in git).

    .venv/bin/python benchmarks/models.py [--out cache/bench]   # prints the config path

- Whisper encoder: d 512, 6 layers, 8 heads, FFN 2048, 80 mel bins (whisper-base encoder sizes); an HF dir with
  only the encoder's tensors (`model.encoder.*`), config.json and preprocessor_config.json.
- BEATs: the released BEATs_iter3+ AS2M cfg (SPEC.md §2), saved as `{"cfg", "model"}`.
- LLM: LlamaConfig hidden 576, 30 layers, 9 heads (no GQA), FFN 1536, vocab 4000; sentencepiece BPE tokenizer of
  vocab 4000 trained with sentencepiece's own trainer on the Debian fortunes (or any text given by --text).
- SALMONN: Q-Former with BERT-base sizes (768, 12 heads, FFN 3072, 2 layers), fresh trainable checkpoint.

Everything is seeded; a second run reuses what is there (delete the dir to rebuild).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "cache" / "bench"
FORTUNES = Path("/usr/share/games/fortunes")

WHISPER = dict(d_model=512, encoder_layers=6, encoder_attention_heads=8, encoder_ffn_dim=2048, num_mel_bins=80)
BEATS_CFG = dict(input_patch_size=16, embed_dim=512, conv_bias=False, encoder_layers=12, encoder_embed_dim=768,
                 encoder_ffn_embed_dim=3072, encoder_attention_heads=12, activation_fn="gelu",
                 layer_wise_gradient_decay_ratio=0.6, layer_norm_first=False, deep_norm=True, dropout=0.0,
                 attention_dropout=0.0, activation_dropout=0.0, encoder_layerdrop=0.05, dropout_input=0.0,
                 conv_pos=128, conv_pos_groups=16, relative_position_embedding=True, num_buckets=320,
                 max_distance=800, gru_rel_pos=True, finetuned_model=False)
LLAMA = dict(hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=9,
             intermediate_size=1536, vocab_size=4000, max_position_embeddings=2048, rms_norm_eps=1e-5,
             tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=None)
VOCAB = 4000

CONFIG = """# random-weight SALMONN of the speed issue's shapes (benchmarks/models.py); answers are noise
model:
  llama_path: "llama"
  whisper_path: "whisper"
  beats_path: "beats.pt"
  ckpt: "salmonn"
  qformer_hidden_size: 768
  qformer_num_attention_heads: 12
  qformer_intermediate_size: 3072
  qformer_num_hidden_layers: 2
  lora: True
  lora_rank: 8
  lora_alpha: 32
  prompt_template: "USER: {}\\nASSISTANT:"
  end_sym: "</s>"
generate:
  num_beams: 1
  max_new_tokens: 32
"""


def fortune_text(limit_bytes: int = 3_000_000) -> list[str]:
    """Plain-text lines of the Debian fortunes (the .dat index files and offensive rot13 dir skipped)."""
    lines: list[str] = []
    total = 0
    for path in sorted(FORTUNES.glob("*")):
        if not path.is_file() or path.suffix in (".dat", ".u8"):
            continue
        for line in path.read_text(errors="ignore").splitlines():
            line = line.strip()
            if line and line != "%":
                lines.append(line)
                total += len(line)
        if total > limit_bytes:
            break
    return lines


def build_tokenizer(out: Path, text: Path | None) -> None:
    import sentencepiece as spm
    lines = text.read_text(errors="ignore").splitlines() if text else fortune_text()
    if len(lines) < 1000:
        raise SystemExit(f"need English text to train the tokenizer (found {len(lines)} lines); pass --text FILE")
    out.mkdir(parents=True, exist_ok=True)
    corpus = out / "corpus.txt"
    corpus.write_text("\n".join(lines))
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(out / "sp"), vocab_size=VOCAB,
                                   model_type="bpe", byte_fallback=True, character_coverage=1.0,
                                   unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=2,
                                   normalization_rule_name="identity", add_dummy_prefix=True,
                                   remove_extra_whitespaces=False, split_digits=True, minloglevel=2)
    corpus.unlink()
    (out / "sp.model").replace(out / "tokenizer.model")  # the sentencepiece file HF LLaMA dirs ship
    (out / "sp.vocab").unlink()
    special = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    (out / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False, "legacy": True,
         "clean_up_tokenization_spaces": False, "pad_token": None, **special}, indent=2))
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2))


def build(out: Path, text: Path | None = None) -> Path:
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaForCausalLM, WhisperConfig, WhisperFeatureExtractor
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    from salmonn.beats import BEATs, BEATsConfig
    from salmonn.config import load_config
    from salmonn.builder import load_model

    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    whisper = out / "whisper"
    if not (whisper / "model.safetensors").is_file():
        whisper.mkdir(exist_ok=True)
        config = WhisperConfig(**WHISPER, decoder_layers=6, decoder_attention_heads=8, decoder_ffn_dim=2048)
        encoder = WhisperEncoder(config)
        config.save_pretrained(whisper)
        WhisperFeatureExtractor(feature_size=WHISPER["num_mel_bins"]).save_pretrained(whisper)
        save_file({f"model.encoder.{k}": v.contiguous() for k, v in encoder.state_dict().items()},
                  str(whisper / "model.safetensors"), metadata={"format": "pt"})
    if not (out / "beats.pt").is_file():
        beats = BEATs(BEATsConfig(**BEATS_CFG))
        torch.save({"cfg": BEATS_CFG, "model": beats.state_dict()}, out / "beats.pt")
    llama = out / "llama"
    if not (llama / "model.safetensors").is_file():
        build_tokenizer(llama, text)
        model = LlamaForCausalLM(LlamaConfig(**LLAMA, initializer_range=0.02))
        model.save_pretrained(llama)
    if not (out / "salmonn" / "trainable.safetensors").is_file():
        (out / "config.yaml").write_text(CONFIG.replace('ckpt: "salmonn"', 'ckpt: ""'))
        model = load_model(load_config(out / "config.yaml", ["model.device=cpu"]))
        model.save_checkpoint(out / "salmonn")
    (out / "config.yaml").write_text(CONFIG)
    return out / "config.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--text", type=Path, default=None, help="English text for the tokenizer (default: fortunes)")
    args = parser.parse_args()
    print(build(args.out, args.text))


if __name__ == "__main__":
    sys.exit(main())
