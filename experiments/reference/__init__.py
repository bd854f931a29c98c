"""The official training steps driven in PyTorch, beside jaxvoc's, for tests and equivalence scripts."""
