"""Every shell command in README.md and docs/*.md works as written.

Each line of a fenced bash block is one command (`\\` continues it, `&&` chains two, `#` starts
its comment). A `bnnx` command is parsed by the CLI itself (its command, options and arguments
must exist and have valid values) and, where it takes Hydra overrides, composed into a typed
config without running; a sweep's preset must exist in its sweep file. A `make` command must name
targets and variables the Makefile has (`make -n`, which runs nothing). A command whose comment
says `(exit 2)` is documented as refused and must be. The cheap ones run in process: `bnnx
list`, `--cfg job`, and the README's first training command with tiny overrides, whose run the
export and eval commands then read. Other programs (apt-get, pip, tensorboard, ray) are named
in KNOWN_PROGRAMS and only checked to be one of those.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
KNOWN_PROGRAMS = {"apt-get", "pip", "python", "tensorboard", "ray"}
OVERRIDE_COMMANDS = {"train", "summary"}  # the commands whose arguments are Hydra overrides
TINY = ["epochs=1", "model.hidden=[16]"]  # the run commands' overrides that keep them fast


def fenced_commands(path: Path) -> list[tuple[list[str], str]]:
    """(argv, comment) of every command in the page's bash blocks."""
    blocks = re.findall(r"```(?:bash|sh|shell)\n(.*?)```", path.read_text(), re.S)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    out = []
    for line in filter(str.strip, lines):
        tokens = shlex.split(line, comments=True)
        if not tokens:  # a comment line of its own
            continue
        comment = line[_comment_start(line):]
        while "&&" in tokens:
            out.append((tokens[:tokens.index("&&")], comment))
            tokens = tokens[tokens.index("&&") + 1:]
        out.append((tokens, comment))
    return out


def _comment_start(line: str) -> int:
    """Where the shell's comment starts: a `#` after a blank, outside quotes."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return i
    return len(line)


COMMANDS = [(path.relative_to(REPO).as_posix(), argv, comment) for path in PAGES
            for argv, comment in fenced_commands(path)]


def test_the_pages_have_commands_and_every_program_is_known():
    pages = {page for page, _, _ in COMMANDS}
    assert {"README.md", "docs/reproducing.md", "docs/deployment.md"} <= pages
    assert not [argv for _, argv, _ in COMMANDS if argv[0] not in {"bnnx", "make"} | KNOWN_PROGRAMS]


def parse_bnnx(args: list[str]):
    """(leaf command name, its parsed parameters), or click's usage error for a bad command line
    (typer vendors click: a group is whatever resolves subcommands)."""
    import typer

    from bnnx.cli import _register_commands, app

    _register_commands()
    command = typer.main.get_command(app)
    name, parent = "bnnx", None
    while hasattr(command, "resolve_command"):
        ctx = command.make_context(name, list(args), parent=parent)
        remaining = [*ctx._protected_args, *ctx.args]
        name, sub, args = command.resolve_command(ctx, remaining)
        assert sub is not None and name is not None
        command, parent = sub, ctx
    assert name != "bnnx"
    ctx = command.make_context(name, list(args), parent=parent)
    return name, ctx.params


@pytest.mark.parametrize("page,argv,comment", [c for c in COMMANDS if c[1][0] == "bnnx"],
                         ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_bnnx_command_parses_and_composes(page, argv, comment):
    import typer

    from bnnx.config.compose import compose_config
    from bnnx.errors import BnnxError

    try:
        name, params = parse_bnnx([re.sub(r"<(\w+)>", r"\1", a) for a in argv[1:]])  # runs/<run>: runs/run
    except typer.Exit:  # an eager option (--version) ran and ended the parse
        return
    if name in OVERRIDE_COMMANDS:
        overrides = list(params.get("overrides") or [])
        if "(exit 2)" in comment:
            with pytest.raises(BnnxError):
                compose_config(overrides)
            return
        compose_config(overrides)
    if name == "sweep":
        from bnnx.cli.sweep import resolve_sweep_file
        from bnnx.sweeps.parse import load_spec

        load_spec(resolve_sweep_file(params["sweep_file"])).preset(params["preset"])
    assert "(exit 2)" not in comment or name in OVERRIDE_COMMANDS, f"{page}: cannot check {argv}"


@pytest.mark.parametrize("argv", sorted({tuple(c[1]) for c in COMMANDS if c[1][0] == "make"}), ids=" ".join)
def test_make_command_names_real_targets(argv):
    plan = subprocess.run(["make", "-n", *argv[1:]], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert plan.returncode == 0, plan.stderr


def documented(*words: str) -> list[str]:
    """The first documented bnnx command that starts with `words`."""
    return next(argv for _, argv, _ in COMMANDS if tuple(argv[:len(words)]) == words)


def test_cheap_commands_run(run_cli):
    code, output = run_cli(*documented("bnnx", "list")[1:])
    assert code == 0 and "method" in output and "bop" in output
    cfg = documented("bnnx", "train", "--cfg")
    code, output = run_cli(*cfg[1:])
    assert code == 0 and f"name: {cfg[-1].split('=')[1]}" in output


def test_the_readme_training_command_then_export_and_eval_run(run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "runs" / "run"
    argv = documented("bnnx", "train", "method=bop")
    tiny = {o.split("=")[0]: o for o in [*argv[2:], *TINY, f"out_dir={run}"]}  # TINY's value wins
    code, output = run_cli("train", *tiny.values())
    assert code == 0, output
    for words in (("bnnx", "export"), ("bnnx", "eval", "runs/<run>/export.npz"), ("bnnx", "eval", "runs/<run>")):
        argv = [a.replace("runs/<run>", str(run)) for a in documented(*words)]
        code, output = run_cli(*argv[1:])
        assert code == 0, (argv, output)
    assert (run / "export.npz").exists() and (tmp_path / "eval.json").exists()


def test_the_readme_is_short_and_every_local_link_resolves():
    assert len((REPO / "README.md").read_text().splitlines()) <= 200
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if not target.startswith(("http://", "https://")):
                assert (page.parent / target).exists(), f"{page.name}: {target}"
