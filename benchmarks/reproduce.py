"""Methods x weight-bits reproduction grid (see qornn/reproduce.py); same as `qornn bench`.

Example (the copy-task table in docs/results.md):
    python benchmarks/reproduce.py --task copy --length 100 --hidden 64 --steps 1500 --out docs/results/copy
"""

import sys

from qornn.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
