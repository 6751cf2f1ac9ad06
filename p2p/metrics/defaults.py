"""The metrics' defaults, free of torch, so that the CLI can show them in ``--help`` without
importing the networks."""

import os

THREADS = min(4, os.cpu_count() or 1)  # decoding threads; more only compete with torch's own
INCEPTION_BATCH = 50  # images per Inception forward pass (the results do not depend on it)
SPLITS = 10  # Inception Score groups, as the table
GENERATOR_BATCH = 4  # the table's generator batch: training-mode batch norm uses its statistics
METRICS_FILE = "metrics.json"  # `eval run` writes it into an evaluated run; `p2p report` shows it
