"""``python -m evo_snn.pareto``: the command; the code lives in ``evo_snn.analysis.pareto``."""

import sys

from evo_snn.analysis.pareto import main

if __name__ == "__main__":
    sys.exit(main())
