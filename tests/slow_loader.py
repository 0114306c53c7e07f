"""``circuit-atlas`` with a pause before every write statement of the loader and small batches, so a
test can kill the load, or the server, half way through a load:

    python tests/slow_loader.py SECONDS load PATH [options]
"""

import sys
import time

from circuit_atlas import loader
from circuit_atlas.cli import main

pause = float(sys.argv.pop(1))
write = loader._Writer.write


def slow_write(self, name, **params):
    time.sleep(pause)
    return write(self, name, **params)


loader._Writer.write = slow_write
loader.BATCH_ROWS = 20
main()
