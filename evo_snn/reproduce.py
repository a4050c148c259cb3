"""``python -m evo_snn.reproduce``: the command; the code lives in ``evo_snn.analysis.reproduce``."""

import sys

from evo_snn.analysis.reproduce import main

if __name__ == "__main__":
    sys.exit(main())
