"""Cluster storage against a real S3-API server (moto, its own process, loopback)."""

from __future__ import annotations

import os
import threading
import time

import pytest

from tests.s3_server import S3Server, serve_bucket
from tfos.errors import StorageError
from tfos.storage import filesystems, glob, local_path, redact, resolve, tfrecord_dataset
from tfos.storage import records as records_module

pytestmark = pytest.mark.timeout(120)

BUCKET = "tfos-data"


@pytest.fixture(scope="module")
def s3():
    yield from serve_bucket(BUCKET)


@pytest.fixture
def dying_s3(monkeypatch):
    """A server of the test's own, with the environment to reach it; the test may stop it."""
    server = S3Server().start()
    try:
        server.make_bucket(BUCKET)
        for name, value in server.env().items():
            monkeypatch.setenv(name, value)
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3, monkeypatch):
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    return s3


def write_tfrecords(directory: str, files: int, records: int, compression: str | None = None) -> list[str]:
    import tensorflow as tf

    os.makedirs(directory, exist_ok=True)
    paths = []
    for f in range(files):
        path = os.path.join(directory, f"part-{f:05d}.tfrecord")
        with tf.io.TFRecordWriter(path, options=compression) as writer:
            for r in range(records):
                writer.write(f"file{f}-record{r}-".encode() + os.urandom(64))
        paths.append(path)
    return paths


def upload(s3, local_paths: list[str], prefix: str) -> list[str]:
    fs = s3.filesystem()
    uris = []
    for path in local_paths:
        key = f"{BUCKET}/{prefix}/{os.path.basename(path)}"
        with open(path, "rb") as src, fs.open_output_stream(key) as dst:
            dst.write(src.read())
        uris.append(f"s3://{key}")
    return uris


# ------------------------------------------------------------------ URIs


@pytest.mark.parametrize("uri, scheme, remote", [
    ("/data/x", "", False), ("file:///data/x", "file", False), ("s3a://b/k", "s3", True),
    ("s3n://b/k", "s3", True), ("gcs://b/k", "gs", True), ("hdfs://nn:8020/p", "hdfs", True),
    ("abfss://c@a.dfs.core.windows.net/p", "abfss", True), ("C:/data", "", False),
])
def test_schemes_and_their_aliases(uri, scheme, remote):
    assert filesystems.scheme_of(uri) == scheme
    assert filesystems.is_remote(uri) is remote


@pytest.mark.parametrize("uri, expected", [
    ("file:///a/b", "/a/b"), ("file:/a/b", "/a/b"), ("file://localhost/a/b", "/a/b"), ("/a/b", "/a/b"),
    ("s3://b/k", None),
])
def test_local_path_of_file_uris(uri, expected):
    assert local_path(uri) == expected


def test_unsupported_scheme_is_refused_with_the_list():
    with pytest.raises(StorageError, match=r"unsupported storage scheme 'nosuch' in nosuch://h/x: tfos reads and "):
        resolve("nosuch://h/x")


def test_credentials_never_show_in_redacted_uris():
    assert redact("s3://AKIA:SeCrEt@bucket/k?region=x&secret_key=SeCrEt") == \
        "s3://***@bucket/k?region=x&secret_key=%2A%2A%2A"
    assert redact("abfss://cont@acct.dfs.core.windows.net/p") == "abfss://cont@acct.dfs.core.windows.net/p"


def test_hdfs_without_libhdfs_says_what_to_install(monkeypatch):
    monkeypatch.setenv("ARROW_LIBHDFS_DIR", "/nonexistent")
    with pytest.raises(StorageError) as info:
        resolve("hdfs://namenode:8020/data")
    assert "cannot open the file system of hdfs://namenode:8020/data" in str(info.value)
    assert "hdfs:// needs libhdfs and a JVM on this host" in str(info.value)


# ------------------------------------------------------------------ listing


