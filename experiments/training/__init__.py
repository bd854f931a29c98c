"""Training configs and the smoke-run tools (speech for the runs, curve plots)."""
