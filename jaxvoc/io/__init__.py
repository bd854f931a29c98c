"""File and data input/output: checkpoints, atomic writes, audio files, JSON configs, length buckets."""