def test_glob_lists_s3_like_a_file_system(s3_env, tmp_path):
    paths = write_tfrecords(str(tmp_path), 3, 2)
    upload(s3_env, paths, "glob/train")
    upload(s3_env, paths[:1], "glob/train/nested")
    upload(s3_env, paths[:1], "glob/other")
    base = f"s3://{BUCKET}/glob"
    assert glob(f"{base}/train/part-*") == [f"{base}/train/part-{i:05d}.tfrecord" for i in range(3)]
    assert glob(f"s3a://{BUCKET}/glob/train/part-0000[02].tfrecord") == [
        f"s3://{BUCKET}/glob/train/part-00000.tfrecord", f"s3://{BUCKET}/glob/train/part-00002.tfrecord"]
    assert glob(f"{base}/*/part-00000.tfrecord") == [f"{base}/other/part-00000.tfrecord",
                                                     f"{base}/train/part-00000.tfrecord"]
    assert len(glob(f"{base}/**/part-00000.tfrecord")) == 3
    assert glob(f"{base}/train/part-00001.tfrecord") == [f"{base}/train/part-00001.tfrecord"]
    assert glob(f"{base}/nothing-*") == []


def test_glob_lists_local_files_as_paths(tmp_path):
    paths = write_tfrecords(str(tmp_path), 2, 1)
    assert glob(f"file://{tmp_path}/part-*") == paths
    assert glob(str(tmp_path / "*.tfrecord")) == paths


