"""Executor side: the Spark node task, its supervisor process and the TF process."""
