"""mpstudy: a reproducible study of compressing pre-trained transformer language models.

The public entry points (see DESIGN "Contract"):

>>> model, tokenizer = load_model("tiny-bert", task="sst2")          # doctest: +SKIP
>>> report = compress(model, "svd", targets="all-linear", keep=0.5)   # doctest: +SKIP
>>> save_compressed(model, "out/")                                   # doctest: +SKIP
"""
from .models import load_model
from .accounting import count_parameters
from .surgery import compress, load_compressed, save_compressed
from .export import merge
from .tasks import load_task
from .train import TrainConfig, evaluate, train

__version__ = "0.1.0"
__all__ = ["load_model", "load_task", "compress", "save_compressed", "load_compressed", "merge", "count_parameters",
           "train", "evaluate", "TrainConfig"]
