"""Inference: a generator run in a test-time mode (generator.py), a ``Model`` that sizes,
normalizes and writes images for it, the file, folder, pipe and memory jobs (translate.py),
tiled inference (tiling.py), lists of input files (manifest.py), and the same jobs in several
processes (sharded.py) or on Ray (ray_pipeline.py)."""
