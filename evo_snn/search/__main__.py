import sys

from evo_snn.search.run import supervised

sys.exit(supervised())
