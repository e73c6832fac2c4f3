"""ddgsim-profile/1: round trip, errors that name the field, the store and its cache."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddgsim.errors import UserError
from ddgsim.profile import store as profile_store
from ddgsim.profile.format import FORMAT, Profile, UnitProfile, from_json, load

ROOT = Path(__file__).resolve().parents[1]

_ms = st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False)
_bytes = st.integers(min_value=0, max_value=2**40)
_names = st.text(min_size=1, max_size=12)

units = st.builds(
    UnitProfile, name=_names, forward_ms=_ms, backward_ms=_ms, output_bytes=_bytes,
    param_bytes=_bytes, activation_bytes=_bytes,
    output_shape=st.lists(st.integers(min_value=1, max_value=512), max_size=4),
)
profiles = st.builds(
    Profile, model=_names, batch_size=st.integers(min_value=1, max_value=4096),
    input_shape=st.lists(st.integers(min_value=1, max_value=512), min_size=1, max_size=4),
    device=st.sampled_from(["cpu", "cuda"]), threads=st.none() | st.integers(min_value=1, max_value=256),
    dtype=st.sampled_from(["float32", "float16", "bfloat16"]), units=st.lists(units, min_size=1, max_size=8),
    whole_model_ms=_ms,
    meta=st.dictionaries(st.text(max_size=8), st.text(max_size=8) | st.integers() | st.none(), max_size=3),
)


@settings(max_examples=60, deadline=None)
@given(profiles)
def test_round_trip(tmp_path_factory: pytest.TempPathFactory, prof: Profile) -> None:
    path = tmp_path_factory.mktemp("p") / "p.json"
    prof.save(path)
    assert load(path) == prof
    assert from_json(json.loads(json.dumps(prof.to_json()))) == prof


def _valid() -> dict[str, Any]:
    return {
        "format": FORMAT, "model": "m", "batch_size": 4, "input_shape": [1, 8, 8], "device": "cpu",
        "threads": 1, "dtype": "float32", "whole_model_ms": 2.0,
        "units": [{"name": "a", "forward_ms": 1.0, "backward_ms": 1.0, "output_bytes": 16,
                   "param_bytes": 0, "activation_bytes": 0}],
    }


TOP = ["format", "model", "batch_size", "input_shape", "device", "dtype", "units", "whole_model_ms"]
UNIT = ["name", "forward_ms", "backward_ms", "output_bytes", "param_bytes", "activation_bytes"]


@pytest.mark.parametrize("key", TOP)
def test_missing_or_wrong_top_level_field_is_named(key: str) -> None:
    data = _valid()
    del data[key]
    with pytest.raises(UserError, match=f"'{key}'"):
        from_json(data)
    data = _valid()
    data[key] = {"bad": True}
    with pytest.raises(UserError, match=f"'{key}'"):
        from_json(data)


@pytest.mark.parametrize(("key", "value"), [
    ("batch_size", 0), ("batch_size", 1.5), ("batch_size", True), ("input_shape", [3, 0]),
    ("threads", 0), ("threads", "1"), ("units", []), ("whole_model_ms", -1.0),
    ("whole_model_ms", float("nan")), ("format", "ddgsim-profile/2"),
])
def test_bad_top_level_values_are_named(key: str, value: Any) -> None:
    data = _valid()
    data[key] = value
    with pytest.raises(UserError, match=rf"field '{key}(\[\d+\])?'"):
        from_json(data)


@pytest.mark.parametrize("key", UNIT)
def test_bad_unit_fields_are_named(key: str) -> None:
    data = _valid()
    del data["units"][0][key]
    with pytest.raises(UserError, match=rf"field 'units\[0\]\.{key}' is missing"):
        from_json(data)
    data = _valid()
    data["units"][0][key] = None
    with pytest.raises(UserError, match=rf"field 'units\[0\]\.{key}'"):
        from_json(data)
    if key != "name":
        data["units"][0][key] = -1
        with pytest.raises(UserError, match=rf"field 'units\[0\]\.{key}'"):
            from_json(data)


def test_not_json_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match="not JSON"):
        load(bad)
    with pytest.raises(UserError, match="cannot read"):
        load(tmp_path / "missing.json")


def test_profile_name() -> None:
    assert profile_store.profile_name("resnet110", 128) == "resnet110-b128-cpu-t1.json"
    assert profile_store.profile_name("resnet56", 64, "cuda", None) == "resnet56-b64-cuda.json"
    assert profile_store.profile_name("pkg.mod:f", 8, "cpu", 2, (3, 64, 64)) == "pkg.mod_f-b8-cpu-t2-i3x64x64.json"


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """Cache in a temp dir; record every real measurement."""
    from ddgsim.profile import measure as profiler

    monkeypatch.setenv("DDGSIM_CACHE_DIR", str(tmp_path / "cache"))
    calls: list[str] = []
    real = profiler.profile_model

    def wrapped(*args: Any, **kw: Any) -> Profile:
        calls.append(kw["name"])
        return real(*args, **kw)

    monkeypatch.setattr(profiler, "profile_model", wrapped)
    return calls


def test_cache_is_hit_the_second_time(counted: list[str], tmp_path: Path) -> None:
    prof, path, source = profile_store.get_profile("mlp", 4, reps=1, progress=False)
    assert source == "measured" and counted == ["mlp"]
    assert path is not None and path.parent == tmp_path / "cache" and path.is_file()
    assert re.fullmatch(r"mlp-b4-cpu-t1-[0-9a-f]{12}\.json", path.name)
    assert profile_store.find_profile("mlp", 4) == path
    again, path2, source2 = profile_store.get_profile("mlp", 4, reps=1, progress=False)
    assert (source2, path2) == ("cache", path) and counted == ["mlp"]
    assert again == prof
    assert prof.machine is not None and prof.machine_key == profile_store.here_key()
    assert prof.measurement == {"method": "in-situ", "clock": "wall", "reps": 1, "warmup": 2, "seed": 0,
                                "micro_batches": []}
    # cache=False always measures and writes nothing.
    _, none_path, src = profile_store.get_profile("mlp", 4, reps=1, progress=False, cache=False)
    assert (none_path, src) == (None, "measured") and len(counted) == 2
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [path.name]


CHANGES = [
    pytest.param({"threads": 2}, id="threads"),
    pytest.param({"reps": 2}, id="reps"),
    pytest.param({"clock": "thread"}, id="clock"),
    pytest.param({"method": "isolated"}, id="method"),
    pytest.param({"micro_batches": (2,)}, id="micro-batches"),
]


@pytest.mark.parametrize("change", CHANGES)
def test_the_cache_key_distinguishes_every_setting_that_changes_figures(
        change: dict[str, Any], counted: list[str], tmp_path: Path) -> None:
    base = {"reps": 1, "progress": False, "this_machine": True}
    _first, p1, _ = profile_store.get_profile("mlp", 4, **base)  # type: ignore[arg-type]
    _second, p2, source = profile_store.get_profile("mlp", 4, **{**base, **change})  # type: ignore[arg-type]
    assert source == "measured" and counted == ["mlp", "mlp"] and p1 != p2
    # ... and each request finds its own entry again, without measuring (a profile with more
    # micro-batch counts or more reps also answers a request for fewer).
    own = (p2, p1) if "micro_batches" in change or "reps" in change else (p1,)
    assert profile_store.get_profile("mlp", 4, **base)[1] in own  # type: ignore[arg-type]
    assert profile_store.get_profile("mlp", 4, **{**base, **change})[1:] == (p2, "cache")  # type: ignore[arg-type]
    assert len(counted) == 2


def test_a_profile_with_more_micro_batch_counts_answers_a_request_for_fewer(counted: list[str]) -> None:
    prof, path, _ = profile_store.get_profile("mlp", 4, reps=1, progress=False, micro_batches=(2, 4),
                                              this_machine=True)
    assert prof.micro_costs(2) is not None and prof.micro_costs(4) is not None and prof.micro_costs(3) is None
    assert profile_store.get_profile("mlp", 4, reps=1, progress=False, micro_batches=(4,),
                                     this_machine=True)[1:] == (path, "cache")
    assert profile_store.get_profile("mlp", 4, reps=1, progress=False, this_machine=True)[1:] == (path, "cache")
    assert counted == ["mlp"]


def _as_other_machine(path: Path, **fields: Any) -> Path:
    """Rewrite the profile at ``path`` as if measured on another machine (moved to a new cache name)."""
    data = json.loads(path.read_text())
    data["machine"].update(fields)
    other = path.with_name(path.name[:-len("0123456789ab.json")] + "000000000000.json")
    other.write_text(json.dumps(data))
    path.unlink()
    return other


@pytest.mark.parametrize("field", [
    {"cpu_model": "AMD EPYC 7B13"}, {"cpu_count": 64}, {"torch": "2.0.0"}, {"hugepages": None},
    {"torch_build": "cuda 12.1"}, {"cpu_flags_sha": "000000000000"},
], ids=lambda f: next(iter(f)))
def test_a_foreign_profile_is_never_reused_silently(field: dict[str, Any], counted: list[str]) -> None:
    from ddgsim.profile.machine import provenance_note

    _, path, _ = profile_store.get_profile("mlp", 4, reps=1, progress=False)
    assert path is not None
    other = _as_other_machine(path, **field)
    # Where this machine must be measured (profile, validate): measured again, not reused.
    mine, path2, source = profile_store.get_profile("mlp", 4, reps=1, progress=False, this_machine=True)
    assert source == "measured" and counted == ["mlp", "mlp"] and path2 != other
    assert provenance_note(mine, str(path2)) is None
    # Where a prediction will do (plan, simulate): this machine's own profile first ...
    assert profile_store.find_profile("mlp", 4) == path2
    # ... and a foreign one only with a note naming its machine.
    assert path2 is not None
    path2.unlink()
    found, where, _ = profile_store.get_profile("mlp", 4, reps=1, progress=False, this_machine=False)
    assert where == other and counted == ["mlp", "mlp"]
    note = provenance_note(found, str(where))
    assert note is not None and note.startswith("note: the figures describe ") and "not this machine" in note


def test_a_profile_without_a_fingerprint_is_foreign(tmp_path: Path) -> None:
    from ddgsim.profile.machine import provenance_note

    prof = Profile(model="m", batch_size=2, input_shape=[3], device="cpu", threads=1, dtype="float32",
                   units=[UnitProfile(name="u", forward_ms=1, backward_ms=1, output_bytes=0, param_bytes=0,
                                      activation_bytes=0)], whole_model_ms=2.0,
                   meta={"device_name": "Some CPU", "torch_version": "2.1"})
    note = provenance_note(prof, "/x/m.json")
    assert note is not None and "Some CPU (torch 2.1, no fingerprint recorded) (m.json)" in note


def test_a_cpu_profile_on_a_gpu_scenario_says_so() -> None:
    from ddgsim.predict.scenario import load_scenario
    from ddgsim.profile.machine import provenance_note

    path = profile_store.find_profile("resnet20", 128)
    assert path is not None
    prof = load(path)
    gpu = provenance_note(prof, str(path), load_scenario("pcie-4gpu"))
    assert gpu is not None and "a CPU profile on scenario 'pcie-4gpu' of GPUs" in gpu
    cpu = provenance_note(prof, str(path), load_scenario("cpu-2core"))
    assert cpu is None or "of GPUs" not in cpu


def test_malformed_cache_entry_is_remeasured(counted: list[str], tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "mlp-b2-cpu-t1.json").write_text("{broken")
    assert profile_store.find_profile("mlp", 2) is None
    _, path, source = profile_store.get_profile("mlp", 2, reps=1, progress=False)
    assert source == "measured" and counted == ["mlp"]
    assert path is not None and load(path).model == "mlp"


def test_input_shape_is_part_of_the_key(counted: list[str], tmp_path: Path) -> None:
    _, path, _ = profile_store.get_profile("mlp", 2, reps=1, progress=False, input_shape=(1, 8, 8))
    assert path is not None and path.name.startswith("mlp-b2-cpu-t1-") and "-i" not in path.name
    prof, path2, source = profile_store.get_profile("resnet20", 2, reps=1, progress=False, input_shape=(3, 8, 8))
    assert path2 is not None and path2.name.startswith("resnet20-b2-cpu-t1-i3x8x8-") and source == "measured"
    assert prof.input_shape == [3, 8, 8] and prof.units[0].output_shape == [2, 16, 8, 8]
    assert profile_store.find_profile("resnet20", 2, input_shape=(3, 8, 8)) == path2
    assert profile_store.find_profile("resnet20", 2) is None


BUNDLED = sorted((ROOT / "ddgsim" / "scenarios" / "profiles").glob("*.json"))
assert BUNDLED, "no bundled profiles found"


@pytest.mark.parametrize("path", BUNDLED, ids=[p.name for p in BUNDLED])
def test_bundled_profiles_are_valid_and_found(path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DDGSIM_CACHE_DIR", str(tmp_path))
    prof = load(path)
    assert path.name == profile_store.profile_name(prof.model, prof.batch_size, prof.device, prof.threads)
    assert profile_store.find_profile(prof.model, prof.batch_size, prof.device, prof.threads) == path
    got, where, source = profile_store.get_profile(prof.model, prof.batch_size, prof.device, prof.threads)
    assert (got, where, source) == (prof, path, "bundled")
    assert prof.machine is not None and prof.measurement is not None and prof.measurement["method"] == "in-situ"
    for key in ("command", "device_name", "torch_version", "threads", "reps", "date", "sum_over_whole"):
        assert key in prof.meta
    if prof.model == "resnet110":
        assert prof.num_units == 60


def test_store_and_registry_do_not_import_torch() -> None:
    code = (
        "import sys, argparse\n"
        "import ddgsim.profile.store as s, ddgsim.models.registry as r\n"
        "s.find_profile('resnet110', 128); r.get_spec('resnet110')\n"
        "from ddgsim.commands import models, units, profile\n"
        "sub = argparse.ArgumentParser().add_subparsers()\n"
        "for m in (models, units, profile): m.add_parser(sub)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
