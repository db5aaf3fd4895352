"""The Spark engine: the same pinned model version through ``mlflow.pyfunc.spark_udf``, Spark's
own Parquet/CSV reader and writer. The output is a folder of Parquet part files (Spark's
layout), written under a temporary name and renamed when Spark has committed it."""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds

from batch.inputs import BadInput, Input
from batch.local import Summary, count_batch, partial_path
from batch.model import JobModel
from batch.table import EMPTY_TEXT, NUL_TEXT, NULL_TEXT, output_layout, too_long

# Python's str.isspace() set: Java's Unicode \s plus the four separators U+001C..U+001F.
BLANK_PATTERN = r"^(?U)[\s\x{1c}-\x{1f}]*$"


def spark_session(master: str) -> Any:
    """A session on ``master`` (``local[*]``, ``spark://…``, ``yarn``) or, for an ``sc://``
    URL, a Spark Connect session."""
    # Executors run Python with this interpreter, not the system's (which lacks pandas).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName("emotitrack-score")
    if master.startswith("sc://"):
        return builder.remote(master).getOrCreate()
    session = (
        builder.master(master)
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    return session


def spark_schema(schema: pa.Schema) -> Any:
    """``schema`` as Spark's; a type Spark cannot hold from Arrow stops the job as bad input."""
    from pyspark.sql.pandas.types import from_arrow_schema

    try:
        return from_arrow_schema(schema)
    except (TypeError, ValueError) as exc:
        raise BadInput(f"the input's schema cannot be read by Spark: {exc}") from exc


def text_problem_column(text: Any, max_chars: int) -> Any:
    """``batch.table.text_problem`` as a Spark SQL expression: evaluated in the JVM, so the
    texts cross to Python once (to the model), not twice."""
    from pyspark.sql import functions as F

    return (
        F.when(text.isNull(), F.lit(NULL_TEXT))
        .when(text.rlike(BLANK_PATTERN), F.lit(EMPTY_TEXT))
        .when(F.length(text) > max_chars, F.lit(too_long(max_chars)))
        .when(F.instr(text, "\u0000") > 0, F.lit(NUL_TEXT))
    )


def score_spark(
    source: Input,
    output: Path,
    model: JobModel,
    *,
    text_column: str,
    max_text_chars: int,
    master: str,
) -> Summary:
    import mlflow.pyfunc
    from pyspark.sql import functions as F

    summary = Summary(output=output)
    partial = partial_path(output)
    if partial.exists():
        shutil.rmtree(partial) if partial.is_dir() else partial.unlink()
        summary.started_clean = True
        print(
            f"found {partial}, the incomplete output of an earlier run: removed it, starting clean",
            file=sys.stderr,
        )
    layout = output_layout(source.dataset.schema, model.classes)
    started = time.perf_counter()
    schema = spark_schema(source.dataset.schema)  # before Spark starts: bad input stops early
    spark = spark_session(master)
    paths = [str(f.resolve()) for f in source.files]
    if source.format == "parquet":
        # The schema open_input unified from the footers: Spark need not infer it again.
        frame = spark.read.schema(schema).parquet(*paths)
    else:  # every column as text; quotes doubled inside quoted fields, as pandas writes them
        frame = (
            spark.read.option("header", "true")
            .option("multiLine", "true")
            .option("escape", '"')
            .csv(paths)
        )
    for name, renamed in layout.renamed.items():
        frame = frame.withColumnRenamed(name, renamed)
    text = F.col(layout.renamed.get(text_column, text_column))

    result_type = ", ".join(
        ["label string", "confidence double", *(f"prob_{c} double" for c in model.classes)]
    )
    predict = mlflow.pyfunc.spark_udf(
        spark, model.ref.load_uri, result_type=result_type, env_manager="local"
    )
    frame = frame.withColumn("error", text_problem_column(text, max_text_chars))
    frame = frame.withColumn(
        "_prediction", F.when(F.col("error").isNull(), predict(F.struct(text.alias("text"))))
    )
    ref = model.ref
    inputs = layout.schema.names[: len(source.dataset.schema)]
    predicted = ["label", "confidence", *(f"prob_{c}" for c in model.classes)]
    scored = frame.select(
        *[F.col(name) for name in inputs],
        *[F.col(f"_prediction.{name}").alias(name) for name in predicted],
        F.lit(ref.name).cast("string").alias("model_name"),
        F.lit(ref.version).cast("string").alias("model_version"),
        F.lit(ref.run_id).cast("string").alias("model_run_id"),
        F.col("error"),
    )
    try:
        scored.write.mode("overwrite").parquet(str(partial.resolve()))
        # Counted from the written files: Spark skips hidden folders such as this one on read.
        for written in ds.dataset(partial, format="parquet").to_batches(columns=["label", "error"]):
            count_batch(written, summary)
        if output.is_dir():
            shutil.rmtree(output)
        elif output.exists():
            output.unlink()
        partial.rename(output)
    except BaseException:
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)
        raise
    summary.seconds = time.perf_counter() - started
    return summary
