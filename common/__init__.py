"""Shared utilities: devices, seeding, atomic file I/O, evaluation, logging and the train/test loops."""
