"""`salmonn train`: run a training recipe."""

from __future__ import annotations

from ..cli import command


@command
def train(config: str, /, resume: bool = False, overrides: list[str] = ()) -> None:
    """Train SALMONN with a recipe YAML (model:, datasets:, run:; stage 3 also activation:).

    Recipes for the paper's stages are in configs/train/: stage1_pretrain.yaml, stage2_instruct.yaml,
    stage3_activation.yaml; each starts from the previous stage's final checkpoint (run.init_from).
    Trailing key=value items override the YAML: model.* / generate.* as for infer, and run.*, run.optims.*,
    datasets.*, activation.* (e.g. run.batch_size_train=4 run.optims.init_lr=1e-4 datasets.cache_dir=cache).
    --resume continues exactly from the latest checkpoint in run.output_dir.
    Several processes: torchrun --nproc_per_node N -m salmonn.cli train CONFIG.yaml (DDP; run.parallel=fsdp
    shards the LLM). Outputs in run.output_dir: metrics.jsonl, samples.jsonl, curves.png, checkpoints/,
    final/ (trainable.safetensors, salmonn.pth in the reference layout, infer.yaml for salmonn infer).
    """
    from .config import load_train_config
    from .trainer import train as run_training
    run_training(load_train_config(config, list(overrides)), resume=resume)
