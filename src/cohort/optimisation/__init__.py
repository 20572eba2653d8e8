"""The one optimisation loop every method shares: :mod:`.update` (mu passes of mini-batch optimizer
steps, each accumulated over micro-batches), :mod:`.batching` (how a batch is cut) and
:mod:`.optimizer` (AdamW and the learning-rate schedule)."""
