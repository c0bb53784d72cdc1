"""make demo: the whole IMR-HSNet method on the embedded synthetic benchmark (see common/demo.py)."""
import sys

from common.demo import run

if __name__ == "__main__":
    sys.exit(run())
