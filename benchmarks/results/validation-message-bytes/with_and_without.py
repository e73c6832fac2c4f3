"""Each run of a validation.csv predicted again with and without the CPU of its messages' bytes.

    python benchmarks/results/validation-message-bytes/with_and_without.py DIR/validation.csv PROFILE.json SCENARIO.toml

Now ``benchmarks/repredict.py ... --without message-curve``, which this runs.
"""
import runpy
import sys
from pathlib import Path

sys.argv += ["--without", "message-curve"]
runpy.run_path(str(Path(__file__).resolve().parents[2] / "repredict.py"), run_name="__main__")
