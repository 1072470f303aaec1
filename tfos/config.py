"""The run's configuration: one frozen dataclass, validated once at the edge."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from tfos.errors import ConfigError
from tfos.input_mode import InputMode
from tfos.keras_compat import check_keras_choice
from tfos.net import PortRange
from tfos.reservation.tls import TLSConfig
from tfos.roles import CHIEF_JOBS, Role, plan_roles

MASTER_NODES = (*CHIEF_JOBS, None)

#: TensorFlowOnSpark's default for ``shutdown(timeout=...)``: three days.
DEFAULT_SHUTDOWN_TIMEOUT_S = 259200.0


#: what tfos.run does when Spark's own RPC is neither authenticated nor encrypted (spark/env.py)
SPARK_SECURITY_CHOICES = ("warn", "require", "ignore")


@dataclass(frozen=True)
class RunConfig:
    """Everything ``tfos.run`` needs to start a cluster, validated in ``__post_init__``.

    Names follow TensorFlowOnSpark where the meaning is the same.
    """

    num_executors: int
    num_ps: int = 0
    tensorboard: bool = False
    input_mode: InputMode = InputMode.TENSORFLOW
    log_dir: str | None = None
    master_node: str | None = "chief"
    eval_node: bool = False
    reservation_timeout: float = 600.0
    #: seconds to wait for Spark executors to come up before failing
    executor_wait_timeout: float = 120.0
    #: "auto": the executors' TF_USE_LEGACY_KERAS decides (set it with env= or
    #: spark.executorEnv); "keras3": tf.keras is Keras 3; "tf_keras": TF_USE_LEGACY_KERAS=1
    #: (tf-keras 2.x). Whenever Keras 3 is imported in a node, tfos's MWMS fix is applied.
    keras: str = "auto"
    heartbeat_interval_s: float = 1.0
    #: a node silent for this long is declared lost
    heartbeat_timeout_s: float = 10.0
    #: seconds a stopping process gets between SIGTERM and SIGKILL
    stop_grace_s: float = 3.0
    #: extra environment for the TF processes
    env: dict[str, str] = field(default_factory=dict, repr=False)  # may hold storage keys: never shown
    #: times a failed run is started again (all nodes; ``ctx.attempt`` counts up); see tfos/restart.py
    max_restarts: int = 0
    #: TLS for the reservation channel (see docs/security.md); default: spark.tfos.tls.* when set
    tls: TLSConfig | None = None
    #: ports tfos listens on (reservation server, TF servers, feed, TensorBoard), e.g.
    #: "40000-40100"; default: spark.tfos.portRange when set, else any free port
    port_range: PortRange | str | None = None
    #: False: each node's TF port stays held into main_fun, as ``ctx.tmp_socket``, until
    #: ``ctx.release_port()`` (TensorFlowOnSpark's option; see NodeContext.tmp_socket)
    release_port: bool = True
    #: the run's remote directory (hdfs://, s3://, gs://, abfss://, or a shared path): the lead
    #: node's ctx.local_dir(...) trees are mirrored there and restored from it (docs/data.md);
    #: default: spark.tfos.storage when set
    storage: str | None = None
    #: on a non-local master whose Spark RPC is not authenticated and encrypted (the run's
    #: secret and storage keys travel in the task closure): "warn" once (the default; with
    #: ``tls=`` it refuses), "require" refuses, "ignore" says nothing. Default:
    #: spark.tfos.sparkSecurity when set. See docs/security.md.
    spark_security: str = "warn"

    def __post_init__(self) -> None:
        if isinstance(self.input_mode, int) and not isinstance(self.input_mode, (InputMode, bool)):
            object.__setattr__(self, "input_mode", _input_mode(self.input_mode))
        check_int("num_executors", self.num_executors, minimum=1)
        check_int("num_ps", self.num_ps, minimum=0)
        check_int("max_restarts", self.max_restarts, minimum=0)
        if not isinstance(self.input_mode, InputMode):
            raise ConfigError(
                f"input_mode must be tfos.InputMode.TENSORFLOW or tfos.InputMode.SPARK; "
                f"received: input_mode={self.input_mode!r}"
            )
        for name in ("tensorboard", "eval_node", "release_port"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be True or False; received: {name}={getattr(self, name)!r}")
        if self.master_node not in MASTER_NODES:
            raise ConfigError(
                f"master_node must be 'chief', 'master' or None; received: master_node={self.master_node!r}"
            )
        check_keras_choice(self.keras, "keras")
        for name in ("reservation_timeout", "executor_wait_timeout", "heartbeat_interval_s",
                     "heartbeat_timeout_s"):
            check_positive(name, getattr(self, name))
        check_positive("stop_grace_s", self.stop_grace_s, allow_zero=True)
        if self.heartbeat_timeout_s < 2 * self.heartbeat_interval_s:
            raise ConfigError(
                f"heartbeat_timeout_s must be at least twice heartbeat_interval_s; received: "
                f"heartbeat_timeout_s={self.heartbeat_timeout_s}, "
                f"heartbeat_interval_s={self.heartbeat_interval_s}"
            )
        if self.log_dir is not None and not isinstance(self.log_dir, str):
            raise ConfigError(f"log_dir must be a path string or None; received: log_dir={self.log_dir!r}")
        if not isinstance(self.env, dict):
            raise ConfigError(f"env must be a dict of str to str; received: env={self.env!r}")
        bad_env = {k: v for k, v in self.env.items() if not isinstance(k, str) or not isinstance(v, str)}
        if bad_env:
            raise ConfigError(f"env must map str to str; received: {bad_env!r}")
        if self.eval_node and self.input_mode == InputMode.SPARK:
            raise ConfigError(
                "eval_node=True needs input_mode=tfos.InputMode.TENSORFLOW: an evaluator reads its "
                "own data and gets no Spark feed"
            )
        if self.tls is not None and not isinstance(self.tls, TLSConfig):
            raise ConfigError(f"tls must be a tfos.TLSConfig or None; received: tls={self.tls!r}")
        if self.port_range is not None:
            object.__setattr__(self, "port_range", PortRange.parse(self.port_range))
        if self.storage is not None and (not isinstance(self.storage, str) or not self.storage.strip()):
            raise ConfigError(f"storage must be a URI such as 's3://bucket/run-1' or None; received: "
                              f"storage={self.storage!r}")
        if self.spark_security not in SPARK_SECURITY_CHOICES:
            raise ConfigError(f"spark_security must be one of {', '.join(SPARK_SECURITY_CHOICES)}; received: "
                              f"spark_security={self.spark_security!r}")
        self.roles()  # raises ConfigError when the counts leave no trainer

    def roles(self) -> list[Role]:
        """The role of each node slot (see :func:`tfos.roles.plan_roles`)."""
        return plan_roles(self.num_executors, self.num_ps, self.master_node, self.eval_node)


def _input_mode(value: int) -> InputMode:
    try:
        return InputMode(value)
    except ValueError:
        raise ConfigError(
            f"input_mode must be tfos.InputMode.TENSORFLOW (0) or tfos.InputMode.SPARK (1); "
            f"received: input_mode={value!r}"
        ) from None


def check_int(name: str, value: object, minimum: int) -> None:
    """The one check of an int argument (``RunConfig``, ``parallel_run``)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an int; received: {name}={value!r}")
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}; received: {name}={value}")


def check_positive(name: str, value: object, allow_zero: bool = False) -> None:
    """The one check of a seconds argument (``RunConfig``, ``parallel_run``)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and (value > 0 or (allow_zero and value == 0)):
        return
    bound = ">= 0" if allow_zero else "> 0"
    raise ConfigError(f"{name} must be a finite number {bound} (seconds); received: {name}={value!r}")
