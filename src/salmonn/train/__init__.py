"""Training: the paper's three stages as recipes (configs/train/*.yaml), on one process or torchrun DDP/FSDP.

Modules: config (typed run:/datasets:/activation: sections), data (prompts, manifest validation, batching),
cache (frozen-encoder outputs on disk), schedule (the reference AdamW + warmup/cosine), state (resumable
checkpoint files), rundir (an earlier run in the output folder, resume checks, logs, the final export), trainer
(the loop), step (the forward and loss), parallel (DDP / FSDP), validation, activation (stage 3's stories), init
(data-driven connector start), ctc, plot, commands (`salmonn train`).
Heavy imports stay inside the modules so that `salmonn --help` stays fast.
"""
