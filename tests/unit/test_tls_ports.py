"""TLS on the reservation channel and port ranges, with real servers, clients and sockets on 127.0.0.1."""

from __future__ import annotations

import socket
import time

import pytest

from tests.unit.certs import _with_openssl, self_signed
from tests.unit.reservation_wire import RUN_ID, SECRET, SwappableState, assert_no_secret
from tfos.errors import ConfigError, ReservationTimeout
from tfos.net import PortRange, listen, pick, reserve
from tfos.reservation.client import ReservationClient
from tfos.reservation.server import ReservationServer
from tfos.reservation.state import ReservationState
from tfos.reservation.tls import TLSConfig, TLSError
from tfos.roles import plan_roles

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("certs"))
    return {
        "server": self_signed(directory, "127.0.0.1", "server"),
        "other": self_signed(directory, "127.0.0.1", "other"),
        "named": self_signed(directory, "driver.tfos.test", "named"),
        "dir": directory,
    }


def serve(tls: TLSConfig | None, num_nodes: int = 2, **kw) -> ReservationServer:
    state = SwappableState()
    state.install(ReservationState(RUN_ID, plan_roles(num_nodes, 0)))
    server = ReservationServer(state, SECRET, "127.0.0.1", tls=tls, **kw)
    server.start()
    return server


def register(server: ReservationServer, tls, slot: int = 0, timeout_s: float = 10):
    with ReservationClient(server.address, SECRET, RUN_ID, slot, tls=tls) as c:
        return c.register(executor_id=f"exec-{slot}", host="127.0.0.1", port=5000 + slot, pid=1,
                          timeout_s=timeout_s)


# ------------------------------------------------------------------ TLS


def test_tls_server_serves_a_client_that_trusts_its_certificate(certs):
    cert, key = certs["server"]
    config = TLSConfig(cert, key)
    server = serve(config)
    try:
        assert (register(server, config.client(), 0).registered, register(server, config.client(), 1).run_state) == (
            1, "ready")
    finally:
        server.stop(0.1)


def test_client_with_the_wrong_ca_is_refused_at_once_with_a_clear_error(certs):
    cert, key = certs["server"]
    server = serve(TLSConfig(cert, key))
    wrong = TLSConfig(*certs["other"]).client()
    try:
        started = time.monotonic()
        with pytest.raises(TLSError) as info:
            register(server, wrong, timeout_s=20)
        assert time.monotonic() - started < 5  # not retried until the deadline
        message = str(info.value)
        assert message.startswith(f"TLS handshake with the reservation server at {server.address} failed: ")
        assert "CERTIFICATE_VERIFY_FAILED" in message
        assert message.endswith(
            "; is the CA (spark.tfos.tls.caFile / TLSConfig.ca_file) the one that signed the driver's certificate, "
            "and does the certificate name 127.0.0.1 (or TLSConfig.server_name)?"
        )
        assert server.state.current.snapshot()[0].state == "unregistered"
    finally:
        server.stop(0.1)


def test_certificate_for_another_name_needs_server_name(certs):
    cert, key = certs["named"]
    server = serve(TLSConfig(cert, key))
    try:
        with pytest.raises(TLSError, match="Hostname Verification Check failed"):
            register(server, TLSConfig(cert, key).client())
        named = TLSConfig(cert, key, server_name="driver.tfos.test")
        assert register(server, named.client()).registered == 1
    finally:
        server.stop(0.1)


def test_plaintext_client_gets_no_answer_from_a_tls_server(certs):
    server = serve(TLSConfig(*certs["server"]))
    try:
        with pytest.raises(ReservationTimeout, match="is the driver's reservation server at .* reachable"):
            register(server, None, timeout_s=1)
    finally:
        server.stop(0.1)


def test_openssl_made_certificate_works_too(certs, tmp_path):
    import shutil

    if shutil.which("openssl") is None:
        pytest.skip("no openssl command")
    cert, key = str(tmp_path / "o.crt"), str(tmp_path / "o.key")
    _with_openssl("127.0.0.1", cert, key)
    config = TLSConfig(cert, key)
    server = serve(config)
    try:
        assert register(server, config.client()).registered == 1
    finally:
        server.stop(0.1)


