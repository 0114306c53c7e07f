"""``circuit-atlas`` with a pause before every write statement of the loader and small batches, so a
test can kill the load, or the server, half way through a load:

    python tests/slow_loader.py SECONDS [--pause-in-publish] load PATH [options]

With ``--pause-in-publish`` the load also stops inside its publish transaction, after the old blocks
were deleted and the new ones adopted and before it commits; it prints ``publishing`` there.
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


def paused_analogous_links(*args, **kwargs):
    print("publishing", flush=True)
    time.sleep(3600)


loader._Writer.write = slow_write
loader.BATCH_ROWS = 20
if sys.argv[1] == "--pause-in-publish":
    sys.argv.pop(1)
    loader.analogous_links = paused_analogous_links
main()
