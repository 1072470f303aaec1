"""YARN for real, first step: Hadoop's own MiniYARNCluster (a ResourceManager and a
NodeManager on loopback, beside a MiniDFSCluster; tests/hadoop_cluster.py) comes up with
the yarn-site.xml a client needs. Submitting tfos jobs to it is the next step (issue 32)."""

from __future__ import annotations

import json
import os
import urllib.request
import xml.etree.ElementTree as ElementTree

import pytest

from tests.hadoop_cluster import serve

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600),
              pytest.mark.slow]  # CI time: 40-60 s of daemons for a check no other test needs yet


@pytest.fixture(scope="module")
def yarn():
    yield from serve(yarn=True)


def _site(conf_dir: str, name: str) -> dict[str, str]:
    root = ElementTree.parse(os.path.join(conf_dir, name)).getroot()
    return {p.findtext("name"): p.findtext("value") for p in root.iter("property")}


def test_the_resource_manager_serves_one_running_node_manager_and_the_conf_names_it(yarn):
    site = _site(yarn.conf_dir, "yarn-site.xml")
    assert site["yarn.resourcemanager.address"] == yarn.rm_address
    assert _site(yarn.conf_dir, "core-site.xml")["fs.defaultFS"] == yarn.uri
    web = site["yarn.resourcemanager.webapp.address"]
    with urllib.request.urlopen(f"http://{web}/ws/v1/cluster/info", timeout=30) as reply:
        assert json.load(reply)["clusterInfo"]["state"] == "STARTED"
    with urllib.request.urlopen(f"http://{web}/ws/v1/cluster/nodes", timeout=30) as reply:
        nodes = json.load(reply)["nodes"]["node"]
    assert [n["state"] for n in nodes] == ["RUNNING"]
