"""Checkpoint I/O: released layouts load unchanged (scaled-down synthetic copies), bad checkpoints fail clearly."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml
from transformers import LlamaConfig, LlamaForCausalLM, WhisperConfig, WhisperFeatureExtractor, \
    WhisperForConditionalGeneration

from salmonn import CheckpointError, load_model
from salmonn.checkpoint import load_beats, read_state_dict

from .conftest import FIXTURE

# Scaled-down sizes; the released 13B model has whisper 1280, BEATs 768, Q-Former 768 x 2, LLaMA 5120 x 40.
WHISPER_D, BEATS_EMBED, BEATS_D, QF_D, QF_FFN, QF_LAYERS, LLM_D, LLM_LAYERS = 32, 16, 24, 32, 64, 2, 32, 2


def released_beats_state(cfg: dict) -> dict[str, torch.Tensor]:
    """A BEATs state dict spelled out in the released checkpoint's key names."""
    d, e, f, h, k = cfg["encoder_embed_dim"], cfg["embed_dim"], cfg["encoder_ffn_embed_dim"], \
        cfg["encoder_attention_heads"], cfg["conv_pos"]
    state = {"post_extract_proj.weight": (d, e), "post_extract_proj.bias": (d,),
             "patch_embedding.weight": (e, 1, 16, 16), "layer_norm.weight": (e,), "layer_norm.bias": (e,),
             "encoder.pos_conv.0.bias": (d,), "encoder.pos_conv.0.weight_g": (1, 1, k),
             "encoder.pos_conv.0.weight_v": (d, d // cfg["conv_pos_groups"], k),
             "encoder.layer_norm.weight": (d,), "encoder.layer_norm.bias": (d,),
             "predictor.weight": (cfg["predictor_class"], d), "predictor.bias": (cfg["predictor_class"],)}
    for i in range(cfg["encoder_layers"]):
        p = f"encoder.layers.{i}."
        state.update({p + "self_attn.grep_a": (1, h, 1, 1), p + "self_attn.relative_attention_bias.weight": (320, h),
                      p + "self_attn.grep_linear.weight": (8, d // h), p + "self_attn.grep_linear.bias": (8,),
                      p + "fc1.weight": (f, d), p + "fc1.bias": (f,), p + "fc2.weight": (d, f), p + "fc2.bias": (d,)})
        for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
            state.update({p + f"self_attn.{proj}.weight": (d, d), p + f"self_attn.{proj}.bias": (d,)})
        for norm in ("self_attn_layer_norm", "final_layer_norm"):
            state.update({p + f"{norm}.weight": (d,), p + f"{norm}.bias": (d,)})
    tensors = {key: torch.randn(shape) * 0.05 for key, shape in state.items()}
    for i in range(1, cfg["encoder_layers"]):  # the released file stores the shared table under every layer
        tensors[f"encoder.layers.{i}.self_attn.relative_attention_bias.weight"] = \
            tensors["encoder.layers.0.self_attn.relative_attention_bias.weight"]
    return tensors


def released_salmonn_state(width: int) -> dict[str, torch.Tensor]:
    """A `salmonn_v1.pth`-style {"model": ...} state, key names written out as the reference trainer saves them."""
    shapes = {"speech_query_tokens": (1, 1, QF_D), "ln_speech.weight": (WHISPER_D,), "ln_speech.bias": (WHISPER_D,),
              "ln_audio.weight": (BEATS_D,), "ln_audio.bias": (BEATS_D,),
              "speech_llama_proj.weight": (LLM_D, QF_D), "speech_llama_proj.bias": (LLM_D,),
              "speech_Qformer.bert.embeddings.LayerNorm.weight": (QF_D,),
              "speech_Qformer.bert.embeddings.LayerNorm.bias": (QF_D,)}
    for i in range(QF_LAYERS):
        p = f"speech_Qformer.bert.encoder.layer.{i}."
        for block, kv_width in (("attention", QF_D), ("crossattention", width)):
            for name, in_width in (("query", QF_D), ("key", kv_width), ("value", kv_width)):
                shapes.update({p + f"{block}.self.{name}.weight": (QF_D, in_width), p + f"{block}.self.{name}.bias": (QF_D,)})
            shapes.update({p + f"{block}.output.dense.weight": (QF_D, QF_D), p + f"{block}.output.dense.bias": (QF_D,),
                           p + f"{block}.output.LayerNorm.weight": (QF_D,), p + f"{block}.output.LayerNorm.bias": (QF_D,)})
        shapes.update({p + "intermediate_query.dense.weight": (QF_FFN, QF_D), p + "intermediate_query.dense.bias": (QF_FFN,),
                       p + "output_query.dense.weight": (QF_D, QF_FFN), p + "output_query.dense.bias": (QF_D,),
                       p + "output_query.LayerNorm.weight": (QF_D,), p + "output_query.LayerNorm.bias": (QF_D,)})
    for i in range(LLM_LAYERS):
        p = f"llama_model.base_model.model.model.layers.{i}.self_attn."
        for proj in ("q_proj", "v_proj"):
            shapes.update({p + f"{proj}.lora_A.default.weight": (8, LLM_D), p + f"{proj}.lora_B.default.weight": (LLM_D, 8)})
    state = {k: (torch.randn(s) * 0.05).half() for k, s in shapes.items()}  # released files hold fp16 tensors
    # buffers the reference trainer saves as well
    state.update({f"llama_model.base_model.model.model.layers.{i}.self_attn.rotary_emb.inv_freq": torch.ones(4)
                  for i in range(LLM_LAYERS)})
    state["speech_Qformer.bert.embeddings.position_ids"] = torch.arange(512)[None]
    state["beats.encoder.layers.1.self_attn.relative_attention_bias.weight"] = torch.zeros(320, 4)
    return state


@pytest.fixture(scope="module")
def released(tmp_path_factory) -> Path:
    """A scaled-down copy of the released 13B file set: whisper dir, BEATs cpt2, Vicuna dir, salmonn_v1.pth."""
    root = tmp_path_factory.mktemp("released")
    whisper = WhisperForConditionalGeneration(WhisperConfig(
        d_model=WHISPER_D, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4, decoder_attention_heads=4,
        encoder_ffn_dim=64, decoder_ffn_dim=64, vocab_size=100, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        decoder_start_token_id=1, num_mel_bins=80, max_source_positions=1500,
        max_target_positions=32))
    whisper.save_pretrained(root / "whisper-large-v2")
    WhisperFeatureExtractor(feature_size=80).save_pretrained(root / "whisper-large-v2")
    cfg = {"input_patch_size": 16, "embed_dim": BEATS_EMBED, "conv_bias": False, "encoder_layers": 2,
           "encoder_embed_dim": BEATS_D, "encoder_ffn_embed_dim": 48, "encoder_attention_heads": 4,
           "activation_fn": "gelu", "layer_wise_gradient_decay_ratio": 0.6, "layer_norm_first": False,
           "deep_norm": True, "dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0,
           "encoder_layerdrop": 0.05, "dropout_input": 0.0, "conv_pos": 8, "conv_pos_groups": 4,
           "relative_position_embedding": True, "num_buckets": 320, "max_distance": 800, "gru_rel_pos": True,
           "finetuned_model": True, "predictor_dropout": 0.0, "predictor_class": 527}
    torch.save({"cfg": cfg, "model": released_beats_state(cfg), "label_dict": {"/m/09x0r": 0}},
               root / "BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt2.pt")
    vicuna = root / "vicuna-13b-v1.1"  # LLaMA dir without [PAD] (the reference adds it at load time)
    LlamaForCausalLM(LlamaConfig(vocab_size=400, hidden_size=LLM_D, intermediate_size=64, num_hidden_layers=LLM_LAYERS,
                                 num_attention_heads=4, max_position_embeddings=512)).save_pretrained(vicuna)
    for name in ("tokenizer.model", "tokenizer_config.json"):
        shutil.copy(FIXTURE / "llama" / name, vicuna / name)
    torch.save({"model": released_salmonn_state(WHISPER_D + BEATS_D)}, root / "salmonn_v1.pth")
    config = yaml.safe_load((FIXTURE / "config.yaml").read_text())
    config["model"].update(llama_path="vicuna-13b-v1.1", whisper_path="whisper-large-v2",
                           beats_path="BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt2.pt", ckpt="salmonn_v1.pth",
                           qformer_hidden_size=QF_D, qformer_num_attention_heads=4, qformer_intermediate_size=QF_FFN,
                           qformer_num_hidden_layers=QF_LAYERS, prompt_path="prompts/train_prompt.json")
    config["generate"] = {"max_new_tokens": 200, "num_beams": 4, "do_sample": False, "min_length": 1,
                          "temperature": 1.0, "top_p": 0.9, "repetition_penalty": 1.0, "length_penalty": 1.0}
    (root / "decode_config.yaml").write_text(yaml.safe_dump(config))
    return root


def test_released_layout_loads_with_nothing_but_a_config(released):
    model = load_model(released / "decode_config.yaml")
    file = torch.load(released / "salmonn_v1.pth", weights_only=True)["model"]
    own = model.state_dict()
    for key in ("speech_Qformer.bert.encoder.layer.1.crossattention.self.key.weight", "speech_query_tokens",
                "llama_model.base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight"):
        assert torch.equal(own[key], file[key].float())
    answer = model.generate(torch.zeros(16000).numpy(), "Describe the audio.", sample_rate=16000,
                            num_beams=1, max_new_tokens=3)[0]
    assert len(answer.token_ids) <= 3
    assert model.tokenizer.pad_token_id == model.tokenizer.unk_token_id  # no new embedding row
    assert model.llama_model.get_input_embeddings().weight.shape[0] == 400


def test_released_beats_checkpoint_loads_strictly(released):
    beats = load_beats(released / "BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt2.pt")
    assert beats.predictor.weight.shape == (527, BEATS_D)
    features, _ = beats.extract_features(torch.randn(1, 32000) * 0.1)
    assert features.shape == (1, 8 * ((1 + (32000 - 400) // 160) // 16), BEATS_D)


@pytest.mark.parametrize("mutation, message", [
    ("drop", "missing keys: speech_llama_proj.bias"),
    ("extra", "unexpected keys: speech_Qformer.bert.encoder.layer.9.output_query.dense.weight"),
    ("shape", "shape mismatch: ln_speech.weight checkpoint (7,) vs model (32,)"),
])
def test_mismatched_checkpoint_names_the_keys(released, tmp_path, mutation, message):
    state = torch.load(released / "salmonn_v1.pth", weights_only=True)["model"]
    if mutation == "drop":
        del state["speech_llama_proj.bias"]
    elif mutation == "extra":
        state["speech_Qformer.bert.encoder.layer.9.output_query.dense.weight"] = torch.zeros(2, 2)
    else:
        state["ln_speech.weight"] = torch.ones(7)
    torch.save({"model": state}, tmp_path / "bad.pth")
    model = load_model(released / "decode_config.yaml", load_checkpoint=False)
    before = {k: v.clone() for k, v in model.trainable_state_dict().items()}
    with pytest.raises(CheckpointError, match=message.replace("(", r"\(").replace(")", r"\)")):
        model.load_checkpoint(tmp_path / "bad.pth")
    assert all(torch.equal(before[k], v) for k, v in model.trainable_state_dict().items())  # nothing half-loaded


def test_pickled_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    torch.save({"model": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="weights-only"):
        read_state_dict(tmp_path / "evil.pth")


def test_our_format_and_reference_export_round_trip(tiny_model, tmp_path, fixture_clips):
    reference_keys = set(torch.load(FIXTURE / "salmonn.pth", weights_only=True)["model"])
    tiny_model.save_checkpoint(tmp_path / "ours")
    tiny_model.export_reference(tmp_path / "exported.pth")
    exported = torch.load(tmp_path / "exported.pth", weights_only=True)["model"]
    buffers = {k for k in reference_keys if "inv_freq" in k or "position_ids" in k or k.startswith("beats.")}
    assert set(exported) == reference_keys - buffers
    for source in (tmp_path / "ours", tmp_path / "exported.pth"):
        copy = load_model(FIXTURE / "config.yaml", [f"ckpt={source}"])
        a = copy.encode_audio(fixture_clips[:1])[0]
        b = tiny_model.encode_audio(fixture_clips[:1])[0]
        assert torch.equal(a, b)
    assert not list(tmp_path.glob("**/*.tmp"))  # atomic writes leave no temp files
