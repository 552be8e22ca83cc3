"""Average the trainable weights of checkpoints that grew from one start (a "model soup"), tensor by tensor.

    .venv/bin/python scripts/mini/average_weights.py OUT_DIR CKPT CKPT [...] [--weights 0.5,0.5]

Each CKPT is what `salmonn.checkpoint.read_state_dict` reads (a run's checkpoint folder, its .safetensors or a
reference .pth); all must hold the same tensor names and shapes
(strictly checked). The result is OUT_DIR/trainable.safetensors, loadable by `run.init_from`, `model.ckpt` and
scripts/mini/export.py. mini-v8's candidates averaged stage 1 (best dev ASR) with stage 2 (the instructed tasks).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from safetensors.torch import save_file

from salmonn.checkpoint import OURS_WEIGHTS, read_state_dict


def average(states: list[dict[str, torch.Tensor]], shares: list[float]) -> dict[str, torch.Tensor]:
    """sum_i shares[i] * states[i], in float32, each tensor back in its first checkpoint's dtype."""
    names = set(states[0])
    for i, state in enumerate(states[1:], 1):
        if set(state) != names:
            raise SystemExit(f"checkpoint {i + 1} holds other tensors than checkpoint 1 "
                             f"(e.g. {sorted(set(state) ^ names)[:3]}): not from one start")
        bad = [k for k in names if state[k].shape != states[0][k].shape]
        if bad:
            raise SystemExit(f"checkpoint {i + 1}: {bad[0]} is {tuple(state[bad[0]].shape)}, "
                             f"checkpoint 1 has {tuple(states[0][bad[0]].shape)}")
    return {k: sum(s * state[k].float() for s, state in zip(shares, states)).to(states[0][k].dtype)
            for k in sorted(names)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("checkpoints", type=Path, nargs="+")
    parser.add_argument("--weights", help="comma-separated shares summing to 1 (default: equal)")
    args = parser.parse_args()
    n = len(args.checkpoints)
    shares = [float(x) for x in args.weights.split(",")] if args.weights else [1 / n] * n
    if len(shares) != n or abs(sum(shares) - 1) > 1e-6:
        raise SystemExit(f"--weights: {n} shares summing to 1 expected, got {shares}")
    states = [read_state_dict(p) for p in args.checkpoints]
    averaged = average(states, shares)
    args.out.mkdir(parents=True, exist_ok=True)
    save_file(averaged, str(args.out / OURS_WEIGHTS), metadata={"format": "salmonn"})
    print("wrote", args.out / OURS_WEIGHTS)


if __name__ == "__main__":
    main()
