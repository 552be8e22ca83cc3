"""Where SALMONN-mini loses the speaker's gender: a linear probe at each stage of the audio path.

    .venv/bin/python scripts/mini/gender_probe.py [--config CFG] [--corpus ~/.cache/salmonn/data/mini-v2]
        [--clips 400] [--out scripts/mini/results/gender_probe.json]

On the mini-v2 test split's gender clips (held-out speakers; espeak-ng and neural voices), each clip's mean over
time of (1) Whisper's frames, (2) the audio tokens of every query, (3) each query's tokens alone, feeds a logistic
regression (torch, L2, 5-fold cross-validation by clip). A stage that holds the gender scores near 1; chance is
the majority share. If the tokens hold it but the model still answers one label, the LLM does not read it.
`label_embedding_accuracy`: no fitting at all, each query's mean token classified by its cosine with the LLM's
embeddings of "male" and "female" -- what run.gender_weight trains (train/gender.py).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from salmonn.audio import batch_waveforms, load_audio
from salmonn.builder import load_model
from salmonn.errors import ConfigError
from salmonn.features import whisper_log_mel
from salmonn.jsonl import read_jsonl
from salmonn.train.ctc import ctc_logits
from salmonn.train.gender import label_ids

FOLDS = 5
L2 = 1e-2  # weight decay of the probe: the features have 512-576 dims for a few hundred clips


def features(model, paths: list[str], batch: int = 8) -> dict[str, np.ndarray]:
    """Per clip: mean Whisper frame, mean audio token over all queries, and per query."""
    q = model.config.model.num_speech_query_token
    out: dict[str, list] = {"whisper": [], "tokens": [], **{f"query {i}": [] for i in range(q)}}
    for at in range(0, len(paths), batch):
        segments = [load_audio(p) for p in paths[at:at + batch]]
        with torch.no_grad():
            spec = whisper_log_mel(segments, model.feature_extractor)
            raw, pad = batch_waveforms(segments)
            enc = model.encode(spec, raw, pad)
            tokens = model.connect(enc)
        for i, t in enumerate(tokens):
            n = int(enc.speech_frames[i]) if enc.speech_frames is not None else enc.speech.shape[1]
            out["whisper"].append(enc.speech[i, :n].float().mean(0).numpy())
            out["tokens"].append(t.float().mean(0).numpy())
            per_query = t.float().view(-1, q, t.shape[-1])  # [L * Q, d] -> [L, Q, d]
            for k in range(q):
                out[f"query {k}"].append(per_query[:, k].mean(0).numpy())
    return {k: np.stack(v) for k, v in out.items()}


def fit_logistic(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    w = torch.zeros(x.shape[1], dtype=x.dtype, requires_grad=True)
    b = torch.zeros((), dtype=x.dtype, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200)

    def loss():
        opt.zero_grad()
        value = torch.nn.functional.binary_cross_entropy_with_logits(x @ w + b, y) + L2 * w.pow(2).sum()
        value.backward()
        return value
    opt.step(loss)
    return w.detach(), b.detach()


def probe(x: np.ndarray, y: np.ndarray) -> float:
    """Held-out accuracy of a standardised logistic regression, FOLDS-fold cross-validation."""
    x, y = torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    correct = 0
    for fold in order.chunk(FOLDS):
        train = order[~torch.isin(order, fold)]
        mean, std = x[train].mean(0), x[train].std(0).clamp(min=1e-6)
        w, b = fit_logistic((x[train] - mean) / std, y[train])
        correct += int((((x[fold] - mean) / std @ w + b > 0).double() == y[fold]).sum())
    return correct / len(y)


def label_embedding_accuracy(model, feats: dict[str, np.ndarray], y: np.ndarray) -> dict[str, float]:
    """Per query: the share of clips whose mean token is closer (cosine) to the embedding of their gender word."""
    try:
        ids = label_ids(model.tokenizer, ["male", "female"])
    except ConfigError:  # an LLM whose tokenizer splits the words: no fit-free classifier to score
        return {}
    table = model.llama_model.get_input_embeddings().weight[ids].detach()  # [2, d]
    return {name: round(float(((ctc_logits(torch.tensor(x), table, 1.0).argmax(-1) == 1).numpy() == y).mean()), 3)
            for name, x in feats.items() if name.startswith("query")}  # argmax 1: "female"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=None, help="model YAML (default: SALMONN-mini)")
    parser.add_argument("--corpus", type=Path, default=Path.home() / ".cache" / "salmonn" / "data" / "mini-v2")
    parser.add_argument("--clips", type=int, default=400)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "gender_probe.json")
    args = parser.parse_args()
    torch.set_num_threads(2)
    records = read_jsonl((args.corpus / "test_gender_recognition.jsonl"), strict=True)
    records = records[:: max(1, len(records) // args.clips)][:args.clips]
    y = np.array([r["text"] == "female" for r in records])
    model = load_model(args.config).eval()
    feats = features(model, [r["path"] for r in records])
    result = {"config": args.config or "SALMONN-mini (default)", "clips": len(records),
              "majority_share": float(max(y.mean(), 1 - y.mean())),
              "accuracy": {k: round(probe(v, y), 3) for k, v in feats.items()},
              "label_embedding_accuracy": label_embedding_accuracy(model, feats, y)}
    print(json.dumps(result, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
