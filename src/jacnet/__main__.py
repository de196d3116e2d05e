"""``python -m jacnet``: the same command as ``jacnet``."""

from jacnet.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
