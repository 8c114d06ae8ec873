"""``python -m evohpo``: the ``evohpo`` command."""

from __future__ import annotations

from evohpo.cli import run

if __name__ == "__main__":
    run()
