"""Run-level commands: what `genforge sample | evaluate | reconstruct | encode | compare | demo |
export` do, as library functions over run folders (the CLI only parses and prints)."""
