"""``python -m pokedemo`` entry point: the thread policy is set before the CLI (and through it torch) loads."""

import sys

from pokedemo.startup import set_thread_policy

set_thread_policy()

from pokedemo.cli import main  # noqa: E402 - after the thread policy, which must precede torch's import

if __name__ == "__main__":
    sys.exit(main())
