"""One training loop for every family, and one step object per family."""