def test_tls_config_refuses_missing_and_non_pem_files(certs, tmp_path):
    cert, key = certs["server"]
    missing = str(tmp_path / "missing.pem")
    with pytest.raises(ConfigError) as info:
        TLSConfig(cert, missing)
    assert str(info.value) == f"cannot read TLS key_file {missing!r}: No such file or directory"
    with pytest.raises(ConfigError) as info:
        TLSConfig(key, key)
    assert str(info.value) == f"TLSConfig.cert_file={key!r} is not a PEM certificate (no '-----BEGIN CERTIFICATE-----' line)"
    with pytest.raises(ConfigError) as info:
        TLSConfig(cert, cert)
    assert str(info.value) == f"TLSConfig.key_file={cert!r} is not a PEM private key (no 'PRIVATE KEY-----' line)"


def test_tls_material_never_shows_the_key_in_repr(certs):
    cert, key = certs["server"]
    config = TLSConfig(cert, key)
    with open(key) as f:
        key_text = f.read()
    body = key_text.splitlines()[1]
    for text in (repr(config), repr(config.client()), str(config.client())):
        assert body not in text
    assert repr(config.client()).startswith("ClientTLS(") and "bytes of CA certificates" in repr(config.client())


# ------------------------------------------------------------------ port ranges


@pytest.mark.parametrize("text, expected", [
    ("40000-40100", PortRange(40000, 40100)),
    (" 40000 - 40100 ", PortRange(40000, 40100)),
    ("40000", PortRange(40000, 40000)),
    ("1-65535", PortRange(1, 65535)),
])
def test_port_range_parses(text, expected):
    assert PortRange.parse(text) == expected
    assert str(PortRange.parse(text)) == str(expected)


@pytest.mark.parametrize("text, message", [
    ("40100-40000", "port_range must be FIRST-LAST with 1 <= FIRST <= LAST <= 65535; received: '40100-40000'"),
    ("0-10", "port_range must be FIRST-LAST with 1 <= FIRST <= LAST <= 65535; received: '0-10'"),
    ("65000-70000", "port_range must be FIRST-LAST with 1 <= FIRST <= LAST <= 65535; received: '65000-70000'"),
    ("40000:40100", "port_range must be a string 'FIRST-LAST' such as '40000-40100'; received: '40000:40100'"),
    ("", "port_range must be a string 'FIRST-LAST' such as '40000-40100'; received: ''"),
    (40000, "port_range must be a string 'FIRST-LAST' such as '40000-40100'; received: 40000"),
])
def test_bad_port_range_is_a_config_error_with_the_value(text, message):
    with pytest.raises(ConfigError) as info:
        PortRange.parse(text)
    assert str(info.value) == message


@pytest.mark.parametrize("text", ["40100-40000", "40000:40100"])
def test_a_bad_port_range_names_the_setting_it_came_from(text):
    with pytest.raises(ConfigError) as info:
        PortRange.parse(text, "spark.tfos.portRange")
    assert str(info.value).startswith("spark.tfos.portRange must be ")


def test_a_port_range_built_out_of_bounds_is_a_config_error():
    with pytest.raises(ConfigError) as info:
        PortRange(0, 10)
    assert str(info.value) == "port_range must be FIRST-LAST with 1 <= FIRST <= LAST <= 65535; received: 0-10"


def test_candidates_start_at_the_offset_and_wrap():
    assert PortRange(100, 104).candidates(3) == [103, 104, 100, 101, 102]
    assert PortRange(100, 104).candidates(8) == [103, 104, 100, 101, 102]


def free_block(size: int) -> PortRange:
    """A range of ``size`` ports that were free a moment ago (tests bind inside it)."""
    for _ in range(50):
        first = pick("127.0.0.1")
        if first + size - 1 > 65535:
            continue
        try:
            socks = [listen("127.0.0.1", PortRange(p, p)) for p in range(first, first + size)]
        except ConfigError:
            continue
        for s in socks:
            s.close()
        return PortRange(first, first + size - 1)
    pytest.skip("no free block of ports")


