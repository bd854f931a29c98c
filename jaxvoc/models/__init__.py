"""The models: one module per family (config, Flax modules, Pretrained), and what they share."""
