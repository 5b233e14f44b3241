"""The `gkt` command-line app: ask the edge, run the stack, manage models, benchmark."""
