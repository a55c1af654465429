"""`l2tp-ipsec-exporter demo` (`run.py`) and the charon lab it runs (`lab/`).

Shipped in the wheel, so the README's first command works from a pip install; left out of
the Docker image (.dockerignore), where only the exporter itself runs. Nothing of the
exporter imports this package but the command line, and only for the `demo` subcommand.
"""