def test_listen_skips_ports_in_use_and_stays_in_the_range():
    block = free_block(4)
    with socket.create_server(("127.0.0.1", block.first)):
        with listen("127.0.0.1", block) as sock:
            assert sock.getsockname()[1] == block.first + 1
        with listen("127.0.0.1", block, offset=3) as sock:
            assert sock.getsockname()[1] == block.last
        assert pick("127.0.0.1", block, exclude=[block.first + 1]) == block.first + 2


def test_exhausted_range_is_a_config_error_naming_the_range():
    block = free_block(2)
    with socket.create_server(("127.0.0.1", block.first)), socket.create_server(("127.0.0.1", block.last)):
        with pytest.raises(ConfigError) as info:
            listen("127.0.0.1", block)
    assert str(info.value) == (
        f"no free port in port_range {block} on 127.0.0.1: 2 tried (last error: Address already in use); widen the "
        f"range (tfos.run(port_range=...) or spark.tfos.portRange): it needs 1 port on the driver and 3 per node on "
        f"each executor host"
    )


def test_reservation_server_binds_in_the_range_and_says_when_it_is_full(certs):
    block = free_block(2)
    first = serve(None, port_range=block)
    second = serve(TLSConfig(*certs["server"]), port_range=block)
    try:
        assert sorted([first.port, second.port]) == [block.first, block.last]
        assert register(first, None).registered == 1
        with pytest.raises(ConfigError, match=f"no free port in port_range {block} on 127.0.0.1: 2 tried"):
            serve(None, port_range=block)
    finally:
        first.stop(0.1)
        second.stop(0.1)


def test_errors_and_logs_over_tls_never_show_the_secret(certs, caplog):
    import logging

    caplog.set_level(logging.DEBUG)
    server = serve(TLSConfig(*certs["server"]))
    try:
        with pytest.raises(TLSError) as info:
            register(server, TLSConfig(*certs["other"]).client())
        assert_no_secret(str(info.value))
        assert_no_secret(caplog.text)
    finally:
        server.stop(0.1)


# ------------------------------------------------------------------ run options


def test_run_config_takes_tls_and_a_port_range(certs):
    from tfos.config import RunConfig

    config = RunConfig(num_executors=2, tls=TLSConfig(*certs["server"]), port_range="41000-41010")
    assert config.port_range == PortRange(41000, 41010)
    with pytest.raises(ConfigError) as info:
        RunConfig(num_executors=2, tls=certs["server"])
    assert str(info.value) == f"tls must be a tfos.TLSConfig or None; received: tls={certs['server']!r}"
    with pytest.raises(ConfigError, match="port_range must be a string 'FIRST-LAST'"):
        RunConfig(num_executors=2, port_range="41000..41010")


def test_node_launch_ships_the_ca_but_not_the_key(certs):
    import json
    import pickle

    from tfos.node.launch import NodeLaunch

    cert, key = certs["server"]
    launch = NodeLaunch(
        run_id=RUN_ID, server_address="127.0.0.1:1", secret=SECRET, input_mode=0, tensorboard=False, log_dir="",
        keras="auto", default_fs="file://", reservation_timeout=60.0, heartbeat_interval_s=1.0,
        heartbeat_timeout_s=10.0, stop_grace_s=3.0, keep_omp_num_threads=False,
        tls=TLSConfig(cert, key).client(), port_range="41000-41010",
    )
    with open(key, "rb") as f:
        key_body = f.read().splitlines()[1]
    shipped = pickle.dumps(launch)
    header = json.dumps(launch.header())
    assert key_body not in shipped and key_body.decode() not in header
    with open(cert) as f:
        assert json.loads(header)["tls"] == {"root_certificates": f.read(), "server_name": None}
    assert json.loads(header)["port_range"] == "41000-41010"
    assert_no_secret(repr(launch))


def test_reserved_port_cannot_be_bound_until_released():
    block = free_block(2)
    held = reserve("127.0.0.1", block)
    port = held.getsockname()[1]
    assert port == block.first
    with pytest.raises(OSError):
        socket.socket().bind(("0.0.0.0", port))
    with reserve("127.0.0.1", block) as other:
        assert other.getsockname()[1] == block.last  # a second holder moves on
    held.close()
    with socket.create_server(("127.0.0.1", port)):
        pass
