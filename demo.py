"""make demo: the whole IMR-HSNet method on the embedded synthetic benchmark (see apps/demo.py)."""
import sys

from apps.demo import run

if __name__ == "__main__":
    sys.exit(run())
