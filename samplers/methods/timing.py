"""The one timing helper: wall seconds of a code block, added to a dict entry."""
import time
from contextlib import contextmanager


@contextmanager
def timed(record, key):
    """`with timed(record, "target_seconds"): ...` adds the block's wall seconds to record[key] (created at 0)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        record[key] = record.get(key, 0.0) + time.perf_counter() - start
