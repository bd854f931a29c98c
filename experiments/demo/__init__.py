"""The `make demo` walk-through: convert, synthesize, compare."""
