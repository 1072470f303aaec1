"""TensorFlowOnSpark's module names over tfos: port a script by changing its imports.

A TensorFlowOnSpark script runs when ``tensorflowonspark`` becomes ``tfos.compat`` in its
import lines and nothing else changes::

    from tfos.compat import TFCluster, TFNode, compat, dfutil, pipeline, TFParallel

=================  ==============================================================
``TFCluster``      ``run`` (-> :func:`tfos.run`), ``InputMode``, the cluster's ``train``,
                   ``inference``, ``shutdown(ssc, grace_secs, timeout)``, ``tensorboard_url``,
                   ``cluster_info`` (dicts, as TensorFlowOnSpark gave them), ``cluster_meta``
``TFNode``         ``DataFeed(ctx.mgr, ...)``, ``start_cluster_server``, ``hdfs_path``,
                   ``export_saved_model``, ``next_batch``/``batch_results``/``terminate``,
                   ``release_port``
``compat``         ``export_saved_model(model, dir, is_chief)``, ``disable_auto_shard``,
                   ``is_gpu_available``
``dfutil``         :mod:`tfos.dfutil` (``saveAsTFRecords``, ``loadTFRecords``, ``isLoadedDF``)
``pipeline``       :mod:`tfos.pipeline` (``TFEstimator``, ``TFModel``), imported on first use
``TFParallel``     ``run`` -> :func:`tfos.parallel_run`
``util``           ``single_node_env`` (a no-op: tfos set the process up), ``get_ip_address``
``gpu_info``       ``get_gpus``, ``is_gpu_available``, ``AS_STRING``/``AS_LIST``: the GPUs in
                   ``CUDA_VISIBLE_DEVICES`` (Spark's), else idle ones from ``nvidia-smi``
``TFManager``      an internal tfos does not have: ``start``/``connect`` raise, saying what to use
=================  ==============================================================

Each submodule is imported when it is named, so ``import tfos.compat`` loads none of
them (nor TensorFlow, nor ``pyspark.ml``). docs/porting.md maps every name.
"""

__all__ = ["TFCluster", "TFManager", "TFNode", "TFParallel", "compat", "dfutil", "gpu_info", "pipeline", "util"]
