"""Add ``saved_input_bytes``/``saved_output_bytes`` to profiles measured before those fields.

Run: ``.venv/bin/python benchmarks/add_saved_fields.py PROFILE.json [...]`` (the bundled ones:
``ddgsim/scenarios/profiles/*.json``).

The fields are a count, not a timing: one untimed forward of the model at the profile's batch
under saved-tensor hooks (:func:`ddgsim.profile.measure.saved_rows`, what ``profile`` runs), on
this machine's CPU. The file is rewritten (atomically) only if every unit's ``activation_bytes``
comes out as recorded — the same model and batch — and its timings are left as they were; the
profile's ``meta`` says what was added, when and how.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ddgsim.fileio import write_json_atomic  # noqa: E402
from ddgsim.models.registry import build_model, get_spec  # noqa: E402
from ddgsim.profile.measure import saved_rows  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("profiles", nargs="+", type=Path)
    args = ap.parse_args()
    for path in args.profiles:
        data = json.loads(path.read_text())
        spec = get_spec(data["model"])
        rows = saved_rows(build_model(spec), spec.io, int(data["batch_size"]))
        units = data["units"]
        if len(rows) != len(units):
            sys.exit(f"{path}: {len(rows)} units now, {len(units)} in the file")
        bad = [(u["name"], u["activation_bytes"], a) for u, (a, _, _) in zip(units, rows, strict=True)
               if u["activation_bytes"] != a]
        if bad:
            sys.exit(f"{path}: activation_bytes differ (unit, file, now): {bad[:3]}")
        for u, (_, s_in, s_out) in zip(units, rows, strict=True):
            u["saved_input_bytes"], u["saved_output_bytes"] = s_in, s_out
        data.setdefault("meta", {})["saved_fields_added"] = (
            f"{datetime.date.today().isoformat()}: saved_input_bytes/saved_output_bytes counted by "
            "benchmarks/add_saved_fields.py (one untimed forward at this batch; activation_bytes matched)")
        write_json_atomic(path, data)
        print(f"{path}: {len(units)} units; shared boundary bytes "
              f"{sum(min(a[2], b[1]) for a, b in itertools.pairwise(rows)) / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
