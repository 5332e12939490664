"""``python -m novita_video``: the ``novita-video`` command line."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
