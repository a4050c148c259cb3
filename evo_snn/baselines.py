"""``python -m evo_snn.baselines``: the command; the code lives in ``evo_snn.analysis.baselines``."""

import sys

from evo_snn.analysis.baselines import main

if __name__ == "__main__":
    sys.exit(main())
