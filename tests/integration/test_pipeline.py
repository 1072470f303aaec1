"""tfos.pipeline on a real 2-executor Spark application: TFEstimator.fit trains on a tfos
cluster fed from a DataFrame, TFModel.transform runs the exported model on the executors,
both stages survive save/load, and bad mappings fail at once with the names."""

from __future__ import annotations

import json
import sys

import cloudpickle
import numpy as np
import pytest

from tfos.errors import ConfigError
from tfos.pipeline import TFEstimator, TFModel

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]
cloudpickle.register_pickle_by_value(sys.modules[__name__])

WEIGHTS = np.array([1.5, -2.0, 0.5, 3.0], np.float32)
BIAS = 0.25
FEATURES = len(WEIGHTS)


def train_regression(args, ctx):
    """A linear model fitted with MWMS on the fed rows; the chief exports it."""
    import json as _json
    import os as _os

    import tensorflow as tf

    keras = tf.keras
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    # columns and their specs inferred from the DataFrame: {"features": float32[4], "target": float32}
    dataset = ctx.dataset().map(lambda row: (row["features"], row["target"])).batch(args.batch_size)

    def build():
        inputs = keras.Input((args.features,), name="x")
        return keras.Model(inputs, keras.layers.Dense(1, name="y")(inputs))

    with strategy.scope():
        model = build()
        model.compile(optimizer=keras.optimizers.SGD(args.learning_rate), loss="mse")
    history = model.fit(dataset, epochs=args.epochs, verbose=0)
    if ctx.is_chief:
        # a plain copy of the weights: no collective op while only the chief saves
        local = build()
        local.set_weights(model.get_weights())
        local.export(args.export_dir, verbose=False)
        local.save(args.keras_file)
        seen = {k: v for k, v in vars(args).items() if k in ("epochs", "batch_size", "input_mapping", "learning_rate")}
        with open(_os.path.join(args.report_dir, "chief.json"), "w") as f:
            _json.dump({"loss": [float(x) for x in history.history["loss"]], "args": seen}, f)


def _regression_rows(n: int, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(n, FEATURES)).astype(np.float32)
    y = x @ WEIGHTS + BIAS
    return [(i, [float(v) for v in x[i]], float(y[i])) for i in range(n)]


def regression_estimator(paths: dict, extra_args: dict | None = None) -> TFEstimator:
    """train_regression as a 2-node, 4-epoch TFEstimator exporting to ``paths["export_dir"]``."""
    return (
        TFEstimator(train_regression, {"learning_rate": 0.2, "features": FEATURES, **(extra_args or {}),
                                       "keras_file": paths["keras_file"], "report_dir": paths["report_dir"]})
        .setInputMapping({"features": "x", "target": "y"})
        .setOutputMapping({"output_0": "prediction"})
        .setClusterSize(2).setEpochs(4).setBatchSize(32)
        .setExportDir(paths["export_dir"])
        .setGraceSecs(0)
    )


@pytest.fixture(scope="module")
def frames(spark):
    schema = "id long, features array<float>, target float"
    train = spark.createDataFrame(_regression_rows(800, seed=1), schema).repartition(4).cache()
    test = spark.createDataFrame(_regression_rows(200, seed=2), schema).repartition(3).cache()
    train.count(), test.count()
    return train, test


@pytest.fixture(scope="module")
def fitted(spark, frames, tmp_path_factory):
    """One fit for the module: (estimator, model, chief's report, paths)."""
    root = tmp_path_factory.mktemp("pipeline")
    paths = {"export_dir": str(root / "saved_model"), "keras_file": str(root / "model.keras"),
             "report_dir": str(root)}
    estimator = regression_estimator(paths, {"epochs": 99})
    model = estimator.fit(frames[0])
    report = json.loads((root / "chief.json").read_text())
    return estimator, model, report, paths


def _predictions(df) -> dict[int, float]:
    return {row.id: row.prediction for row in df.select("id", "prediction").collect()}


def test_fit_trains_on_the_fed_dataframe_and_transform_predicts_the_targets(fitted, frames):
    _estimator, model, report, paths = fitted
    # args = tf_args with the params merged in (params win: epochs 4, not tf_args' 99)
    assert report["args"] == {"epochs": 4, "batch_size": 32, "input_mapping": {"features": "x", "target": "y"},
                              "learning_rate": 0.2}
    loss = report["loss"]
    assert len(loss) == 4 and loss[-1] < loss[0] / 20, loss
    assert isinstance(model, TFModel) and model.getExportDir() == paths["export_dir"]

    test = frames[1]
    scored = model.setInputMapping({"features": "x"}).transform(test)
    assert scored.columns == ["id", "features", "target", "prediction"]
    assert scored.schema["prediction"].dataType.simpleString() == "array<float>"
    rows = scored.collect()
    assert [r.id for r in rows] == [r.id for r in test.collect()]  # same rows, same order
    predicted = np.array([r.prediction[0] for r in rows])
    targets = np.array([r.target for r in rows])
    assert np.abs(predicted - targets).max() < 0.1, np.abs(predicted - targets).max()


