"""``python -m evohpo``: the ``evohpo`` command."""

from __future__ import annotations

from evohpo.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
