"""Ship a trained SALMONN-mini: its trainable tensors as fp16 safetensors beside the packaged default config.

    .venv/bin/python scripts/mini/export.py runs/mini/stage3/final/trainable.safetensors

The packaged config (src/salmonn/assets/mini/config.yaml) loads it strictly; fp16 halves the file (the model
computes in fp32: the tensors are cast back on load).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from salmonn.defaults import MINI_DIR


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a trainable.safetensors written by salmonn train")
    parser.add_argument("--out", type=Path, default=MINI_DIR / "trainable.safetensors")
    args = parser.parse_args()
    tensors = {k: v.to(torch.float16).contiguous() for k, v in load_file(args.checkpoint).items()}
    save_file(tensors, str(args.out), metadata={"source": str(args.checkpoint)})
    values, size = sum(t.numel() for t in tensors.values()), args.out.stat().st_size
    print(f"{args.out}: {len(tensors)} tensors, {values:,} values, {size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
