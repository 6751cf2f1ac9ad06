"""Bounds on numbers that people and files give p2p, where more than one place checks them.

Light to import (no torch): the CLI's options use them as their ranges.
"""

# A side of the size a model is trained or run at: recipes' load and crop sizes, the sizes that
# checkpoints and model folders record, --image-size, --tile; and of an image p2p decodes.
MAX_SIDE = 16384
# The area of one image plane p2p decodes or runs a model at: larger than any dataset image
# (maps are 1200x600) by far, small enough that a hostile header cannot make us allocate
# gigabytes.
MAX_PIXELS = MAX_SIDE * MAX_SIDE
# Counts: iterations, intervals, batch sizes, images, workers. 2 billion iterations is years, and
# every integer type torch takes holds it.
MAX_COUNT = 2**31 - 1
MAX_WORKERS = 1024  # threads or processes on one machine: more than any machine's cores
# A seed of torch's generators, which take 0 to 2**64 - 1: kept within a signed 64-bit integer,
# which JSON readers and other tools hold too.
MAX_SEED = 2**63 - 1
