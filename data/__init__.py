"""Datasets, split files and the synthetic benchmark generator."""
