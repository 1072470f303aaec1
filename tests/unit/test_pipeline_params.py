"""tfos.pipeline and tfos.predict without Spark or TensorFlow: params -> args, persisted
state, and the driver's checks of column <-> tensor mappings."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
from pyspark.sql import types as T

from tfos import pipeline
from tfos.compat import TFCluster
from tfos.compat import pipeline as compat_pipeline
from tfos.errors import ConfigError
from tfos.input_mode import InputMode
from tfos.pipeline import TFEstimator, TFModel, function_reference, merge_args
from tfos.predict import ModelInfo, TensorInfo, plan, spark_type

pytestmark = pytest.mark.timeout(30)


def module_level_train_fn(args, ctx):
    """Importable by name: saved as a reference."""


# ------------------------------------------------------------------ args


@pytest.mark.parametrize("tf_args", [
    {"lr": 0.1, "epochs": 99},
    argparse.Namespace(lr=0.1, epochs=99),
])
def test_params_are_merged_into_tf_args_and_win(tf_args):
    args = merge_args(tf_args, {"epochs": 3, "batch_size": 64})
    assert args == argparse.Namespace(lr=0.1, epochs=3, batch_size=64)
    assert (tf_args["epochs"] if isinstance(tf_args, dict) else tf_args.epochs) == 99  # not changed


def test_no_tf_args_gives_the_params_alone():
    assert merge_args(None, {"epochs": 2}) == argparse.Namespace(epochs=2)


def test_argv_style_tf_args_are_refused_with_what_was_received():
    with pytest.raises(ConfigError) as err:
        merge_args(["--epochs", "3"], {})
    assert str(err.value) == ("tf_args must be a dict, an argparse.Namespace or None; received: "
                              "list ['--epochs', '3']")


def test_estimator_args_carry_every_param_under_its_tensorflowonspark_name():
    estimator = (TFEstimator(module_level_train_fn, {"lr": 0.5, "epochs": 7})
                 .setInputMapping({"features": "x"}).setOutputMapping({"output_0": "pred"})
                 .setClusterSize(3).setNumPS(1).setEpochs(4).setBatchSize(32).setModelDir("/m")
                 .setExportDir("/e").setSignatureDefKey("sig").setTagSet("serve,gpu").setTensorboard(True)
                 .setInputMode(0).setGraceSecs(5).setReaders(2).setSteps(10).setProtocol("grpc")
                 .setDriverPSNodes(False).setMasterNode("chief").setTFRecordDir("/t").setFeedTimeout(60))
    args = vars(estimator.merged_args())
    assert args == {
        "lr": 0.5, "epochs": 4, "input_mapping": {"features": "x"}, "output_mapping": {"output_0": "pred"},
        "cluster_size": 3, "num_ps": 1, "batch_size": 32, "model_dir": "/m", "export_dir": "/e",
        "signature_def_key": "sig", "tag_set": "serve,gpu", "tensorboard": True, "input_mode": 0,
        "grace_secs": 5, "readers": 2, "steps": 10, "protocol": "grpc", "driver_ps_nodes": False,
        "master_node": "chief", "tfrecord_dir": "/t", "feed_timeout": 60.0,
    }


@pytest.mark.parametrize("mode", [InputMode.SPARK, TFCluster.InputMode.SPARK, np.int64(1), np.int32(1), 1])
def test_input_mode_takes_the_enum_and_numpy_ints_as_tensorflowonspark_scripts_pass_them(mode):
    # pyspark's toInt refuses an IntEnum and most NumPy ints ("Could not convert 1 to int")
    args = TFEstimator(module_level_train_fn).setInputMode(mode).merged_args()
    assert args.input_mode == 1 and type(args.input_mode) is int


def test_numeric_params_take_numpy_numbers_and_still_refuse_what_is_not_a_number():
    estimator = (TFEstimator(module_level_train_fn).setEpochs(np.int16(3)).setBatchSize(np.uint32(64))
                 .setFeedTimeout(np.float32(2.5)).setGraceSecs(np.int8(4)).setTensorboard(np.bool_(True)))
    args = estimator.merged_args()
    assert (args.epochs, args.batch_size, args.feed_timeout, args.grace_secs, args.tensorboard) == (
        3, 64, 2.5, 4, True)
    assert [type(v) for v in (args.epochs, args.batch_size, args.feed_timeout, args.tensorboard)] == [
        int, int, float, bool]
    with pytest.raises(TypeError, match="Could not convert 2.5 to int"):
        TFEstimator(module_level_train_fn).setEpochs(2.5)
    with pytest.raises(TypeError, match="Could not convert x to int"):
        TFEstimator(module_level_train_fn).setEpochs("x")
    with pytest.raises(TypeError, match="Boolean Param requires value of type bool"):
        TFEstimator(module_level_train_fn).setTensorboard(1)


def test_defaults_are_tensorflowonsparks():
    args = TFEstimator(module_level_train_fn).merged_args()
    assert (args.cluster_size, args.num_ps, args.input_mode, args.epochs, args.batch_size, args.steps,
            args.readers, args.protocol, args.tensorboard, args.grace_secs, args.master_node,
            args.signature_def_key, args.tag_set) == (
        None, 0, 1, 1, 100, 1000, 1, "grpc", False, 30, "chief", "serving_default", "serve")


def test_a_mapping_param_must_be_a_dict_of_strings():
    with pytest.raises(TypeError, match="expected a dict of str to str; received: \\['x'\\]"):
        TFModel().setInputMapping(["x"])


def test_fitted_model_gets_the_estimators_params():
    estimator = TFEstimator(module_level_train_fn, {"a": 1}).setExportDir("/e").setBatchSize(7) \
        .setInputMapping({"c": "t"}).setOutputMapping({"o": "p"}).setTagSet("serve")
    model = estimator._copyValues(TFModel(estimator.tf_args))
    assert (model.getExportDir(), model.getBatchSize(), model.getInputMapping(), model.getOutputMapping(),
            model.getTagSet(), model.tf_args) == ("/e", 7, {"c": "t"}, {"o": "p"}, "serve", {"a": 1})


def test_transform_without_a_model_path_says_what_to_set():
    with pytest.raises(ConfigError, match=r"TFModel has no model to load: setExportDir\("):
        TFModel().model_path()


# ------------------------------------------------------------ the Has* mixins

# Written out here, apart from tfos.pipeline's declarations, so a slip in the factory or
# the declarations (a name, a doc, an accessor, a default) fails a test.
# mixin, param, set/get suffix, doc, default, a value to set, what the getter returns
PARAM_TABLE = [
    ("HasBatchSize", "batch_size", "BatchSize", "records per batch (model calls in transform)", 100,
     np.int32(7), 7),
    ("HasClusterSize", "cluster_size", "ClusterSize",
     "number of TF nodes (executors); None: spark.executor.instances", None, 3, 3),
    ("HasEpochs", "epochs", "Epochs", "number of epochs to feed", 1, 4, 4),
    ("HasGraceSecs", "grace_secs", "GraceSecs", "seconds the evaluator may take to finish after training", 30,
     5, 5),
    ("HasInputMapping", "input_mapping", "InputMapping", "DataFrame column -> input tensor", {},
     {"features": "x"}, {"features": "x"}),
    ("HasInputMode", "input_mode", "InputMode", "how the nodes get data (0=TENSORFLOW, 1=SPARK)", 1,
     InputMode.TENSORFLOW, 0),
    ("HasMasterNode", "master_node", "MasterNode", "job name of the coordinating node ('chief')", "chief",
     "master", "master"),
    ("HasModelDir", "model_dir", "ModelDir",
     "checkpoint directory for train_fn; the model transform loads when export_dir is unset", None, "/m", "/m"),
    ("HasNumPS", "num_ps", "NumPS", "number of parameter server nodes", 0, 2, 2),
    ("HasNumPS", "driver_ps_nodes", "DriverPSNodes", "run the ps nodes on the driver (not supported)", False,
     True, True),
    ("HasOutputMapping", "output_mapping", "OutputMapping", "output tensor -> DataFrame column", {},
     {"output_0": "pred"}, {"output_0": "pred"}),
    ("HasProtocol", "protocol", "Protocol", "TF's network protocol (only 'grpc')", "grpc", "rdma", "rdma"),
    ("HasReaders", "readers", "Readers", "reader threads (passed to train_fn only)", 1, 2, 2),
    ("HasSteps", "steps", "Steps", "maximum training steps (passed to train_fn only)", 1000, 10, 10),
    ("HasTensorboard", "tensorboard", "Tensorboard", "start TensorBoard on the chief's executor", False,
     np.bool_(True), True),
    ("HasTFRecordDir", "tfrecord_dir", "TFRecordDir",
     "where fit writes the DataFrame as TFRecords for InputMode.TENSORFLOW", None, "/t", "/t"),
    ("HasExportDir", "export_dir", "ExportDir",
     "the SavedModel directory (or .keras file) train_fn exports and transform loads", None, "/e", "/e"),
    ("HasSignatureDefKey", "signature_def_key", "SignatureDefKey", "the SavedModel signature transform calls",
     "serving_default", "sig", "sig"),
    ("HasTagSet", "tag_set", "TagSet", "comma-separated tags of the SavedModel meta graph", "serve",
     "serve,gpu", "serve,gpu"),
    ("HasFeedTimeout", "feed_timeout", "FeedTimeout",
     "seconds a node or feeding task waits for the other side (tfos)", 600.0, np.float32(2.5), 2.5),
]
MODEL_PARAMS = {"input_mapping", "output_mapping", "batch_size", "model_dir", "export_dir", "signature_def_key",
                "tag_set"}


def test_the_table_lists_every_mixin_and_param_of_tfos_pipeline():
    mixins = {name for name in dir(pipeline) if name.startswith("Has")}
    assert mixins == {row[0] for row in PARAM_TABLE}
    for mixin in mixins:
        declared = {p.name for p in getattr(pipeline, mixin)().params}
        assert declared == {row[1] for row in PARAM_TABLE if row[0] == mixin}, mixin
    assert {p.name for p in TFEstimator().params} == {row[1] for row in PARAM_TABLE}
    assert {p.name for p in TFModel().params} == MODEL_PARAMS


@pytest.mark.parametrize("mixin,name,accessor,doc,default,value,expected", PARAM_TABLE,
                         ids=[row[1] for row in PARAM_TABLE])
def test_each_mixin_declares_its_param_setter_and_getter(mixin, name, accessor, doc, default, value, expected):
    cls = getattr(pipeline, mixin)
    assert (cls.__name__, cls.__qualname__, cls.__module__) == (mixin, mixin, "tfos.pipeline")
    assert getattr(compat_pipeline, mixin) is cls
    stage = cls()
    param = stage.getParam(name)
    assert (param.name, param.doc) == (name, doc)
    assert not stage.isDefined(param)  # a mixin alone has no default, as in TensorFlowOnSpark
    assert getattr(stage, f"set{accessor}")(value) is stage
    got = getattr(stage, f"get{accessor}")()
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize("mixin,name,accessor,doc,default,value,expected", PARAM_TABLE,
                         ids=[row[1] for row in PARAM_TABLE])
def test_stages_default_each_param_and_explain_it(mixin, name, accessor, doc, default, value, expected):
    stages = [TFEstimator(module_level_train_fn)] + ([TFModel()] if name in MODEL_PARAMS else [])
    for stage in stages:
        assert getattr(stage, f"get{accessor}")() == default
        assert stage.explainParam(name) == f"{name}: {doc} (default: {default})"
        copied = getattr(stage, f"set{accessor}")(value).copy()
        assert getattr(copied, f"get{accessor}")() == expected
        assert copied.explainParam(name) == f"{name}: {doc} (default: {default}, current: {expected})"


# ----------------------------------------------------------- persisted state


def test_only_json_values_of_tf_args_are_persisted_and_the_rest_is_listed():
    state = TFModel(argparse.Namespace(lr=0.1, shape=[2, 3], fn=print, data=object()))._persisted_state()
    assert state == {"tfosTfArgs": {"lr": 0.1, "shape": [2, 3]}, "tfosTfArgsKind": "namespace",
                     "tfosTfArgsNotSaved": ["data", "fn"]}
    restored = TFModel()
    restored._restore_state(state)
    assert restored.tf_args == argparse.Namespace(lr=0.1, shape=[2, 3])


def local_function_holder():
    def inner(args, ctx):
        pass
    return inner


@pytest.mark.parametrize("fn,expected", [
    (module_level_train_fn, f"{__name__}:module_level_train_fn"),
    (local_function_holder(), None),           # a closure: not importable by name
    (lambda args, ctx: None, None),
    (None, None),
])
def test_train_fn_is_saved_as_an_import_reference_when_it_is_one(fn, expected):
    assert function_reference(fn) == expected


def test_a_loaded_estimator_gets_its_train_fn_back_by_import():
    state = TFEstimator(module_level_train_fn, {"x": 1})._persisted_state()
    loaded = TFEstimator()
    loaded._restore_state(state)
    assert loaded.train_fn is module_level_train_fn and loaded.export_fn is None and loaded.tf_args == {"x": 1}


# ------------------------------------------------------------ mappings


def _info(**outputs) -> ModelInfo:
    return ModelInfo(
        path="/models/m", kind="saved_model", tags=("serve",), signature="serving_default",
        inputs={"x": TensorInfo("x", "float32", (None, 4)), "k": TensorInfo("k", "int64", (None,))},
        outputs=outputs or {"output_0": TensorInfo("output_0", "float32", (None, 1)),
                            "label": TensorInfo("label", "int64", (None,))},
        version=1,
    )


SCHEMA = T.StructType([
    T.StructField("features", T.ArrayType(T.FloatType())), T.StructField("key", T.LongType()),
    T.StructField("name", T.StringType()), T.StructField("m", T.MapType(T.StringType(), T.LongType())),
])
WHERE = "signature 'serving_default' of SavedModel /models/m (tags serve)"


def test_a_good_mapping_plans_inputs_outputs_and_the_result_schema():
    p = plan(SCHEMA, _info(), {"features": "x", "key": "k"}, {"output_0": "score", "label": "cls"})
    assert [(c, t.name) for c, t in p.inputs] == [("features", "x"), ("key", "k")]
    assert [(t.name, c) for t, c in p.outputs] == [("output_0", "score"), ("label", "cls")]
    assert p.schema.fieldNames() == ["features", "key", "name", "m", "score", "cls"]
    assert p.schema["score"].dataType == T.ArrayType(T.FloatType())
    assert p.schema["cls"].dataType == T.LongType()


@pytest.mark.parametrize("inputs,outputs,message", [
    ({"nope": "x", "key": "k"}, {"label": "cls"},
     "input_mapping names column 'nope', which the DataFrame does not have; its columns: "
     "['features', 'key', 'name', 'm']"),
    ({"features": "images", "key": "k"}, {"label": "cls"},
     f"input_mapping maps column 'features' to 'images', which the {WHERE} does not take; its inputs: "
     "x (float32 [None, 4]), k (int64 [None])"),
    ({"features": "x", "key": "k"}, {"logits": "cls"},
     f"output_mapping names output 'logits', which the {WHERE} does not give; its outputs: "
     "output_0 (float32 [None, 1]), label (int64 [None])"),
    ({"features": "x"}, {"label": "cls"},
     f"the {WHERE} also needs k (int64 [None]); add them to input_mapping ({{column: input}})"),
    ({"features": "x", "key": "k"}, {"label": "key"},
     "output_mapping writes output 'label' to column 'key', which already exists; choose a new column name"),
    ({"key": "x", "features": "k"}, {"label": "cls"},
     "column 'key' (bigint) holds one number per row, which cannot feed input x (float32 [None, 4]); "
     "map it to another input or convert the column"),
    ({"features": "x", "name": "k"}, {"label": "cls"},
     "column 'name' (string) holds strings, which cannot feed input k (int64 [None]); "
     "map it to another input or convert the column"),
    ({"features": "x", "m": "k"}, {"label": "cls"},
     "column 'm' (map<string,bigint>) holds map<string,bigint> values, which cannot feed input k (int64 [None]); "
     "map it to another input or convert the column"),
    ({}, {"label": "cls"},
     f"input_mapping is empty; map DataFrame columns to the model's inputs with setInputMapping({{column: input}}); "
     f"the {WHERE} takes x (float32 [None, 4]), k (int64 [None])"),
])
def test_bad_mappings_name_what_is_wrong_and_what_there_is(inputs, outputs, message):
    with pytest.raises(ConfigError) as err:
        plan(SCHEMA, _info(), inputs, outputs)
    assert str(err.value) == message


@pytest.mark.parametrize("tensor,expected", [
    (TensorInfo("a", "float32", (None,)), T.FloatType()),
    (TensorInfo("a", "float64", (None, 3)), T.ArrayType(T.DoubleType())),
    (TensorInfo("a", "int32", (None, 2, 2)), T.ArrayType(T.IntegerType())),
    (TensorInfo("a", "string", (None,)), T.StringType()),
    (TensorInfo("a", "uint8", (None, None)), T.ArrayType(T.ShortType())),
])
def test_result_column_types_follow_the_outputs_dtype_and_rank(tensor, expected):
    assert spark_type(tensor) == expected


@pytest.mark.parametrize("tensor,message", [
    (TensorInfo("a", "float32", None), "output a (float32 ?) has no batch dimension it declares (unknown rank); "
     "only outputs with one row per input row can become a column"),
    (TensorInfo("a", "complex64", (None,)), "output a (complex64 [None]): a complex64 tensor has no Spark column "
     "type; cast it in the model's serving function"),
])
def test_outputs_spark_cannot_hold_are_refused(tensor, message):
    with pytest.raises(ConfigError) as err:
        spark_type(tensor)
    assert str(err.value) == message
