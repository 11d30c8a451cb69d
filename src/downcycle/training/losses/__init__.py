"""The losses of training, one module per loss: :mod:`.lm` (the LM loss, whole or a chunk of
positions at a time), :mod:`.kl` (the distillation losses' registry: forward and reverse KL) and
:mod:`.distill_chunked` (distillation's LM loss and KL a chunk of positions at a time).
"""
