"""bert2bert-torch: two-stage bert2BERT pre-training of grown checkpoints with PyTorch.

Reads the schedule the Rust side writes (``bert2bert_schedule.json``) and trains a Hugging Face
folder with it on one process or many (DDP). See docs/distributed.md in the repository.
"""

from .families import SubModelLM, adapter_for
from .schedule import SCHEDULE_FILE, Schedule, ScheduleError, read, sample_submodel
from .trainer import StepResult, TwoStageTrainer, check_model

__all__ = [
    "SCHEDULE_FILE",
    "Schedule",
    "ScheduleError",
    "StepResult",
    "SubModelLM",
    "TwoStageTrainer",
    "adapter_for",
    "check_model",
    "read",
    "sample_submodel",
]
__version__ = "0.1.0"
