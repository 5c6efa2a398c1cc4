"""Data: the on-disk corpus format, the synthetic generator, adapters and loaders."""
