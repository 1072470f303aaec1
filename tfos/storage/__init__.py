"""Cluster storage for the TF nodes: HDFS, S3, GCS, Azure and local paths over ``pyarrow.fs``.

=========================  ======================================================
:mod:`.filesystems`        URI -> file system and path; listing (``glob``); errors
                           that name the URI without its credentials
:mod:`.records`            TFRecord files from any storage into ``tf.data``
                           (staged to local disk ahead of TensorFlow's reader)
=========================  ======================================================
"""

from tfos.storage.filesystems import Location, glob, is_remote, local_path, redact, resolve
from tfos.storage.records import tfrecord_dataset

__all__ = ["Location", "glob", "is_remote", "local_path", "redact", "resolve", "tfrecord_dataset"]
