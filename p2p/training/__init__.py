"""Training: ``loop`` trains a recipe (one iteration = a discriminator step and a generator
step, with logging, samples, validation and checkpoints) and ``run`` is its Python face
(``p2p.train`` makes a run directory, ``p2p.Run`` reads one)."""
