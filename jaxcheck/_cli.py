"""The command line: `jaxcheck demo` (also `python -m jaxcheck demo`)."""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="jaxcheck", description="Gradient checking for JAX.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="check a correct and a buggy hand-written MLP backprop")
    ns = parser.parse_args(argv)
    if ns.command == "demo":
        from ._demo import run

        return run()
    return 2  # unreachable: argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
