"""What travels from the driver to each node task inside the Spark closure."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from tfos.reservation.auth import Secret
from tfos.reservation.tls import ClientTLS


@dataclass(frozen=True)
class NodeLaunch:
    """Settings every node of one run shares. Small and picklable; the secret hides its repr."""

    run_id: str
    server_address: str
    secret: Secret
    input_mode: int
    tensorboard: bool
    log_dir: str
    keras: str
    default_fs: str
    reservation_timeout: float
    heartbeat_interval_s: float
    heartbeat_timeout_s: float
    stop_grace_s: float
    #: keep pyspark's OMP_NUM_THREADS in the TF process (only when the user set it)
    keep_omp_num_threads: bool
    env: dict[str, str] = field(default_factory=dict, repr=False)  # may hold storage keys: never shown
    #: the CA certificates that check the driver's certificate, when the reservation channel is TLS
    tls: ClientTLS | None = None
    #: "FIRST-LAST": the ports this node may listen on (TF server, feed, TensorBoard); "" = any
    port_range: str = ""
    #: release each node's TF port before main_fun (False: main_fun calls ctx.release_port())
    release_port: bool = True
    #: the run's storage URI ("" = none): the lead node mirrors its local dirs there
    storage: str = ""
    #: storage variables from the Spark conf (tfos/storage/credentials.py); may hold keys
    storage_env: dict[str, str] = field(default_factory=dict, repr=False)
    #: 0 for the first start of the run, one more per restart (``ctx.attempt``)
    attempt: int = 0
    #: the slots Spark feeds (SPARK mode's chief and workers): only their TF processes get a
    #: feed endpoint and the run's secret
    fed_slots: tuple[int, ...] = ()
    #: cloudpickled (main_fun, args, source): unpickled only in the TF process
    payload: bytes = field(default=b"", repr=False)

    def header(self) -> dict:
        """JSON-able settings for the supervisor (no payload, secret as hex)."""
        data = asdict(self)
        data.pop("payload")
        data["secret"] = self.secret.value.hex()
        data["tls"] = None if self.tls is None else {
            "root_certificates": self.tls.root_certificates.decode("ascii"), "server_name": self.tls.server_name,
        }
        return data
