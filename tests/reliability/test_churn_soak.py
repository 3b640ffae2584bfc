"""Churn soak at CI scale (300 pod lifecycles); the full 10,000 is `bench/churn_soak.py`, recorded in
docs/reliability.md. Real cgroups created and removed, the agent as a subprocess with eBPF loaded."""

from __future__ import annotations

from pathlib import Path

from bench.churn_soak import soak
from tests.cgroup.conftest import require_cgroups
from tests.conftest import require_bcc


def test_churn_300_lifecycles(tmp_path: Path) -> None:
    require_cgroups()
    require_bcc()
    res = soak(tmp_path, lifecycles=300, batch=30, interval_ms=1000)
    print(res.summary())
    assert res.lifecycles == 300
    assert res.missing_pods == 0  # every pod was exported while it lived ...
    assert res.stale_resources == []  # ... and no export carried it 3 intervals after its deletion
    assert res.bpf_keys_of_live_pods > 0  # the maps did hold entries for live pods' cgroups ...
    assert res.bpf_stale_keys == 0  # ... and hold none of a removed cgroup
    assert res.overflow_points == 0
    assert res.rss_growth_kib <= 10 * 1024, res.summary()
    assert res.agent_errors == ""
