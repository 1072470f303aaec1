"""tfos.pipeline from a Spark Connect client session: TFEstimator.fit feeds a Connect
DataFrame to a tfos cluster, TFModel.transform scores one, both stages are saved and
loaded (overwrite included) and run inside a pyspark Pipeline, against a real Connect
server (tests/connect_server.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.integration.test_pipeline import (
    _predictions,
    _regression_rows,
    regression_estimator,
    train_regression,
)
from tfos.pipeline import TFEstimator, TFModel

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@pytest.mark.slow  # CI time; the same stages run in the default run in test_pipeline.py, and the Connect feed and inference they use in test_connect.py
def test_fit_transform_save_and_load_over_connect(remote, tmp_path):
    from pyspark.ml import Pipeline, PipelineModel

    schema = "id long, features array<float>, target float"
    # cached: a round-robin repartition evaluated twice need not put rows in the same order
    train = remote.createDataFrame(_regression_rows(800, seed=1), schema).repartition(4).cache()
    test = remote.createDataFrame(_regression_rows(200, seed=2), schema).repartition(3).cache()
    train.count(), test.count()
    paths = {"export_dir": str(tmp_path / "saved_model"), "keras_file": str(tmp_path / "model.keras"),
             "report_dir": str(tmp_path)}
    estimator = regression_estimator(paths)
    model = Pipeline(stages=[estimator]).fit(train).stages[0]  # a Python stage in pyspark's Pipeline
    loss = json.loads((tmp_path / "chief.json").read_text())["loss"]
    assert len(loss) == 4 and loss[-1] < loss[0] / 20, loss
    assert isinstance(model, TFModel)

    scored = model.setInputMapping({"features": "x"}).transform(test)
    assert scored.columns == ["id", "features", "target", "prediction"]
    rows = scored.collect()
    assert [r.id for r in rows] == [r.id for r in test.collect()]
    predicted = np.array([r.prediction[0] for r in rows])
    assert np.abs(predicted - np.array([r.target for r in rows])).max() < 0.1

    estimator.write().save(str(tmp_path / "estimator"))
    estimator.write().overwrite().save(str(tmp_path / "estimator"))  # the server clears the old one
    loaded = TFEstimator.load(str(tmp_path / "estimator"))
    assert loaded.train_fn is train_regression and loaded.uid == estimator.uid
    model.write().save(str(tmp_path / "model"))
    PipelineModel([model]).save(str(tmp_path / "pipeline"))
    expected = _predictions(scored)
    assert _predictions(TFModel.load(str(tmp_path / "model")).transform(test)) == expected
    assert _predictions(PipelineModel.load(str(tmp_path / "pipeline")).transform(test)) == expected
