"""Should SALMONN-mini keep a BEATs branch? Linear probes on frozen features decide (issue 7).

No pretrained BEATs weights are reachable offline, so the candidates are: Whisper alone, or Whisper + a randomly
initialised frozen BEATs. For the synthetic corpus' sound-event and instrument labels we mean-pool each encoder's
output over the clip and train a multinomial logistic regression on the train split, scoring the test split.

    .venv/bin/python scripts/mini/probe_beats.py data/mini --out docs/mini/beats_probe.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from tqdm import tqdm

from salmonn import audio as A
from salmonn import whisper as W
from salmonn.features import whisper_log_mel
from salmonn.frames import frames_for
from salmonn.backbones import ensure_backbones
from salmonn.beats import BEATs, BEATsConfig
from salmonn.manifest import read_manifest
from salmonn.builder import load_whisper_encoder

# Released BEATs layout at a CPU-friendly width (random weights: nothing pretrained is reachable here).
RANDOM_BEATS = dict(input_patch_size=16, embed_dim=256, encoder_layers=4, encoder_embed_dim=256,
                    encoder_ffn_embed_dim=1024, encoder_attention_heads=4, conv_pos=128, conv_pos_groups=16,
                    relative_position_embedding=True, num_buckets=320, max_distance=800, gru_rel_pos=True,
                    deep_norm=True, dropout=0.0, attention_dropout=0.0)


@torch.no_grad()
def pooled_features(records, whisper, extractor, beats) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean-pooled Whisper [N, 512] and BEATs [N, 256] features of each record's clip."""
    speech, audio = [], []
    for record in tqdm(records, desc="features", leave=False):
        wav = A.pad_to_min(A.load_audio(record["path"]))
        mel = whisper_log_mel([wav], extractor)
        frames = frames_for(torch.tensor([len(wav)]))
        speech.append(W.encode(whisper, mel, frames)[0].mean(0))
        audio.append(beats.extract_features(torch.from_numpy(wav)[None])[0][0].mean(0))
    return torch.stack(speech), torch.stack(audio)


def probe(train_x, train_y, test_x, test_y, classes: int, steps: int = 500) -> float:
    """Test accuracy of a logistic regression fitted on standardised features."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    torch.manual_seed(0)
    layer = torch.nn.Linear(train_x.shape[1], classes)
    opt = torch.optim.LBFGS(layer.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(layer(train_x), train_y) + 1e-3 * layer.weight.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    return (layer(test_x).argmax(-1) == test_y).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--per-task", type=int, default=400, help="train clips per task (all test clips are used)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    paths = ensure_backbones()
    whisper, extractor = load_whisper_encoder(str(paths["whisper"]), torch.float32)
    beats = BEATs(BEATsConfig(**RANDOM_BEATS)).eval()
    results = {}
    for task in ("sound_event", "instrument"):
        splits = {s: [r for r in read_manifest(args.corpus / f"{s}.json") if r["task"] == task]
                  for s in ("train", "test")}
        splits["train"] = splits["train"][: args.per_task]
        labels = sorted({r["text"] for r in splits["train"]})
        start = time.time()
        feats = {s: pooled_features(rs, whisper, extractor, beats) for s, rs in splits.items()}
        ys = {s: torch.tensor([labels.index(r["text"]) for r in rs]) for s, rs in splits.items()}
        options = {"whisper": lambda f: f[0], "random_beats": lambda f: f[1],
                   "whisper+random_beats": lambda f: torch.cat(f, -1)}
        results[task] = {name: probe(pick(feats["train"]), ys["train"], pick(feats["test"]), ys["test"], len(labels))
                         for name, pick in options.items()}
        results[task].update(classes=len(labels), train=len(splits["train"]), test=len(splits["test"]),
                             seconds=round(time.time() - start, 1))
        print(task, json.dumps(results[task]))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
