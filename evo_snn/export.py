"""``python -m evo_snn.export``: the command; the code lives in ``evo_snn.deploy.export``."""

import sys

from evo_snn.deploy.export import main

if __name__ == "__main__":
    sys.exit(main())
