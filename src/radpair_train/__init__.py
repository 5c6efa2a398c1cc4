"""Run machinery for radpair: the training loop, checkpoints, the demo and the CLI."""
