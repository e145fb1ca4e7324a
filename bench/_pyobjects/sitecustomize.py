"""``bench.realtime --python-objects``: on the server's path (``PYTHONPATH``), it makes each
uvicorn worker trace its Python allocations (``tracemalloc``) and, on ``SIGUSR1``, write the bytes
traced after a full collection to ``$BENCH_TRACEMALLOC_DIR/{pid}.json``. Nothing happens in
any other process, nor without that variable. Tracing slows the worker and adds to its RSS."""

import os
import sys

_DIR = os.environ.get("BENCH_TRACEMALLOC_DIR")

if _DIR and any("multiprocessing-fork" in arg for arg in sys.argv):
    import gc
    import json
    import signal
    import tracemalloc

    tracemalloc.start(1)

    def _write(signum, frame):
        gc.collect()
        path = os.path.join(_DIR, f"{os.getpid()}.json")
        with open(path + ".tmp", "w") as out:
            json.dump({"traced": tracemalloc.get_traced_memory()[0]}, out)
        os.replace(path + ".tmp", path)

    signal.signal(signal.SIGUSR1, _write)
