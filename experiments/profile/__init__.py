"""Profiles: where the time of a model or a train step goes."""
