"""The reliability tests reuse the discovery tests' fixtures (fake API server, kubelet, CA, token file)."""

from tests.cgroup.conftest import cgroup_tree  # noqa: F401
from tests.discovery.conftest import (  # noqa: F401  (pytest finds fixtures by name in this module)
    api,
    ca,
    cluster,
    kubelet_server,
    make_informer,
    make_kubelet,
    stats,
    token_file,
)
