"""``python -m fedjax_like``: the ``fedjax-like`` command line (``fedjax_like.simulation.cli``)."""

import sys

from fedjax_like.simulation.cli import main

if __name__ == '__main__':
  sys.exit(main())
