"""Utilities at the bottom of the package graph (they import neither ``data`` nor ``model``): constants,
paths, devices, seeding, atomic file I/O, resizing, evaluation, logging, multi-process helpers, pictures."""
