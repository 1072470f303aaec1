"""GPUs from Spark's resource scheduling reach the TF process as CUDA_VISIBLE_DEVICES.

The executors run a discovery script that reports two made-up GPUs, and have
``CUDA_VISIBLE_DEVICES=5,7`` in their environment (as a container runtime would set it):
the address Spark assigns (0 or 1) must come out as the GPU it indexes (5 or 7).
"""

from __future__ import annotations

import json
import os
import sys

import cloudpickle
import pytest

import tfos

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
cloudpickle.register_pickle_by_value(sys.modules[__name__])

SPARK_CONF = {
    "spark.worker.resource.gpu.amount": "2",
    "spark.worker.resource.gpu.discoveryScript": os.path.join(os.path.dirname(__file__), "scripts", "fake_gpus.sh"),
    "spark.executor.resource.gpu.amount": "1",
    "spark.task.resource.gpu.amount": "1",
    "spark.executorEnv.CUDA_VISIBLE_DEVICES": "5,7",
}


def _report_gpus(args, ctx):
    import json as _json
    import os as _os

    with open(_os.path.join(args, f"{ctx.job_name}.json"), "w") as f:
        _json.dump({"gpus": ctx.gpus, "cuda": _os.environ.get("CUDA_VISIBLE_DEVICES")}, f)


@pytest.mark.slow  # CI time; fake GPU addresses reach ctx.gpus and CUDA_VISIBLE_DEVICES in the default run through test_node_data's parallel_run test
def test_each_node_sees_only_the_gpu_spark_assigned_to_its_task(sc, tmp_path):
    cluster = tfos.run(sc, _report_gpus, str(tmp_path), num_executors=2)
    cluster.shutdown(timeout=120)
    for name in ("chief", "worker"):
        seen = json.loads((tmp_path / f"{name}.json").read_text())
        assert len(seen["gpus"]) == 1 and seen["gpus"][0] in ("0", "1"), seen
        assert seen["cuda"] == {"0": "5", "1": "7"}[seen["gpus"][0]], seen
