"""GPU addresses from Spark -> CUDA_VISIBLE_DEVICES for the TF process."""

from __future__ import annotations

import pytest

from tfos.errors import ConfigError
from tfos.node.gpus import cuda_visible_devices


@pytest.mark.parametrize(("assigned", "existing", "expected"), [
    ([], None, None),                       # no GPU scheduling: leave the environment alone
    ([], "0,1", None),
    (["1"], None, "1"),
    (["0", "2"], "", "0,2"),
    (["1"], "5,7", "7"),                    # an index into the executor's own list
    (["7"], "5,7", "7"),                    # an entry of it
    (["GPU-8a1b-22"], None, "GPU-8a1b-22"),
    (["MIG-4f/1/0"], "MIG-4f/1/0,MIG-4f/2/0", "MIG-4f/1/0"),
])
def test_assigned_gpus_become_the_visible_devices(assigned, existing, expected):
    assert cuda_visible_devices(assigned, existing) == expected


@pytest.mark.parametrize(("assigned", "existing", "message"), [
    (["gpu0"], None, "must be an index"),
    (["1;rm"], None, "must be an index"),
    (["1", "1"], None, "same GPU twice"),
    (["3"], "5,7", "has no such GPU"),
])
def test_bad_assignments_are_refused_with_the_reason(assigned, existing, message):
    with pytest.raises(ConfigError, match=message):
        cuda_visible_devices(assigned, existing)
