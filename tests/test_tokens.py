"""Token inputs and transformers: the input declaration, gpt-mini's units, the text data set,
the token loss, and one-line errors for models the analysis cannot handle."""

from __future__ import annotations

import math
import sys
import zlib
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ddgsim.cli import main
from ddgsim.errors import UserError
from ddgsim.execute import text
from ddgsim.execute.data import load_data
from ddgsim.models.io import ModelIO, token_loss
from ddgsim.models.registry import build_model, get_spec
from ddgsim.profile.units import build_stages, split_units

HERE = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def _user_models_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(HERE))


# -- the declaration -----------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, match", [
    ({"input_shape": (8,), "input_dtype": "int64"}, "vocabulary"),
    ({"input_shape": (8,), "vocab": 5}, "only meaningful"),
    ({"input_shape": (8,), "input_dtype": "int8", "vocab": 5}, "input dtype"),
    ({"input_shape": (0,)}, "positive"),
    ({"input_shape": (8,), "target": "pixel"}, "target"),
    ({"input_shape": (8,), "num_classes": 0}, "classes"),
])
def test_bad_declarations_are_user_errors(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(UserError, match=match):
        ModelIO(**kwargs)  # type: ignore[arg-type]


def test_token_examples_and_labels() -> None:
    io = ModelIO(input_shape=(12,), input_dtype="int64", vocab=7, target="token", num_classes=7)
    g = torch.Generator().manual_seed(0)
    x, y = io.example_input(5, g), io.example_labels(5, g)
    assert x.dtype == torch.int64 and x.shape == (5, 12) and int(x.min()) >= 0 and int(x.max()) < 7
    assert y.shape == (5, 12) and int(y.max()) < 7
    assert ModelIO(input_shape=(3, 2)).example_input(4).dtype == torch.float32
    assert ModelIO(input_shape=(3, 2)).label_shape(4) == (4,)


def test_token_loss_is_the_mean_over_every_token() -> None:
    g = torch.Generator().manual_seed(1)
    out, y = torch.randn(3, 5, 11, generator=g), torch.randint(0, 11, (3, 5), generator=g)
    per_token = [float(torch.nn.functional.cross_entropy(out[b, t][None], y[b, t][None]))
                 for b in range(3) for t in range(5)]
    assert math.isclose(float(token_loss(out, y)), sum(per_token) / 15, rel_tol=1e-5)
    io = ModelIO(input_shape=(5,), input_dtype="int64", vocab=11, target="token", num_classes=11)
    hits, nats, count = io.score(out, y)
    assert count == 15 and math.isclose(nats / count, sum(per_token) / 15, rel_tol=1e-5)
    assert hits == int((out.argmax(-1) == y).sum())


def test_user_model_declares_tokens_by_attributes() -> None:
    spec = get_spec("tinygpt_models:tinygpt")
    assert spec.io == ModelIO(input_shape=(16,), input_dtype="int64", vocab=256, target="token", num_classes=256)
    assert get_spec("tinygpt_models:undeclared").io == ModelIO(input_shape=(3, 32, 32))


# -- gpt-mini and user transformers: units ----------------------------------------------------------
@settings(max_examples=6, deadline=None)
@given(depth=st.integers(1, 3), width=st.sampled_from([32, 64]), context=st.integers(2, 12))
def test_gpt_units_are_whole_blocks_and_compose_to_the_model(depth: int, width: int, context: int) -> None:
    spec = get_spec(f"gpt-L{depth}-W{width}-T{context}")
    model = build_model(spec).eval()
    units = split_units(model, spec.io)
    assert [u.name for u in units] == ["embed", *(f"blocks.{i}" for i in range(depth)), "ln_f", "head"]
    x = spec.io.example_input(3, torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = model(x)
        h = x
        for stage in build_stages(units, list(range(1, len(units)))):
            h = stage(h)
            if h is not ref:
                assert h.is_floating_point()  # no token ids cross a cut
    assert torch.equal(h, ref) and ref.shape == (3, context, 256)


def test_user_transformer_units_and_causality() -> None:
    spec = get_spec("tinygpt_models:tinygpt")
    model = build_model(spec).eval()
    names = [u.name for u in split_units(model, spec.io)]
    assert names[-4:] == ["blocks.0", "blocks.1", "ln_f", "head"]  # before them: tok, the position add
    x = spec.io.example_input(2)
    y = x.clone()
    y[:, -1] = (y[:, -1] + 1) % 256  # changing the last token changes no earlier prediction
    with torch.no_grad():
        assert torch.allclose(model(x)[:, :-1], model(y)[:, :-1], atol=1e-6)


def test_a_cut_that_would_send_token_ids_is_dropped() -> None:
    from tinygpt_models import Quantizer

    units = split_units(Quantizer(), ModelIO(input_shape=(4,)))
    with torch.no_grad():
        h = torch.randn(2, 4)
        for u in units[:-1]:
            h = u.module(h)
            assert h.is_floating_point(), u.name
    assert len(units) >= 2


# -- errors --------------------------------------------------------------------------------------
@pytest.mark.parametrize("factory, words", [
    ("tinygpt_models:branchy", ["cannot trace model Branchy", "must not branch"]),
    ("tinygpt_models:two_inputs", ["takes 2 inputs", "wrap it"]),
    ("tinygpt_models:dict_output", ["returns a dict", "logits"]),
    ("tinygpt_models:undeclared", ["fails on input shape (3, 32, 32)", "--vocab"]),
])
def test_models_the_analysis_cannot_handle_get_one_line(factory: str, words: list[str],
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["units", factory]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    for w in words:
        assert w in err, err


def test_units_cli_overrides_the_declaration(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["units", "tinygpt_models:undeclared", "--input-shape", "16", "--vocab", "256"]) == 0
    assert "16 ids<256" in capsys.readouterr().out
    assert main(["units", "gpt-mini", "--vocab", "0"]) == 2
    assert "--vocab must be > 0" in capsys.readouterr().err


# -- the text data set -----------------------------------------------------------------------------
def _fake_stdlib(root: Path) -> dict[str, bytes]:
    files = {f"mod{i}.py": f"# module {i}\nx = {i} * 2\n".encode() * (i + 3) for i in range(40)}
    for name, data in files.items():
        (root / name).write_bytes(data)
    (root / "notes.txt").write_bytes(b"not python")
    return files


def test_corpus_split_is_by_file_name_and_deterministic(tmp_path: Path) -> None:
    files = _fake_stdlib(tmp_path)
    c = text.corpus(tmp_path)
    held = sorted(n for n in files if zlib.crc32(n.encode()) % 10 == 0)
    kept = sorted(n for n in files if n not in held)
    assert held and kept
    assert c.validation == b"\n\n".join(files[n] for n in held)
    assert c.train == b"\n\n".join(files[n] for n in kept)
    assert c == text.corpus(tmp_path) and "sha256" in c.source


def test_windows_are_next_byte_pairs() -> None:
    stream = bytes(range(200)) * 3
    x, y = text.windows(stream, 16)
    assert x.shape == y.shape == ((len(stream) - 1) // 16, 16) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert list(x[1, :3]) == [16, 17, 18] and int(y[0, -1]) == 16
    xs, _ = text.windows(stream, 16, 5)
    assert xs.shape == (5, 16) and torch.equal(xs[0], x[0]) and torch.equal(xs[-1], x[-1])
    with pytest.raises(UserError, match="too few"):
        text.windows(b"abc", 16)


def test_corpus_without_sources_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"no \*\.py"):
        text.corpus(tmp_path)


def test_text_data_set_from_this_interpreter() -> None:
    io = get_spec("gpt-L1-W32-T32").io
    ds = load_data("text", io=io, batch_size=8)
    assert ds.train_x.shape[1:] == (32,) and ds.test_x.shape == (text.TEST_WINDOWS, 32)
    assert len(ds.train_x) > 10_000 and f"Python {sys.version.split()[0]}" in ds.source
    x, y = ds.batch(3, 8)
    assert x.dtype == y.dtype == torch.int64 and torch.equal(x[:, 1:], y[:, :-1])
    with pytest.raises(UserError, match="next-byte prediction"):
        load_data("text", io=get_spec("mlp").io, batch_size=8)
    with pytest.raises(UserError, match="vocabulary"):
        load_data("text", io=ModelIO(input_shape=(32,), input_dtype="int64", vocab=100, target="token",
                                     num_classes=100), batch_size=8)


def test_profile_of_token_inputs_records_them_and_keys_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from ddgsim.profile import store
    from ddgsim.profile.format import load

    monkeypatch.setenv("DDGSIM_CACHE_DIR", str(tmp_path))
    args = ["profile", "tinygpt_models:undeclared", "--batch-size", "4", "--reps", "1", "--no-progress"]
    assert main([*args, "--input-shape", "16", "--vocab", "256"]) == 0
    (cached,) = tmp_path.glob("*.json")
    assert cached.name.startswith("tinygpt_models_undeclared-b4-cpu-t1-i16-v256-")
    prof = load(cached)
    assert (prof.input_shape, prof.input_dtype, prof.vocab) == ([16], "int64", 256)
    assert prof.units[-1].output_shape == [4, 16, 256]
    assert main([*args, "--input-shape", "16", "--vocab", "100"]) == 0  # another vocabulary: measured anew
    assert main([*args, "--input-shape", "16", "--vocab", "300"]) == 2  # ids beyond the embedding
    assert "index out of range" in capsys.readouterr().err
    assert len(list(tmp_path.glob("*.json"))) == 2
    assert main([*args, "--input-shape", "16"]) == 2  # float ids into an embedding
    assert "fails on input shape (16,)" in capsys.readouterr().err
    assert store.profile_name("gpt-mini", 8, vocab=300) == "gpt-mini-b8-cpu-t1-v300.json"
    assert store.Inputs.of("gpt-mini", (64,), 256) == store.Inputs()  # the model's own declaration: no suffix


def test_wrong_inputs_are_one_line_before_anything_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ddgsim.plan.format import Plan

    assert main(["units", "gpt-mini", "--input-shape", "3,32,32"]) == 2  # fx's own trace print is swallowed
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "fails on input shape (3, 32, 32)" in err
    plan = tmp_path / "p.json"
    Plan.for_split(model="gpt-L1-W32-T8", split=[2], num_units=4, schedule="ddg", batch_size=4).save(plan)
    assert main(["execute", str(plan), "--steps", "2", "--data", "digits", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--data digits has float samples of shape (1, 8, 8)" in err
