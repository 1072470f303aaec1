"""Addresses: one splitter and one joiner, inverse of each other, IPv6 included."""

import socket

import pytest

from tfos.net import join_host_port, socket_family, split_host_port


@pytest.mark.parametrize("address, expected", [
    ("10.0.0.5:2222", ("10.0.0.5", 2222)),
    ("worker-3.example:80", ("worker-3.example", 80)),
    ("[::1]:2222", ("::1", 2222)),
    ("[fe80::1%eth0]:7", ("fe80::1%eth0", 7)),
    ("[::1]", ("::1", None)),
    ("::1", ("::1", None)),
    ("fe80::1", ("fe80::1", None)),
    ("host", ("host", None)),
    ("host:", ("host", None)),
    ("host:notaport", ("host", None)),
    (" 10.0.0.5:1 ", ("10.0.0.5", 1)),
])
def test_split_host_port(address, expected):
    assert split_host_port(address) == expected


@pytest.mark.parametrize("host", ["10.0.0.5", "::1", "[::1]", "name.example"])
def test_join_then_split_gives_the_host_back(host):
    assert split_host_port(join_host_port(host, 4000)) == (host.strip("[]"), 4000)


def test_socket_family():
    assert socket_family("127.0.0.1") == socket.AF_INET
    assert socket_family("localhost") == socket.AF_INET
    assert socket_family("::1") == socket.AF_INET6
    assert socket_family("[::1]") == socket.AF_INET6
