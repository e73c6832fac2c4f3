"""Bundled data: hardware scenarios (``hardware/*.toml``) and profiles (``profiles/*.json``)."""
