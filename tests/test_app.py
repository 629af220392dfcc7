"""The app starts on loopback, serves its page, answers a model-info request, and shuts down."""

import socket
import urllib.request

import pytest

from workbench.server import build


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served_app(tiny_folders):
    app = build(str(tiny_folders["llama"]))
    port = _free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield app, port, str(tiny_folders["llama"])
    app.close()


def test_binds_loopback_and_serves_page(served_app):
    app, port, _ = served_app
    assert app.server_name == "127.0.0.1"
    html = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10).read().decode()
    assert "<html" in html.lower()


def test_model_info_through_client(served_app):
    from gradio_client import Client

    _, port, folder = served_app
    client = Client(f"http://127.0.0.1:{port}/", verbose=False)
    card = client.predict(folder, api_name="/model_info")
    assert "2 layers, 4 heads" in card and "LlamaForCausalLM" in card


def test_bad_spec_is_a_message_not_a_trace(served_app):
    from gradio_client import Client

    _, port, _ = served_app
    client = Client(f"http://127.0.0.1:{port}/", verbose=False)
    with pytest.raises(Exception) as info:
        client.predict("./no/such/model", api_name="/model_info")
    assert "does not exist" in str(info.value)
    assert "Traceback" not in str(info.value)


def test_app_py_defaults_to_loopback():
    import app as app_module

    seen = {}

    def fake_launch(model, host, port, preload):
        seen.update(model=model, host=host, port=port)

    import workbench.server

    original = workbench.server.launch
    workbench.server.launch = fake_launch
    try:
        app_module.main([])
    finally:
        workbench.server.launch = original
    assert seen == {"model": "gemma-3-270m", "host": "127.0.0.1", "port": 7860}


def test_cli_info(tiny_folders, capsys):
    from workbench.cli import main

    assert main(["info", str(tiny_folders["qwen2"]), "--json"]) == 0
    assert '"n_layers": 2' in capsys.readouterr().out
    assert main(["info", "./missing/folder"]) == 2


def _launched(monkeypatch, argv):
    import app as app_module
    import workbench.server

    seen = {}
    monkeypatch.setattr(workbench.server, "launch",
                        lambda model, host, port, preload: seen.update(model=model, host=host, port=port, preload=preload))
    assert app_module.main(argv) == 0
    return seen


def test_app_py_is_workbench_app(monkeypatch, capsys):
    """One definition of the flags and their environment defaults: app.py only forwards to it."""
    import app as app_module
    from workbench.cli import main

    helps = []
    for run in (lambda: app_module.main(["--help"]), lambda: main(["app", "--help"])):
        with pytest.raises(SystemExit):
            run()
        helps.append(capsys.readouterr().out)
    assert helps[0] == helps[1] and all(flag in helps[0] for flag in ("--model", "--host", "--port", "--no-preload"))

    monkeypatch.setenv("WORKBENCH_MODEL", "some/folder")
    monkeypatch.setenv("WORKBENCH_PORT", "9999")
    assert _launched(monkeypatch, ["--no-preload"]) == {"model": "some/folder", "host": "127.0.0.1", "port": 9999,
                                                          "preload": False}
    assert _launched(monkeypatch, ["--port", "7000", "--host", "0.0.0.0"])["port"] == 7000


def test_space_environment_binds_all_addresses_in_demo_mode():
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if k not in ("WORKBENCH_HOST", "WORKBENCH_DEMO")}
    out = subprocess.run([sys.executable, "-c", "import app, os; print(os.environ['WORKBENCH_HOST'], os.environ['WORKBENCH_DEMO'])"],
                         env={**env, "SPACE_ID": "user/space"}, cwd=Path(__file__).resolve().parent.parent,
                         capture_output=True, text=True, check=True).stdout
    assert out.split() == ["0.0.0.0", "1"]
