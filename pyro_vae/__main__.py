"""``python -m pyro_vae``: the same as the ``pyro-vae`` command (and what ``torchrun -m``
launches)."""

import sys

from pyro_vae.cli import main

sys.exit(main())
