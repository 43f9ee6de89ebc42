import subprocess
import sys

from pipeline.cli import build_parser, main
from pipeline.errors import PipelineError


def test_help_lists_every_command_module() -> None:
    help_text = build_parser().format_help()
    import pkgutil

    from pipeline import commands

    names = [m.name for m in pkgutil.iter_modules(commands.__path__) if not m.name.startswith("_")]
    assert names, "no command modules found"
    for name in names:
        module = __import__(f"pipeline.commands.{name}", fromlist=["NAME"])
        assert module.NAME in help_text


def test_module_entry_point_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    assert "usage: python -m pipeline" in result.stdout


def test_pipeline_error_becomes_one_line_and_exit_2(monkeypatch, capsys) -> None:
    def explode(_args):
        raise PipelineError("data/x.json: field `zoo.url` is empty; set it in conf/zoo/")

    parser = build_parser()
    args = parser.parse_args(["params", "--check"])
    monkeypatch.setattr(args, "_run", explode)
    monkeypatch.setattr("pipeline.cli.build_parser", lambda: _FixedParser(args))
    assert main([]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: data/x.json: field `zoo.url` is empty; set it in conf/zoo/"]


class _FixedParser:
    def __init__(self, args):
        self._args = args

    def parse_args(self, _argv):
        return self._args
