"""How the TF nodes get their data."""

from __future__ import annotations

import enum


class InputMode(enum.IntEnum):
    """``TENSORFLOW``: nodes read data themselves (TFRecords, files); the node task
    holds its Spark task slot until ``main_fun`` returns.

    ``SPARK``: Spark feeds RDD/DataFrame partitions to the nodes; the node task
    returns once the TF process runs, so the executor's slot is free for feeding tasks.

    Values match TensorFlowOnSpark's (``TENSORFLOW = 0``, ``SPARK = 1``).
    """

    TENSORFLOW = 0
    SPARK = 1
