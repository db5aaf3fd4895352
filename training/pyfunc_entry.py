"""The model-from-code file MLflow logs and executes to build the pyfunc model.

MLflow runs this file when the model is loaded (``mlflow.models.set_model``), which is why it
does its one piece of work at import: it is never imported by EmotiTrack itself.
"""

from mlflow.models import set_model

from training.model import SentimentModel

set_model(SentimentModel())
