"""After a mass drop the store's id-keyed tables are rebuilt at their live size
(ObjectStore.compact, at housekeeping), while gets and waits that read them without
the lock go on seeing every value."""
from __future__ import annotations

import threading
import time

import pytest

import shmray

pytestmark = pytest.mark.timeout(120)


@shmray.remote
def ident(x):
    return x


def test_tables_shrink_after_a_mass_drop_and_waiting_gets_still_finish():
    shmray.init(num_cpus=2)
    try:
        session = shmray._context.get_runtime()
        refs = [ident.remote(i) for i in range(30_000)]
        assert shmray.get(refs)[-1] == 29_999
        time.sleep(0.1)  # (housekeeping sees the peak)
        big = session.store.values
        keep = refs[:10]
        del refs
        # a get and a wait left waiting across the compaction, on other threads
        gate = shmray.put(None)

        @shmray.remote
        def after(gate, x):
            time.sleep(0.3)
            return x

        late = [after.remote(gate, i) for i in range(4)]
        got, waited = [], []
        threads = [threading.Thread(target=lambda: got.append(shmray.get(late[:2]))),
                   threading.Thread(target=lambda: waited.append(
                       shmray.wait(late[2:], num_returns=2, timeout=30)[0]))]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while session.store.values is big and time.monotonic() < deadline:
            time.sleep(0.02)
        assert session.store.values is not big, "the values table was never rebuilt"
        for t in threads:
            t.join(30)
        assert got == [[0, 1]] and waited == [late[2:]]
        assert shmray.get(keep) == list(range(10))
    finally:
        shmray.shutdown()
