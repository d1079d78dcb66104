"""Worker leases on a real nats-server: giving back a lease that has already moved on."""
from __future__ import annotations

import nats
import pytest

from ops.worker_leases import Leases
from ops.worker_wire import lease_key
from tests.integration.services import RunningService, nats_jetstream  # noqa: F401 (fixture)

pytestmark = [pytest.mark.services, pytest.mark.timeout(60)]


@pytest.mark.asyncio
async def test_a_clean_stop_gives_back_its_leases_and_leaves_a_moved_lease_to_its_new_owner(
    nats_jetstream: RunningService,  # noqa: F811
) -> None:
    nc = await nats.connect(nats_jetstream.url)
    try:
        js = nc.jetstream()
        mine = Leases(js, "w1", partitions=4, lease_secs=30.0)
        await mine.open()
        assert sorted(await mine.acquire(2)) == sorted(mine.owned) and len(mine.owned) == 2
        moved, kept = sorted(mine.owned)
        # the lease on `moved` changed hands behind our back (a renewal that timed out yet landed, or an
        # expiry and a takeover): its revision is no longer ours
        await mine.leases.put(lease_key(moved), b"w2")

        await mine.release([moved, kept])

        assert mine.owned == {} and mine.renewed_at == {}
        assert (await mine.leases.get(lease_key(moved))).value == b"w2"  # the new owner keeps it
        with pytest.raises(nats.js.errors.KeyNotFoundError):
            await mine.leases.get(lease_key(kept))  # ours was given back
    finally:
        await nc.close()
