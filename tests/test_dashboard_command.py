"""`pqx dashboard`: the Voila command line it builds, and its one-line errors (serving is tested
in tests/browser/test_voila.py)."""
import sys

from explorer import cli
from explorer.commands.dashboard import TOUR, voila_command


def test_voila_serves_the_tour_without_code_progressively_on_the_chosen_port():
    cmd = voila_command(TOUR, 9123)
    assert cmd[:3] == [sys.executable, "-m", "voila"] and cmd[3] == str(TOUR)
    for flag in ("--port=9123", "--Voila.ip=127.0.0.1", "--strip_sources=True", "--progressive_rendering=True",
                 "--no-browser"):
        assert flag in cmd
    assert "--no-browser" not in voila_command(TOUR, 9123, browser=True)
    assert TOUR.is_file()


def test_a_missing_notebook_is_one_line_and_exit_code_2(capsys, tmp_path):
    assert cli.main(["dashboard", "--notebook", str(tmp_path / "nope.ipynb")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err


def test_the_library_stays_free_of_ui_imports():
    import subprocess
    code = ("import sys, explorer, explorer.cli, explorer.commands.dashboard, explorer.methods as m; m.available(); "
            "bad = [x for x in ('ipywidgets', 'plotly', 'IPython', 'jupyter_server') if x in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
