"""NodeContext: path resolution as TensorFlowOnSpark did it, and its ported names."""

from __future__ import annotations

import getpass
import os

import pytest

from tfos.context import NodeContext

pytestmark = pytest.mark.timeout(30)


def ctx(**kw) -> NodeContext:
    base = dict(job_name="worker", task_index=0, cluster_spec={"chief": ["h:1"], "worker": ["h:2"]},
                num_workers=2, worker_num=1, executor_id="3", working_dir="/work/app/3")
    base.update(kw)
    return NodeContext(**base)


@pytest.mark.parametrize("default_fs,path,expected", [
    ("file:///", "data/train", "file:///work/app/3/data/train"),
    ("file:///", "/abs/data", "file:///abs/data"),
    ("file:///", "hdfs://nn:8020/x", "hdfs://nn:8020/x"),
    ("hdfs://nn:8020", "/abs/data", "hdfs://nn:8020/abs/data"),
    ("hdfs://nn:8020", "data", f"hdfs://nn:8020/user/{getpass.getuser()}/data"),
    ("hdfs://nn:8020/", "s3a://bucket/key", "s3a://bucket/key"),
    ("viewfs://cluster", "/a", "viewfs://cluster/a"),
    # no host: the name node comes from the Hadoop configuration (TensorFlowOnSpark kept the "//")
    ("hdfs://", "/foo/bar", "hdfs:///foo/bar"),
    ("hdfs:///", "/foo/bar", "hdfs:///foo/bar"),
    ("hdfs://", "data", f"hdfs:///user/{getpass.getuser()}/data"),
])
def test_absolute_path_resolves_like_tensorflowonspark(default_fs, path, expected):
    assert ctx(default_fs=default_fs).absolute_path(path) == expected


def test_chief_is_the_chief_or_first_worker_without_one():
    assert ctx(job_name="chief").is_chief
    assert not ctx().is_chief
    assert ctx(cluster_spec={"worker": ["h:1", "h:2"]}).is_chief
    assert not ctx(job_name="ps").is_chief


def test_tensorflowonspark_names_still_work():
    c = ctx(default_fs="hdfs://nn:8020", log_dir="/logs")
    assert c.defaultFS == "hdfs://nn:8020"
    assert c.tensorboard_dir == "/logs"
    assert c.release_port() is None
    assert callable(c.start_cluster_server)


def test_get_data_feed_without_a_feed_says_why():
    from tfos.errors import FeedError

    with pytest.raises(FeedError) as err:
        ctx().get_data_feed()
    assert "input_mode=tfos.InputMode.SPARK" in str(err.value)


@pytest.mark.parametrize("name", ["", "/abs", "../up", "a/../../b"])
def test_local_dir_takes_relative_names_only(name, tmp_path):
    context = ctx(local_root=str(tmp_path))
    with pytest.raises(ValueError, match="local_dir\\(name\\) takes a relative name"):
        context.local_dir(name)


def test_local_dir_without_storage_is_a_plain_local_directory(tmp_path):
    context = ctx(local_root=str(tmp_path))
    path = context.local_dir("export/v1")
    assert path == str(tmp_path / "export" / "v1") and os.path.isdir(path)
    assert context.local_dir("export/v1") == path
