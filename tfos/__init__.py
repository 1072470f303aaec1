"""tfos: run a TensorFlow cluster inside a Spark application.

>>> cluster = tfos.run(sc, main_fun, args, num_executors=2)
>>> cluster.shutdown()
"""

from tfos.cluster import Cluster, NodeInfo, run
from tfos.context import NodeContext
from tfos.errors import (
    AuthenticationError,
    ClusterFailedError,
    ClusterTimeout,
    ConfigError,
    DataError,
    FeedError,
    FeedTimeout,
    NodeFailure,
    ParallelRunError,
    ReservationError,
    ReservationTimeout,
    SparkPreconditionError,
    TfosError,
)
from tfos.input_mode import InputMode
from tfos.parallel import parallel_run
from tfos.reservation.tls import TLSConfig, TLSError
from tfos.version import __version__

TFNodeContext = NodeContext  # TensorFlowOnSpark's name

__all__ = [
    "AuthenticationError", "Cluster", "ClusterFailedError", "ClusterTimeout", "ConfigError", "DataError", "FeedError", "FeedTimeout",
    "InputMode", "NodeContext", "NodeFailure", "NodeInfo", "ParallelRunError", "ReservationError", "ReservationTimeout",
    "SparkPreconditionError", "TFNodeContext", "TLSConfig", "TLSError", "TfosError", "__version__", "parallel_run", "run",
]