def test_a_keras_file_gives_the_same_predictions_as_the_saved_model(fitted, frames):
    _estimator, model, _report, paths = fitted
    from_saved = _predictions(model.setInputMapping({"features": "x"}).transform(frames[1]))
    keras_model = TFModel().setExportDir(paths["keras_file"]).setInputMapping({"features": "x"}) \
        .setOutputMapping({"y": "prediction"}).setBatchSize(64)
    from_keras = _predictions(keras_model.transform(frames[1]))
    assert from_keras.keys() == from_saved.keys()
    np.testing.assert_allclose([from_keras[i] for i in sorted(from_keras)],
                               [from_saved[i] for i in sorted(from_saved)], rtol=1e-5, atol=1e-6)


def test_saved_and_loaded_stages_keep_their_params_and_predict_the_same(fitted, frames, tmp_path):
    from pyspark.ml import PipelineModel

    estimator, model, _report, _paths = fitted
    model = model.setInputMapping({"features": "x"}).setBatchSize(17)
    estimator.write().overwrite().save(str(tmp_path / "estimator"))
    model.write().save(str(tmp_path / "model"))
    PipelineModel([model]).save(str(tmp_path / "pipeline"))

    loaded_estimator = TFEstimator.load(str(tmp_path / "estimator"))
    assert _params(loaded_estimator) == _params(estimator)
    assert loaded_estimator.tf_args == estimator.tf_args
    assert loaded_estimator.train_fn is train_regression  # an importable function: saved by name
    assert loaded_estimator.uid == estimator.uid

    loaded_model = TFModel.load(str(tmp_path / "model"))
    assert _params(loaded_model) == _params(model)
    assert loaded_model.getBatchSize() == 17 and loaded_model.tf_args == model.tf_args
    expected = _predictions(model.transform(frames[1]))
    assert _predictions(loaded_model.transform(frames[1])) == expected
    assert _predictions(PipelineModel.load(str(tmp_path / "pipeline")).transform(frames[1])) == expected


def _params(stage) -> dict:
    return {p.name: v for p, v in stage.extractParamMap().items()}


@pytest.mark.parametrize("inputs,outputs,message", [
    ({"features_typo": "x"}, {"output_0": "p"},
     "input_mapping names column 'features_typo', which the DataFrame does not have; its columns: "
     "['id', 'features', 'target']"),
    ({"features": "images"}, {"output_0": "p"},
     "input_mapping maps column 'features' to 'images', which the signature 'serving_default' of SavedModel "
     "{export_dir} (tags serve) does not take; its inputs: x (float32 [None, 4])"),
    ({"features": "x"}, {"logits": "p"},
     "output_mapping names output 'logits', which the signature 'serving_default' of SavedModel {export_dir} "
     "(tags serve) does not give; its outputs: output_0 (float32 [None, 1])"),
])
def test_bad_mappings_fail_at_transform_with_the_names(fitted, frames, inputs, outputs, message):
    _estimator, model, _report, paths = fitted
    bad = model.copy().setInputMapping(inputs).setOutputMapping(outputs)
    with pytest.raises(ConfigError) as err:
        bad.transform(frames[1])
    assert str(err.value) == message.format(**paths)


def test_an_unknown_signature_lists_the_ones_there_are(fitted, frames):
    _estimator, model, _report, paths = fitted
    with pytest.raises(ConfigError) as err:
        model.copy().setInputMapping({"features": "x"}).setSignatureDefKey("predict").transform(frames[1])
    assert str(err.value) == (f"SavedModel {paths['export_dir']} has no signature 'predict'; its signatures: "
                              f"['serve', 'serving_default']; set signature_def_key to one of them")


def test_fit_with_an_unknown_input_column_fails_before_any_cluster_starts(frames):
    estimator = TFEstimator(train_regression, {}).setInputMapping({"feature": "x"}).setClusterSize(2)
    with pytest.raises(ConfigError) as err:
        estimator.fit(frames[0])
    assert str(err.value) == ("input_mapping names column(s) ['feature'], which the DataFrame does not have; "
                              "its columns: ['id', 'features', 'target']")
