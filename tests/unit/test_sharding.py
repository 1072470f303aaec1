"""Sharding input files among the training nodes, on real local files."""

from __future__ import annotations

import pytest

from tfos.context import NodeContext
from tfos.errors import ConfigError
from tfos.sharding import list_files, shard_files


@pytest.fixture
def files(tmp_path):
    for i in (3, 0, 10, 7, 1, 2, 9):
        (tmp_path / f"part-{i:05d}.tfrecord").write_bytes(b"")
    (tmp_path / "_SUCCESS").write_bytes(b"")
    (tmp_path / "part-00099.tfrecord.dir").mkdir()  # a directory is not a file to read
    return tmp_path


def ctx(tmp_path, worker_num, num_workers, job_name="worker"):
    return NodeContext(job_name=job_name, task_index=max(worker_num, 0), cluster_spec={},
                       num_workers=num_workers, worker_num=worker_num, executor_id="1",
                       working_dir=str(tmp_path))


@pytest.mark.parametrize("num_shards", [1, 2, 3, 7])
def test_shards_are_disjoint_and_together_hold_every_file(files, num_shards):
    everything = list_files(str(files / "part-*"))
    assert len(everything) == 7 and everything == sorted(everything)
    shards = [shard_files(str(files / "part-*"), num_shards, i) for i in range(num_shards)]
    seen = [f for shard in shards for f in shard]
    assert sorted(seen) == everything and len(set(seen)) == len(seen)
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_ctx_shard_files_resolves_relative_patterns_and_uses_worker_num(files):
    # chief (worker_num 0) and two workers on 3 training nodes
    shards = [ctx(files, n, 3).shard_files("part-*.tfrecord") for n in range(3)]
    assert [len(s) for s in shards] == [3, 2, 2]
    assert shards[1] == [str(files / "part-00001.tfrecord"), str(files / "part-00007.tfrecord")]
    assert ctx(files, 0, 1).shard_files("file://" + str(files / "part-0000*")) == [
        str(files / f"part-0000{i}.tfrecord") for i in (0, 1, 2, 3, 7, 9)
    ]
    listed = [str(files / "part-00010.tfrecord"), str(files / "part-00000.tfrecord")]
    assert ctx(files, 1, 2).shard_files(listed) == [str(files / "part-00010.tfrecord")]


@pytest.mark.parametrize("call, message", [
    (lambda d: shard_files(str(d / "part-*"), 8, 0),
     "7 file(s) cannot be sharded 8 ways by file: shard 0 would get 1; write at least 8 files (e.g. "
     "df.repartition(8) before save_as_tfrecords), shard by record instead (tf.data AutoShardPolicy.DATA), "
     "or pass allow_empty=True"),
    (lambda d: shard_files(str(d / "none-*"), 2, 0),
     "no file matches '{d}/none-*'; check the path (relative paths resolve against the executor's working "
     "directory or fs.defaultFS) and the pattern"),
    (lambda d: ctx(d, -1, 2, job_name="evaluator").shard_files("part-*"),
     "index must be in [0, 2); received: index=-1 (ps and evaluator nodes have worker_num -1 and no shard)"),
    (lambda d: shard_files([], 0, 0), "num_shards must be a positive int; received: num_shards=0"),
])
def test_bad_shards_are_refused_with_the_fix(files, call, message):
    with pytest.raises(ConfigError) as err:
        call(files)
    assert str(err.value) == message.format(d=files)


def test_allow_empty_gives_the_extra_nodes_nothing(files):
    assert shard_files(str(files / "part-*"), 9, 8, allow_empty=True) == []
