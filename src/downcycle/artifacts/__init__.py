"""What every stage writes: atomic output directories and files, manifests, hashes, size parsing,
the loss-log format, model cards."""
