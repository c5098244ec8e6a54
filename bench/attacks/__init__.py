"""Attack scenarios for bench/attack.py: one module per area, each with `run(args) -> figures`."""
