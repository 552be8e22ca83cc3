"""The three recipes end to end on the tiny backbones: stage 1 -> stage 2 -> stage 3, each from the last."""

from __future__ import annotations

import types

import pytest
import torch
from safetensors.torch import load_file

from salmonn import load_model
from salmonn.train.activation import write_stories
from salmonn.train.config import load_train_config
from salmonn.jsonl import read_jsonl
from salmonn.train.data import DataError

from ..conftest import FIXTURE
from .conftest import CONFIGS, metrics, run_stage, tiny, write_jsonl


@pytest.fixture(scope="module")
def stage1(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("stage1")
    final = run_stage("stage1_pretrain.yaml", corpus, out, "run.iters_per_epoch=8", "run.optims.max_epoch=2",
                      f"datasets.valid_ann_path={corpus / 'valid.json'}")
    return out, final


@pytest.fixture(scope="module")
def stage2(corpus, stage1, tmp_path_factory):
    out = tmp_path_factory.mktemp("stage2")
    qa = [{"path": str(corpus / f"{k}.wav"), "text": f"the sound is {t}", "task": "QA", "Q": "What is the sound?"}
          for k, t in [("tone", "a steady tone"), ("noise", "loud noise"), ("quiet", "near silence"),
                       ("clicks", "fast clicks")]]
    manifest = write_jsonl(out / "instruct.jsonl", qa)
    final = run_stage("stage2_instruct.yaml", corpus, out, f"run.init_from={stage1[1]}", "run.iters_per_epoch=12",
                      "run.optims.max_epoch=1", f"datasets.train_ann_path={manifest}")
    return out, final


def test_stage1_loss_falls_and_the_run_leaves_everything_it_promises(stage1):
    out, final = stage1
    train = metrics(out)
    assert [r["step"] for r in train] == list(range(1, 17))
    losses = [r["loss"] for r in train]
    assert sum(losses[-3:]) / 3 < 0.6 * losses[0], losses
    valid = metrics(out, "valid")
    assert [r["step"] for r in valid] == [8, 16] and valid[1]["loss"] < valid[0]["loss"]
    assert all(isinstance(r["listening_gap"], float) for r in valid)  # validation batches hold >= 2 clips
    assert all(r["lr"] > 0 and r["samples_per_s"] > 0 for r in train)
    samples = read_jsonl(out / "samples.jsonl", strict=True)
    assert [s["step"] for s in samples] == [8, 16] and "answer" in samples[0]
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["latest", "step_00000008", "step_00000016"]
    assert {p.name for p in final.iterdir()} >= {"trainable.safetensors", "config.json", "salmonn.pth", "infer.yaml"}


def test_final_checkpoint_loads_for_inference_and_in_the_reference_layout(stage1):
    _, final = stage1
    trained = load_file(final / "trainable.safetensors")
    model = load_model(final / "infer.yaml")  # strict: every trainable tensor must be there
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in trained.items())
    ref = torch.load(final / "salmonn.pth", map_location="cpu", weights_only=True)
    assert set(ref) == {"model"} and set(ref["model"]) == set(trained)
    assert "speech_Qformer.bert.encoder.layer.0.crossattention.self.key.weight" in ref["model"]
    assert "llama_model.base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight" in ref["model"]
    fresh = load_model(FIXTURE / "config.yaml", load_checkpoint=False)
    fresh.load_checkpoint(final / "salmonn.pth")  # the reference .pth, checked key by key
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in ref["model"].items())
    answer = model.generate(str(FIXTURE.parents[1] / "audio" / "duck.wav"), "Describe the audio.", num_beams=1,
                            max_new_tokens=3)
    assert len(answer) == 1


def test_stage2_starts_from_stage1_and_learns_the_new_task(stage2):
    out, _ = stage2
    losses = [r["loss"] for r in metrics(out)]
    assert len(losses) == 12
    assert losses[0] < 5.0  # a fresh model is at ln(401) ~ 6.0 on any target: this one starts from stage 1
    assert sum(losses[-3:]) / 3 < 0.9 * losses[0], losses


