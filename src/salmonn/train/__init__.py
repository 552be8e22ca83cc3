"""Training: the paper's three stages as recipes (configs/train/*.yaml), on one process or torchrun DDP/FSDP.

Modules: config (typed run:/datasets:/activation: sections), data (prompts, manifest validation, batching),
cache (frozen-encoder outputs on disk), schedule (the reference AdamW + warmup/cosine), state (resumable
checkpoints), trainer (the loop), activation (stage 3's stories), plot, commands (`salmonn train`).
Heavy imports stay inside the modules so that `salmonn --help` stays fast.
"""
