"""Settings validate themselves; models (fakes included) are chosen by spec string; the real CLI runs on fakes."""

import os
import shutil
import subprocess
import sys
from dataclasses import replace

import pytest

from rag import cli
from rag.config import Settings, help_for
from rag.errors import SettingsError


@pytest.mark.parametrize("var, value, words", [
    ("RAG_TOP_K", "five", "RAG_TOP_K='five': expected a whole number"),
    ("RAG_TOP_K", "0", "RAG_TOP_K=0: must be at least 1"),
    ("RAG_THREADS", "-2", "RAG_THREADS=-2: must be at least 0"),
    ("RAG_BACKEND", "gpu", "RAG_BACKEND='gpu': expected one of auto, llama.cpp, transformers"),
    ("RAG_ANSWER_STYLE", "short", "expected one of evidence, passages"),
    ("RAG_INDEX_DIR", "  ", "RAG_INDEX_DIR is empty"),
])
def test_bad_environment_values_are_one_line_errors_naming_the_variable(monkeypatch, capsys, var, value, words):
    monkeypatch.setenv(var, value)
    code = cli.main(["search", "dropout", "--embedder", "fake"])
    err = capsys.readouterr().err.strip()
    assert code == SettingsError.exit_code and err.startswith("error: ") and words in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("k", ["0", "-3", "21"])
def test_out_of_range_k_is_refused(capsys, k):
    code = cli.main(["search", "dropout", "-k", k, "--embedder", "fake"])
    err = capsys.readouterr().err
    assert code == SettingsError.exit_code and "-k / RAG_TOP_K" in err


def test_settings_check_every_source_and_their_relations():
    with pytest.raises(SettingsError, match="must be at least 1"):
        Settings(top_k=0)
    with pytest.raises(SettingsError, match="chunk_overlap"):
        Settings(chunk_size=100, chunk_overlap=100)
    with pytest.raises(SettingsError, match="expected a whole number"):
        Settings(top_k="5")
    assert replace(Settings(), top_k=7).top_k == 7


def test_flag_help_comes_from_the_settings():
    help_text = " ".join(cli.build_parser()._subparsers._group_actions[0].choices["ask"].format_help().split())
    assert help_for("top_k") in help_text and "RAG_TOP_K" in help_text
    assert " ".join(help_for("answer_style").split()) in help_text


@pytest.mark.parametrize("spec, words", [("fake:dim=big", "dim must be a whole number"),
                                         ("fake:color=red", "unknown option"), ("fake:oops", "key=value")])
def test_bad_fake_embedder_specs_are_settings_errors(spec, words):
    from rag.embedders import load_embedder

    with pytest.raises(SettingsError, match=words):
        load_embedder(spec, cache_dir=None)


def test_fake_specs_pick_the_test_doubles(tmp_path):
    from rag.embedders import load_embedder
    from rag.fakes import FakeGenerator, ScriptedGenerator
    from rag.generators import load_generator

    assert load_embedder("fake:dim=32", tmp_path).dim == 32
    g = load_generator("fake:reply=答案, 带逗号 [1]。", tmp_path)
    assert type(g) is FakeGenerator and "".join(g.stream([{"role": "user", "content": "x"}])) == "答案, 带逗号 [1]。"
    s = load_generator("fake:delay=0,rewrite=改写", tmp_path)
    assert isinstance(s, ScriptedGenerator) and s.rewrite == "改写" and s.model_id == "fake:delay=0,rewrite=改写"


def test_streamed_answer_never_shows_a_passage_number_that_was_not_retrieved(settings, capsys):
    from rag.assistant import Assistant

    a = Assistant.from_settings(replace(settings, generator="fake:reply=Dropout 只在训练时使用 [9]。测试时关闭。"))
    assert cli.main(["ask", "测试的时候要用 Dropout 吗?"], assistant=a) == 0
    out = capsys.readouterr().out
    assert "[9]" not in out.split("(removed")[0] and "Dropout 只在训练时使用 [1]" in out


def test_real_cli_answers_on_fakes_with_no_model_packages(tmp_path, sample_corpus):
    """`RAG_EMBEDDER=fake RAG_GENERATOR=fake rag ask …`: the whole CLI path (index build included) in seconds."""
    sample_corpus(tmp_path / "corpus")
    env = {**os.environ, "RAG_EMBEDDER": "fake", "RAG_GENERATOR": "fake", "XDG_CACHE_HOME": str(tmp_path / "cache")}
    exe = shutil.which("rag") or None
    cmd = [exe] if exe else [sys.executable, "-m", "rag.cli"]
    p = subprocess.run(cmd + ["ask", "测试的时候要用 Dropout 吗?"], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "Sources:" in p.stdout and "notes.md" in p.stdout and (tmp_path / "index" / "CURRENT").exists()


@pytest.mark.parametrize("env, flags, expected", [
    ({}, (None, None), ("127.0.0.1", 7860)),
    ({"GRADIO_SERVER_PORT": "7999", "GRADIO_SERVER_NAME": "0.0.0.0"}, (None, None), ("0.0.0.0", 7999)),
    ({"GRADIO_SERVER_PORT": "7999"}, ("localhost", 8001), ("localhost", 8001)),
])
def test_app_honours_gradio_variables_when_no_flag_is_given(monkeypatch, env, flags, expected):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("app", Path(__file__).resolve().parent.parent / "app.py")
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    for var in ("GRADIO_SERVER_PORT", "GRADIO_SERVER_NAME"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    assert app.address(*flags) == expected
    monkeypatch.setenv("GRADIO_SERVER_PORT", "http")
    with pytest.raises(SettingsError, match="GRADIO_SERVER_PORT"):
        app.address(None, None)


@pytest.mark.parametrize("raw", ["http", "0", "70000"])
def test_a_bad_rag_port_is_a_one_line_error(monkeypatch, capsys, raw):
    monkeypatch.setenv("RAG_PORT", raw)
    code = cli.main(["serve", "--embedder", "fake", "--generator", "fake", "--corpus", "."])
    err = capsys.readouterr().err.strip()
    assert code == SettingsError.exit_code and "RAG_PORT" in err and len(err.splitlines()) == 1
