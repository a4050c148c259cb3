"""``python -m evo_snn.results``: the command; the code lives in ``evo_snn.analysis.results``."""

import sys

from evo_snn.analysis.results import main

if __name__ == "__main__":
    sys.exit(main())
