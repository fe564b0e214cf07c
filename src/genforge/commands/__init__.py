"""Run-level operations over run folders: sample, evaluate, reconstruct, encode, export, compare, demo."""
