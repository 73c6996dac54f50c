"""The package stays readable: no module grows past what a reader takes in at once."""

from pathlib import Path

import pyro_vae

#: a module longer than this is split by responsibility (DESIGN: "if a file passes ~400
#: lines, split it"); the check keeps the limit from creeping
MAX_MODULE_LINES = 450


def test_no_module_is_longer_than_the_limit():
    root = Path(pyro_vae.__file__).parent
    lengths = {
        str(path.relative_to(root)): len(path.read_text().splitlines())
        for path in root.rglob("*.py")
    }
    assert len(lengths) > 40  # the walk found the package
    assert {name: n for name, n in lengths.items() if n > MAX_MODULE_LINES} == {}
