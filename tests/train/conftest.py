import sys
from pathlib import Path

# Let the training tests import `train_toy` (the shared toy problem) and `train_toy_run`.
sys.path.insert(0, str(Path(__file__).resolve().parent))
