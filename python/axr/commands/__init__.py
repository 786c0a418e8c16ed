"""One module per ``axr`` verb; each exposes ``register(subparsers)``."""
