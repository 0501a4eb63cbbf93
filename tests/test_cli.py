import json
import subprocess
import sys

from rag import cli


def test_help_does_not_import_heavy_libraries():
    code = "import sys, rag.cli; rag.cli.build_parser().format_help(); print(sorted(m for m in ('torch','transformers','faiss','gradio','llama_cpp','sentence_transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def run(monkeypatch, capsys, assistant, *argv):
    code = cli.main(list(argv), assistant=assistant)
    out, err = capsys.readouterr()
    return code, out, err


def test_search_json(monkeypatch, capsys, assistant):
    code, out, _ = run(monkeypatch, capsys, assistant, "search", "梯度爆炸怎么办", "--json", "-k", "2")
    assert code == 0
    obj = json.loads(out)
    assert obj["results"] and {"text", "source", "score"} <= set(obj["results"][0])
    assert len(obj["results"]) <= 2


def test_search_file_is_jsonl_and_reports_bad_lines(monkeypatch, capsys, assistant, tmp_path):
    f = tmp_path / "q.txt"
    f.write_text("梯度爆炸\n\n学习率太大\n" + "长" * 5000 + "\n", encoding="utf-8")
    code, out, _ = run(monkeypatch, capsys, assistant, "search", "--file", str(f))
    lines = [json.loads(x) for x in out.splitlines()]
    assert code == 0 and len(lines) == 3
    assert "results" in lines[0] and "error" in lines[2]


def test_ask_prints_sources(monkeypatch, capsys, assistant):
    code, out, err = run(monkeypatch, capsys, assistant, "ask", "测试的时候要用 Dropout 吗?")
    assert code == 0 and "Sources:" in out and "notes.md" in out


def test_ask_json(monkeypatch, capsys, assistant):
    code, out, _ = run(monkeypatch, capsys, assistant, "ask", "测试的时候要用 Dropout 吗?", "--json")
    obj = json.loads(out)
    assert obj["citations"][0]["source"] == "notes.md" and obj["answer"]


def test_errors_are_one_line_and_nonzero(monkeypatch, capsys, assistant):
    code, out, err = run(monkeypatch, capsys, assistant, "ask", "   ")
    assert code == 2 and err.strip().startswith("error: empty question") and len(err.strip().splitlines()) == 1


def test_missing_corpus_dir(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = cli.main(["index", "--corpus", str(tmp_path / "nope"), "--index-dir", str(tmp_path / "idx"),
                     "--embedder", "fake"])
    assert code != 0 and "not found" in capsys.readouterr().err


def test_index_command_reports_and_is_incremental(monkeypatch, capsys, assistant):
    code, out, _ = run(monkeypatch, capsys, assistant, "index")
    assert code == 0 and "2 added" in out
    code, out, _ = run(monkeypatch, capsys, assistant, "index")
    assert "up to date" in out
