"""Benchmarks: their facts, split lists, datasets and episodes, preparation and the synthetic generator.
Imports ``common`` only, never ``model``."""
