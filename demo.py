"""make demo: the whole IMR-HSNet method on the embedded synthetic benchmark (see engine/demo.py)."""
import sys

from engine.demo import run

if __name__ == "__main__":
    sys.exit(run())
