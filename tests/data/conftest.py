"""Makes the shared TFF-format file builders (tff_files.py) importable by the tests here."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
