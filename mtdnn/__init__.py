"""mtdnn: multi-task fine-tuning of a shared transformer encoder (Liu et al., ACL 2019)."""

from mtdnn.config import Config, load_config
from mtdnn.errors import MTDNNError
from mtdnn.model import MTDNNModel
from mtdnn.tasks import TaskSpec

__all__ = ["Config", "MTDNNError", "MTDNNModel", "TaskSpec", "load_config"]
__version__ = "0.1.0"
