"""Shared test settings: loopback only, quiet TensorFlow."""

import os

os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
