#!/usr/bin/env python3
"""Build a table from a data file: python build_table.py DATA [-o TABLE].

The same code and options as `kv build`; see `python build_table.py --help`.
"""

import sys

from kv.cli import main

if __name__ == "__main__":
    sys.exit(main(["build", *sys.argv[1:]]))
