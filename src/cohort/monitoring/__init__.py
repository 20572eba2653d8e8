"""What a run shows and records: the console (:mod:`.console`), metrics.jsonl and completions.jsonl
(:mod:`.metrics_writer`), and the experiment trackers (:mod:`.trackers`: TensorBoard, W&B, MLflow, trackio)."""
