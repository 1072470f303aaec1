"""The driver's side of Spark: which application tfos runs in and what it can do.

=================  ==============================================================
:mod:`.app`        ``SparkApp``: classic ``SparkContext`` or a Spark Connect session,
                   behind one interface (conf, barrier jobs, job groups, cancel)
:mod:`.conf`       every ``spark.tfos.*`` key, and the reader that turns them into
                   ``tfos.run`` options
:mod:`.env`        the application's settings read once, and the checks that it can
                   host a TF cluster (executors, cores, dynamic allocation, security)
:mod:`.jobs`       tfos's Spark jobs in threads of their own: job groups, cancelling,
                   and their failures as tfos errors
=================  ==============================================================
"""
