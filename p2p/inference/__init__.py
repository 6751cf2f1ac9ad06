"""Inference: a generator run in a test-time mode (generator.py), a ``Model`` that sizes,
normalizes and writes images for it, the file, folder, pipe and memory jobs (translate.py), and
tiled inference (tiling.py)."""