def test_stage3_writes_stories_at_half_lora_scale_and_tunes_only_lora(corpus, stage2, tmp_path):
    _, stage2_final = stage2
    final = run_stage("stage3_activation.yaml", corpus, tmp_path, f"run.init_from={stage2_final}",
                      f"activation.source_ann_path={corpus / 'train.jsonl'}", "activation.num_stories=3",
                      "activation.max_candidates=4", "activation.judge=QA", "generate.min_new_tokens=3",
                      "run.batch_size_train=1", "run.batch_size_eval=4")
    stories = read_jsonl(tmp_path / "stories.jsonl", strict=True)
    assert len(stories) == 3 and {s["task"] for s in stories} == {"audio_story_telling"}
    assert len(read_jsonl(tmp_path / "stories_all.jsonl", strict=True)) == 4
    assert len(metrics(tmp_path)) == 12
    before, after = load_file(stage2_final / "trainable.safetensors"), load_file(final / "trainable.safetensors")
    assert set(before) == set(after)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all("lora_" in k for k in changed)
    assert any("lora_B" in k for k in changed)


class _FakeModel:
    """Stands in for SALMONN in write_stories: records the LoRA scale each story was written at."""

    def __init__(self, tokenizer, answers):
        self.tokenizer, self.answers, self.lora_scale, self.scales = tokenizer, list(answers), 1.0, []

    def set_lora_scale(self, scale):
        self.lora_scale = scale

    def eval(self):
        return self

    def train(self, mode=True):
        return self

    def generate(self, audio, prompts, templated=False):
        assert templated and all("<SpeechHere>" in p for p in prompts)
        self.scales.append(self.lora_scale)
        return [types.SimpleNamespace(text=self.answers.pop(0)) for _ in audio]


STORY = ("The old fisherman heard the steady tone of the harbour bell at dawn. He pushed his boat into the grey "
         "water and rowed past the sleeping houses, counting the strokes until the bell faded behind him. By noon "
         "the sea had turned bright and calm, and he sang to himself all the way home.")


def test_only_stories_that_follow_the_instruction_are_kept(corpus, tmp_path):
    from transformers import AutoTokenizer
    tc = load_train_config(CONFIGS / "stage3_activation.yaml", tiny(corpus, tmp_path, "activation.num_stories=2",
                                                                    "run.batch_size_eval=1"))
    answers = ["a steady tone", STORY, "", STORY.replace("fisherman", "baker")]  # caption echo, story, empty, story
    model = _FakeModel(AutoTokenizer.from_pretrained(FIXTURE / "llama"), answers)
    trainer = types.SimpleNamespace(tc=tc, env=types.SimpleNamespace(rank=0, world=1, main=True), model=model,
                                    resume=False, fsdp=False, log=lambda message: None)
    path = write_stories(trainer)
    kept = read_jsonl(path, strict=True)
    assert [k["text"] for k in kept] == [STORY, STORY.replace("fisherman", "baker")]
    assert model.scales == [0.5] * 4 and model.lora_scale == 1.0  # written at half scale, restored after
    model.answers = ["no", "", "a steady tone", "short."]
    with pytest.raises(DataError, match="only 0 of 4 generated stories follow the instruction"):
        write_stories(trainer)


def test_a_checkpoint_without_lora_seeds_a_stage_only_when_allowed(corpus, stage1, tmp_path):
    from safetensors.torch import save_file
    from salmonn.errors import CheckpointError
    trained = load_file(stage1[1] / "trainable.safetensors")
    no_lora = tmp_path / "no_lora.safetensors"
    save_file({k: v for k, v in trained.items() if "lora_" not in k}, str(no_lora))
    common = (f"run.init_from={no_lora}", "run.iters_per_epoch=2", "run.optims.max_epoch=1", "run.max_steps=1",
              "run.plot=false")
    with pytest.raises(CheckpointError, match="missing keys: llama_model.*lora_A"):
        run_stage("stage2_instruct.yaml", corpus, tmp_path / "strict", *common)
    run_stage("stage2_instruct.yaml", corpus, tmp_path / "lenient", *common, "run.init_allow_missing=[lora_]")
    first = metrics(tmp_path / "lenient")[0]["loss"]
    assert first < 5.0  # the Q-Former, projection and head came from stage 1
