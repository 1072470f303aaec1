"""InputMode.SPARK: streaming RDD/DataFrame partitions into the TF processes."""
