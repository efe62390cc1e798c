"""Datamodules: every loader reads its dataset's real on-disk format and serves (x in [-1, 1], y) pairs."""
