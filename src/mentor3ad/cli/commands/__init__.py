"""One module per ``mentor3ad`` sub-command (``register(subparsers)`` + ``run(args) -> int``)."""
