"""Datasets: the paired loader, the built-in synthetic set, the catalog of published sets."""
