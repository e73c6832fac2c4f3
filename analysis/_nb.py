"""Shared plumbing of the analysis notebooks: options from argv or environment, saving figures.

Every notebook runs three ways: ``python analysis/X.py --out DIR [...]``, as a
notebook (``jupytext --to ipynb``; options then come from ``DDGSIM_<OPTION>``
environment variables), or imported by the tests. Figures are written as
self-contained plotly HTML and, where Chromium is present, as PNG through kaleido.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def options(doc: str | None, spec: Sequence[tuple[str, Any, str]]) -> argparse.Namespace:
    """``spec`` = (option name without dashes, default, help); ``--out`` and ``--png`` are always there.

    In a notebook kernel argv is ignored: each option reads ``DDGSIM_<NAME>`` (upper case,
    dashes as underscores) or keeps its default.
    """
    p = argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0] if doc else None)
    p.add_argument("--out", default="analysis/out", help="output folder (default analysis/out)")
    p.add_argument("--png", choices=("auto", "no"), default="auto",
                   help="also export PNG via kaleido when Chromium is present (default auto)")
    p.add_argument("--png-dir", default="", help="folder for the PNGs (default: --out), e.g. docs/figures")
    for name, default, help_text in spec:
        p.add_argument(f"--{name}", default=default, type=type(default) if default is not None else str,
                       help=f"{help_text} (default {default})")
    in_kernel = "ipykernel" in sys.modules
    args = p.parse_args([] if in_kernel else sys.argv[1:])
    for action in p._actions:
        env = "DDGSIM_" + action.dest.upper()
        if action.dest != "help" and env in os.environ:
            setattr(args, action.dest, action.type(os.environ[env]) if action.type else os.environ[env])
    Path(args.out).mkdir(parents=True, exist_ok=True)
    return args


def save(figs: Any, out: str | Path, name: str, title: str, png: str = "auto", intro: str = "",
         png_dir: str | Path = "") -> Path:
    """Write ``OUT/name.html`` (all figures) and, when possible, ``name.png`` (first) / ``name-N.png``
    in ``png_dir`` (default ``out``)."""
    from ddgsim.compare.figures import export_pngs, write_html

    figs = list(figs) if isinstance(figs, (list, tuple)) else [figs]
    path = write_html(Path(out) / f"{name}.html", figs, title, intro)
    print(f"wrote {path}")
    if png != "no":
        items = [(fig, Path(png_dir or out) / (f"{name}.png" if i == 0 else f"{name}-{i + 1}.png"))
                 for i, fig in enumerate(figs)]
        if export_pngs(items, width=int(figs[0].layout.width or 1100)):
            print("wrote " + ", ".join(str(p) for _, p in items))
    return path


def csv_list(text: str) -> list[str]:
    return [x.strip() for x in str(text).split(",") if x.strip()]
