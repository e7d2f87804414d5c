import sys
from pathlib import Path

# Let the training tests `import toy` (the shared toy problem) and `import run_toy`.
sys.path.insert(0, str(Path(__file__).resolve().parent))
