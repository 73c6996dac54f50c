"""``python -m pyro_vae.cli``: the same as ``pyro-vae``."""

import sys

from pyro_vae.cli import main

sys.exit(main())