def test_wrong_credentials_fail_at_once_naming_the_uri_not_the_secret(s3_env, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-Xy")
    started = time.monotonic()
    with pytest.raises(StorageError) as info:
        glob(f"s3://{BUCKET}/glob/train/part-*")
    assert time.monotonic() - started < 30
    message = str(info.value)
    assert message.startswith(f"cannot list s3://{BUCKET}/glob/train/part-*: ")
    assert "not-the-secret-Xy" not in message and s3_env.secret_key not in message
    assert "check the credentials" in message


def test_missing_bucket_is_named(s3_env):
    with pytest.raises(StorageError) as info:
        tfrecord_dataset([f"s3://no-such-bucket-{os.getpid()}/x.tfrecord"])
    assert f"s3://no-such-bucket-{os.getpid()}/x.tfrecord" in str(info.value)


# ------------------------------------------------------------------ reading


def records_of(dataset) -> list[bytes]:
    return [r.numpy() for r in dataset]


@pytest.mark.parametrize("compression, parallel", [(None, None), ("GZIP", 2), ("ZLIB", 3)])
def test_s3_records_equal_local_tfrecorddataset_records_in_order(s3_env, tmp_path, compression, parallel):
    import tensorflow as tf

    paths = write_tfrecords(str(tmp_path), 4, 50, compression)
    uris = upload(s3_env, paths, f"read-{compression}")
    expected = records_of(tf.data.TFRecordDataset(paths, compression, None, parallel))
    got = records_of(tfrecord_dataset(uris, compression, None, parallel, stage_dir=str(tmp_path / "stage")))
    assert got == expected and len(got) == 200


def test_staged_files_stay_within_the_disk_budget_and_are_removed(s3_env, tmp_path):
    paths = write_tfrecords(str(tmp_path), 8, 400)  # ~34 KB each
    uris = upload(s3_env, paths, "budget")
    file_size = os.path.getsize(paths[0])
    stage = tmp_path / "stage"
    dataset = tfrecord_dataset(uris, stage_dir=str(stage), max_stage_bytes=3 * file_size)
    stager = dataset._tfos_stager
    assert not stager.keep
    peak = []
    stop = threading.Event()

    def size(name: str) -> int:
        try:
            return os.path.getsize(os.path.join(stager.dir, name))
        except FileNotFoundError:  # released while we looked
            return 0

    def watch():
        while not stop.is_set():
            peak.append(sum(size(f) for f in os.listdir(stager.dir) if not f.endswith(".part")))
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        assert len(records_of(dataset)) == 8 * 400
    finally:
        stop.set()
        watcher.join()
    assert len(peak) > 10 and max(peak) <= 3 * file_size
    assert os.listdir(stager.dir) == []  # every file removed once read


def test_files_that_fit_are_downloaded_once_for_every_epoch(s3_env, tmp_path, monkeypatch):
    paths = write_tfrecords(str(tmp_path), 3, 20)
    uris = upload(s3_env, paths, "epochs")
    downloads = []
    real = records_module.Stager._download
    monkeypatch.setattr(records_module.Stager, "_download",
                        lambda self, index, local: downloads.append(index) or real(self, index, local))
    dataset = tfrecord_dataset(uris, stage_dir=str(tmp_path / "stage")).repeat(3)
    assert len(records_of(dataset)) == 3 * 60
    assert sorted(downloads) == [0, 1, 2]


def test_a_server_that_stops_mid_read_fails_the_dataset_naming_the_file(tmp_path, dying_s3):
    import tensorflow as tf

    server = dying_s3
    paths = write_tfrecords(str(tmp_path), 3, 20)
    uris = upload(server, paths, "dying")
    dataset = tfrecord_dataset(uris, stage_dir=str(tmp_path / "stage"), max_stage_bytes=1)
    iterator = iter(dataset)
    next(iterator)
    server.stop()
    with pytest.raises(tf.errors.OpError) as info:  # tf.data carries the StorageError's message
        for _ in iterator:
            pass
    assert "cannot read s3://tfos-data/dying/part-0000" in str(info.value)


def test_local_files_are_read_in_place_by_tensorflow(tmp_path):
    import tensorflow as tf

    paths = write_tfrecords(str(tmp_path), 2, 5)
    dataset = tfrecord_dataset(paths)
    assert not hasattr(dataset, "_tfos_stager")
    assert records_of(dataset) == records_of(tf.data.TFRecordDataset(paths))


def test_credentials_in_the_uri_work_and_never_show(s3_env, monkeypatch, tmp_path):
    paths = write_tfrecords(str(tmp_path), 1, 3)
    upload(s3_env, paths, "in-uri")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    from urllib.parse import quote

    uri = f"s3://{s3_env.access_key}:{quote(s3_env.secret_key, safe='')}@{BUCKET}/in-uri/part-*"
    assert glob(uri) == [f"s3://{BUCKET}/in-uri/part-00000.tfrecord"]
    assert s3_env.access_key not in redact(uri) and quote(s3_env.secret_key, safe="") not in redact(uri)
    # a secret left unencoded breaks the URI: the error says so without showing it
    raw = f"s3://{s3_env.access_key}:{s3_env.secret_key}/x@{BUCKET}/in-uri/part-*"
    with pytest.raises(StorageError) as info:
        glob(raw)
    assert s3_env.secret_key not in str(info.value) and s3_env.access_key not in str(info.value)


# ------------------------------------------------------------------ mirror


def remote_tree(s3, prefix: str) -> dict[str, bytes]:
    import pyarrow.fs as pafs

    fs = s3.filesystem()
    infos = fs.get_file_info(pafs.FileSelector(f"{BUCKET}/{prefix}", recursive=True, allow_not_found=True))
    out = {}
    for info in infos:
        if info.type == pafs.FileType.File:
            with fs.open_input_file(info.path) as f:
                out[info.path[len(f"{BUCKET}/{prefix}/"):]] = f.read()
    return out


def test_mirror_keeps_storage_equal_to_the_local_tree(s3_env, tmp_path):
    from tfos.storage.mirror import Mirror

    root = tmp_path / "root"
    (root / "ckpt").mkdir(parents=True)
    (root / "ckpt" / "ckpt-1.data-00000-of-00001").write_bytes(b"weights-1")
    (root / "ckpt" / "checkpoint").write_text('model_checkpoint_path: "ckpt-1"')
    big = os.urandom(12 << 20)  # multipart upload
    (root / "export").mkdir()
    (root / "export" / "model.keras").write_bytes(big)
    mirror = Mirror(str(root), f"s3://{BUCKET}/mirror-run")
    report = mirror.sync()
    assert report.uploaded == 3 and not report.failed
    assert remote_tree(s3_env, "mirror-run") == {
        "ckpt/ckpt-1.data-00000-of-00001": b"weights-1", "ckpt/checkpoint": b'model_checkpoint_path: "ckpt-1"',
        "export/model.keras": big}
    assert mirror.sync().uploaded == 0  # nothing changed, nothing sent
    (root / "ckpt" / "ckpt-1.data-00000-of-00001").unlink()
    (root / "ckpt" / "ckpt-2.data-00000-of-00001").write_bytes(b"weights-2")
    (root / "ckpt" / "checkpoint").write_text('model_checkpoint_path: "ckpt-2"')
    report = mirror.finish()
    assert (report.uploaded, report.deleted) == (2, 1)
    tree = remote_tree(s3_env, "mirror-run")
    assert sorted(tree) == ["ckpt/checkpoint", "ckpt/ckpt-2.data-00000-of-00001", "export/model.keras"]
    assert tree["ckpt/checkpoint"] == b'model_checkpoint_path: "ckpt-2"'


def test_pointer_files_go_after_the_data_they_point_to():
    from tfos.storage.mirror import _upload_order

    names = ["ckpt/checkpoint", "ckpt/ckpt-2.index", "ckpt/ckpt-2.data-00000-of-00001", "events.out"]
    assert sorted(names, key=_upload_order) == [
        "ckpt/ckpt-2.data-00000-of-00001", "events.out", "ckpt/checkpoint", "ckpt/ckpt-2.index"]


def test_restore_downloads_and_the_mirror_does_not_send_it_back(s3_env, tmp_path):
    from tfos.storage.mirror import Mirror, restore, write_restored_manifest

    first = tmp_path / "first"
    (first / "backup").mkdir(parents=True)
    (first / "backup" / "chief" / "state").parent.mkdir()
    (first / "backup" / "chief" / "state").write_bytes(b"epoch=3")
    Mirror(str(first), f"s3://{BUCKET}/restore-run").finish()
    second = tmp_path / "second"
    (second / "backup").mkdir(parents=True)
    restored = restore(f"s3://{BUCKET}/restore-run/backup", str(second / "backup"))
    assert list(restored) == ["chief/state"]
    assert (second / "backup" / "chief" / "state").read_bytes() == b"epoch=3"
    write_restored_manifest(str(second), "backup", restored)
    mirror = Mirror(str(second), f"s3://{BUCKET}/restore-run")
    assert mirror.sync().uploaded == 0
    assert restore(f"s3://{BUCKET}/restore-run/nothing-here", str(tmp_path / "empty")) == {}


def test_a_mirror_that_cannot_save_fails_naming_the_files(tmp_path, dying_s3):
    from tfos.storage.mirror import Mirror

    server = dying_s3
    root = tmp_path / "root"
    root.mkdir()
    (root / "saved-early").write_bytes(b"x")
    mirror = Mirror(str(root), f"s3://{BUCKET}/dying-run")
    assert mirror.sync().uploaded == 1
    (root / "model.keras").write_bytes(os.urandom(1 << 20))
    server.stop()
    with pytest.raises(StorageError) as info:
        mirror.finish()
    message = str(info.value)
    assert message.startswith(f"could not save 1 file(s) to s3://{BUCKET}/dying-run: model.keras: cannot write "
                              f"s3://{BUCKET}/dying-run/model.keras")
    assert server.secret_key not in message


def test_check_writable_fails_at_once_on_a_bad_credential(s3_env, monkeypatch):
    from tfos.storage.filesystems import check_writable

    check_writable(f"s3://{BUCKET}/probe-ok")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-Qq")
    with pytest.raises(StorageError) as info:
        check_writable(f"s3://{BUCKET}/probe-bad")
    assert str(info.value).startswith(f"cannot write to s3://{BUCKET}/probe-bad: ")
    assert "wrong-secret-Qq" not in str(info.value)


def test_restored_files_deleted_before_any_pass_are_deleted_in_storage(s3_env, tmp_path):
    from tfos.storage.mirror import Mirror, restore, write_restored_manifest

    first = tmp_path / "first"
    (first / "backup").mkdir(parents=True)
    (first / "backup" / "state").write_bytes(b"epoch=1")
    Mirror(str(first), f"s3://{BUCKET}/gone-run").finish()
    second = tmp_path / "second"
    (second / "backup").mkdir(parents=True)
    write_restored_manifest(str(second), "backup", restore(f"s3://{BUCKET}/gone-run/backup", str(second / "backup")))
    (second / "backup" / "state").unlink()  # training ended and removed its backup
    assert Mirror(str(second), f"s3://{BUCKET}/gone-run").finish().deleted == 1
    assert remote_tree(s3_env, "gone-run") == {}


def test_spark_s3a_settings_become_the_sdk_variables():
    from tfos.storage.credentials import apply_missing, storage_env_from_conf

    conf = {"spark.hadoop.fs.s3a.endpoint": "minio:9000", "spark.hadoop.fs.s3a.connection.ssl.enabled": "false",
            "spark.hadoop.fs.s3a.access.key": "AK", "spark.hadoop.fs.s3a.secret.key": "SK",
            "spark.hadoop.fs.s3a.endpoint.region": "eu-west-1"}
    env = storage_env_from_conf(lambda key, default=None: conf.get(key, default))
    assert env == {"AWS_ENDPOINT_URL": "http://minio:9000", "AWS_ACCESS_KEY_ID": "AK",
                   "AWS_SECRET_ACCESS_KEY": "SK", "AWS_REGION": "eu-west-1"}
    assert storage_env_from_conf(lambda key, default=None: {"spark.hadoop.fs.s3a.endpoint": "s3.x"}.get(key)) == {
        "AWS_ENDPOINT_URL": "https://s3.x"}
    environ = {"AWS_ACCESS_KEY_ID": "from-the-executor"}
    apply_missing(environ, env)
    assert environ["AWS_ACCESS_KEY_ID"] == "from-the-executor" and environ["AWS_SECRET_ACCESS_KEY"] == "SK"


def test_node_launch_never_shows_the_storage_keys():
    from tfos.node.launch import NodeLaunch
    from tfos.reservation.auth import Secret

    launch = NodeLaunch(run_id="r", server_address="h:1", secret=Secret(b"x" * 32), input_mode=0, tensorboard=False,
                        log_dir="", keras="auto", default_fs="file:///", reservation_timeout=1,
                        heartbeat_interval_s=1, heartbeat_timeout_s=2, stop_grace_s=1, keep_omp_num_threads=False,
                        storage_env={"AWS_SECRET_ACCESS_KEY": "SK-shown?"})
    assert "SK-shown?" not in repr(launch)


def test_compat_export_saved_model_uploads_to_storage(s3_env, tmp_path):
    import keras
    import numpy as np
    import tensorflow as tf

    from tfos.compat import compat
    from tfos.storage.mirror import restore

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    assert compat.export_saved_model(model, f"s3://{BUCKET}/exports/m1", is_chief=True) == f"s3://{BUCKET}/exports/m1"
    assert "saved_model.pb" in remote_tree(s3_env, "exports/m1")
    local = tmp_path / "m1"
    restore(f"s3://{BUCKET}/exports/m1", str(local))
    x = np.ones((1, 3), np.float32)
    loaded = tf.saved_model.load(str(local))
    np.testing.assert_allclose(loaded.serve(x).numpy(), model(x).numpy(), rtol=1e-5)
    assert compat.export_saved_model(model, f"s3://{BUCKET}/exports/m2", is_chief=False) is None
    assert remote_tree(s3_env, "exports/m2") == {}


def test_a_finished_mirror_never_touches_storage_again(s3_env, tmp_path):
    import shutil

    from tfos.storage.mirror import Mirror

    root = tmp_path / "root"
    (root / "backup").mkdir(parents=True)
    (root / "backup" / "state").write_bytes(b"epoch=2")
    mirror = Mirror(str(root), f"s3://{BUCKET}/finished-run")
    mirror.finish()
    shutil.rmtree(root)  # the node removes its tree after the last pass
    assert mirror.finish().deleted == 0 and mirror.sync().deleted == 0
    assert Mirror(str(root), f"s3://{BUCKET}/finished-run").sync().deleted == 0  # no tree, no deletions
    assert remote_tree(s3_env, "finished-run") == {"backup/state": b"epoch=2"}


def test_any_fsspec_file_system_serves_every_storage_call(tmp_path, monkeypatch):
    """fsspec's in-memory file system stands in for hdfs-native and friends: same code path."""
    import fsspec

    from tfos.storage.mirror import Mirror, restore

    memory = fsspec.filesystem("memory")
    for path in write_tfrecords(str(tmp_path / "local"), 3, 10):
        memory.pipe(f"/fsspec-data/train/{os.path.basename(path)}", open(path, "rb").read())
    files = glob("memory://fsspec-data/train/part-*")
    assert files == [f"memory:///fsspec-data/train/part-{i:05d}.tfrecord" for i in range(3)]
    assert len(records_of(tfrecord_dataset(files, stage_dir=str(tmp_path / "stage")))) == 30
    root = tmp_path / "root"
    (root / "export").mkdir(parents=True)
    (root / "export" / "model.keras").write_bytes(b"model")
    Mirror(str(root), "memory://fsspec-runs/r1").finish()
    assert memory.cat("/fsspec-runs/r1/export/model.keras") == b"model"
    assert list(restore("memory://fsspec-runs/r1/export", str(tmp_path / "back"))) == ["model.keras"]


def test_a_native_scheme_can_be_served_through_fsspec_instead(monkeypatch):
    monkeypatch.setenv("TFOS_FSSPEC_SCHEMES", "s3, hdfs")
    assert filesystems._fsspec_schemes(os.environ) == {"s3", "hdfs"}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_soak_large_files_through_mirror_restore_and_staging(s3_env, tmp_path):
    """Hundreds of MB each way: multipart uploads, a growing file mirrored many times, staged reads."""
    import hashlib

    import tensorflow as tf

    from tfos.storage.mirror import Mirror, restore

    root = tmp_path / "root"
    (root / "ckpt").mkdir(parents=True)
    mirror = Mirror(str(root), f"s3://{BUCKET}/soak")
    blob = root / "ckpt" / "weights.data"
    for step in range(6):  # a checkpoint rewritten and growing: 32..192 MB
        blob.write_bytes(os.urandom((step + 1) * (32 << 20)))
        (root / "ckpt" / "checkpoint").write_text(f"step {step}")
        assert not mirror.sync().failed
    mirror.finish()
    back = tmp_path / "back"
    restore(f"s3://{BUCKET}/soak/ckpt", str(back))
    assert hashlib.sha256((back / "weights.data").read_bytes()).digest() == hashlib.sha256(blob.read_bytes()).digest()
    assert (back / "checkpoint").read_text() == "step 5"
    paths = []
    for f in range(4):  # ~48 MB of records each
        path = tmp_path / f"big-{f}.tfrecord"
        with tf.io.TFRecordWriter(str(path)) as writer:
            for _ in range(12000):
                writer.write(os.urandom(4000))
        paths.append(str(path))
    uris = upload(s3_env, paths, "soak-records")
    expected = records_of(tf.data.TFRecordDataset(paths, num_parallel_reads=2))
    got = records_of(tfrecord_dataset(uris, num_parallel_reads=2, stage_dir=str(tmp_path / "stage"),
                                      max_stage_bytes=100 << 20))
    assert got == expected


def test_storage_keys_passed_in_env_never_show_in_the_run_config():
    from tfos.config import RunConfig

    config = RunConfig(num_executors=2, env={"AWS_SECRET_ACCESS_KEY": "Kq-secret-9"}, storage="s3://b/r")
    assert "Kq-secret-9" not in repr(config) and "s3://b/r" in repr(config)


def test_finish_fails_naming_the_storage_when_a_periodic_pass_is_stuck_instead_of_waiting_forever(tmp_path, monkeypatch):
    from tfos.storage.mirror import Mirror, SyncReport

    stuck, entered = threading.Event(), threading.Event()
    mirror = Mirror(str(tmp_path), f"file://{tmp_path}/remote")

    def a_pass_that_hangs():  # as an upload to storage that stopped answering
        entered.set()
        stuck.wait(30)
        return SyncReport()

    monkeypatch.setattr(mirror, "sync", a_pass_that_hangs)
    mirror.finish_timeout_s = 0.5
    mirror.start(interval_s=0.01)
    assert entered.wait(10)
    started = time.monotonic()
    with pytest.raises(StorageError) as info:
        mirror.finish()
    stuck.set()
    assert time.monotonic() - started < 5
    assert str(info.value) == (f"the mirror's pass to file://{tmp_path}/remote did not end in 0.5 s (is the "
                               "storage answering?); the node's last files are not confirmed saved")


class _Session:
    """A SparkSession's conf as storage_environ reads it (``spark.conf.get``)."""

    def __init__(self, conf: dict[str, str]):
        values = dict(conf)

        class Conf:
            @staticmethod
            def get(key, default=None):
                return values.get(key, default)

        self.conf = Conf()


_CONF = {"spark.hadoop.fs.s3a.endpoint": "10.0.0.9:9000", "spark.hadoop.fs.s3a.connection.ssl.enabled": "false",
         "spark.hadoop.fs.s3a.access.key": "conf-key", "spark.hadoop.fs.s3a.secret.key": "conf-secret"}


@pytest.mark.parametrize(("environ", "expected"), [
    # the process's environment, the Spark conf -> what storage clients read
    ({}, {"AWS_ENDPOINT_URL": "http://10.0.0.9:9000", "AWS_ACCESS_KEY_ID": "conf-key",
          "AWS_SECRET_ACCESS_KEY": "conf-secret"}),
    ({"AWS_ACCESS_KEY_ID": "env-key", "AWS_SECRET_ACCESS_KEY": "env-secret"},  # the environment wins
     {"AWS_ENDPOINT_URL": "http://10.0.0.9:9000", "AWS_ACCESS_KEY_ID": "env-key",
      "AWS_SECRET_ACCESS_KEY": "env-secret"}),
    ({"AWS_ENDPOINT_URL": "https://s3.example", "PATH": "/bin"},
     {"AWS_ENDPOINT_URL": "https://s3.example", "PATH": "/bin", "AWS_ACCESS_KEY_ID": "conf-key",
      "AWS_SECRET_ACCESS_KEY": "conf-secret"}),
])
def test_storage_settings_are_the_environments_then_the_spark_confs(environ, expected):
    from tfos.storage.credentials import storage_environ, task_storage_settings

    before = dict(environ)
    assert dict(storage_environ(_Session(_CONF), environ)) == expected
    assert environ == before  # the process's own environment is never changed
    # in a Spark task the driver's settings stand in for the conf, and only inside the task
    with task_storage_settings({"AWS_ACCESS_KEY_ID": "conf-key", "AWS_SECRET_ACCESS_KEY": "conf-secret",
                                "AWS_ENDPOINT_URL": "http://10.0.0.9:9000"}):
        assert dict(storage_environ(None, environ)) == expected
    assert storage_environ(None, environ) is environ


def test_without_a_spark_session_the_environment_is_what_storage_reads():
    from tfos.storage.credentials import storage_environ

    environ = {"AWS_REGION": "eu-west-1"}
    assert storage_environ(_Session({}), environ) is environ
