"""tfos.compat.gpu_info: CUDA_VISIBLE_DEVICES (set by tfos from Spark) first, else nvidia-smi."""

from __future__ import annotations

import os
import stat

import pytest

from tfos.compat import gpu_info

pytestmark = pytest.mark.timeout(30)

GPUS = "0, GPU-aaa\n1, GPU-bbb\n2, GPU-ccc\n3, GPU-ddd\n"


@pytest.fixture
def nvidia_smi(tmp_path, monkeypatch):
    """A real ``nvidia-smi`` executable on PATH printing the given GPUs and busy UUIDs."""
    def install(gpus: str, busy: str = "") -> None:
        script = tmp_path / "nvidia-smi"
        script.write_text(
            "#!/bin/sh\n"
            f'case "$1" in --query-gpu=*) printf "{gpus}";; --query-compute-apps=*) printf "{busy}";; esac\n'
        )
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
        monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)

    monkeypatch.setattr(gpu_info, "_RETRY_S", 0.0)
    return install


def test_the_gpus_spark_gave_the_node_are_the_answer(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    assert gpu_info.get_gpus(1) == "5"
    assert gpu_info.get_gpus(2, 1, format=gpu_info.AS_LIST) == ["5", "7"]
    assert gpu_info.is_gpu_available()


@pytest.mark.parametrize("visible", ["", "-1"])
def test_a_node_without_gpus_gets_a_clear_error(monkeypatch, visible):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert not gpu_info.is_gpu_available()
    with pytest.raises(gpu_info.GPUUnavailable, match=r"1 GPU\(s\) requested, but CUDA_VISIBLE_DEVICES="
                       r".* gives this process 0: under tfos a node's GPUs come from Spark"):
        gpu_info.get_gpus()


def test_without_cuda_visible_devices_idle_gpus_come_from_nvidia_smi(nvidia_smi):
    nvidia_smi(GPUS, busy="GPU-bbb\n")
    assert gpu_info.is_gpu_available()
    assert gpu_info.get_gpus(2) == "0,2"
    assert gpu_info.get_gpus(1, worker_index=1, format=gpu_info.AS_LIST) == ["2"]
    assert gpu_info.get_gpus(2, worker_index=1) == "3,0"  # starts at worker_index * num_gpu, wraps


def test_too_few_idle_gpus_is_an_error_listing_them(nvidia_smi):
    nvidia_smi(GPUS, busy="GPU-aaa\nGPU-bbb\nGPU-ccc\n")
    with pytest.raises(gpu_info.GPUUnavailable) as info:
        gpu_info.get_gpus(2)
    assert str(info.value) == "2 GPU(s) requested, but nvidia-smi lists 4 GPU(s), 1 of them idle (3)"


def test_no_nvidia_smi_means_no_gpu(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(gpu_info, "_RETRY_S", 0.0)
    assert not gpu_info.is_gpu_available()
    with pytest.raises(gpu_info.GPUUnavailable, match="is nvidia-smi on PATH and a GPU present"):
        gpu_info.get_gpus()


@pytest.mark.parametrize("kwargs", [{"num_gpu": 0}, {"num_gpu": "1"}, {"format": "csv"}])
def test_bad_arguments_are_refused(kwargs):
    with pytest.raises(ValueError):
        gpu_info.get_gpus(**kwargs)
