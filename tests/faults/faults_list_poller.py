"""``python faults_list_poller.py``: run ``taskpoint list --json`` in a loop for 3 seconds, 50 ms
apart, and fail on the first exit status that is not 0 (the readers of
tests/faults/test_concurrency.py, polling the records while drivers write them)."""

import time

from taskpoint.cli import main

if __name__ == "__main__":
    end = time.monotonic() + 3
    while time.monotonic() < end:
        try:
            main(["list", "--json"])
        except SystemExit as e:
            assert e.code == 0, e.code
        time.sleep(0.05)
