"""`salmonn train`: run a training recipe."""

from __future__ import annotations


def train(config: str, /, resume: bool = False, restart: bool = False, resume_from: str | None = None,
          overrides: list[str] = ()) -> None:
    """Train SALMONN with a recipe YAML (model:, datasets:, run:; stage 3 also activation:).

    Recipes for the paper's stages are in configs/train/: stage1_pretrain.yaml, stage2_instruct.yaml,
    stage3_activation.yaml; each starts from the previous stage's final checkpoint (run.init_from).
    Trailing key=value items override the YAML: model.* / generate.* as for infer, and run.*, run.optims.*,
    datasets.*, activation.* (e.g. run.batch_size_train=4 run.optims.init_lr=1e-4 datasets.cache_dir=cache).
    --resume continues exactly from the latest checkpoint in run.output_dir (with the config it was trained
    with); a new run refuses a run.output_dir that holds an earlier run's checkpoints: --restart deletes them.
    Several processes: torchrun --nproc_per_node N -m salmonn.cli train CONFIG.yaml (DDP; run.parallel=fsdp
    shards the LLM). Outputs in run.output_dir: metrics.jsonl, samples.jsonl, curves.png, checkpoints/,
    final/ (trainable.safetensors, salmonn.pth in the reference layout, infer.yaml for salmonn infer).

    Options:
      resume: continue from the latest checkpoint in run.output_dir (refused if the config changes what is
        trained, e.g. another init_lr)
      resume_from: continue from this checkpoint folder (run.output_dir/checkpoints/step_N) instead of the latest,
        e.g. when the latest is damaged; the later step folders are deleted
      restart: delete an earlier run in run.output_dir (checkpoints/, final/, logs) and start over; without it a
        new run refuses a folder that holds an earlier run's checkpoints
    """
    from .config import load_train_config
    from .trainer import train as run_training
    run_training(load_train_config(config, list(overrides)), resume=resume, restart=restart,
                 resume_from=resume_from)
