"""MLflow models-from-code entry point: logged as the model's code, so no object is pickled."""

from mlflow.models import set_model

from emonext.mlflow_pyfunc import EmotionPyfunc

set_model(EmotionPyfunc())
