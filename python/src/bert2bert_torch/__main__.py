"""``python -m bert2bert_torch`` (also under ``torchrun -m``)."""

from .cli import main

main()
