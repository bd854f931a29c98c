"""Training: grain data pipeline, mesh-sharded jit train steps (GAN and flow), Orbax checkpoints, the loop.

``jaxvoc train CONFIG`` drives :func:`jaxvoc.train.loop.train`; see docs/training.md.
"""
