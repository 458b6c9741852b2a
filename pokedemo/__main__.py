"""``python -m pokedemo`` entry point."""

import sys

from pokedemo.cli import main

if __name__ == "__main__":
    sys.exit(main())
