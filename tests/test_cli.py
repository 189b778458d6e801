import subprocess

from gptlab import __version__
from gptlab.cli import main


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "usage: gptlab" in capsys.readouterr().err


def test_version(capsys):
    try:
        main(["--version"])
    except SystemExit as exc:
        assert exc.code == 0
    assert __version__ in capsys.readouterr().out


def test_module_entry_point(gptlab_cmd, subprocess_env):
    out = subprocess.run(
        [*gptlab_cmd, "--help"], capture_output=True, text=True, env=subprocess_env, check=True
    )
    assert "usage: gptlab" in out.stdout


def test_os_errors_on_our_temporary_files_name_the_folder():
    import errno

    from gptlab.cli import _describe_os_error

    tmp_error = PermissionError(errno.EACCES, "Permission denied", "ro/.ds.tmp-5c9no1m5")
    assert _describe_os_error(tmp_error) == (
        "cannot write in ro/ (Permission denied): check that folder")
    user_error = FileNotFoundError(errno.ENOENT, "No such file or directory", "a/b.txt")
    assert _describe_os_error(user_error) == "No such file or directory: a/b.txt"


def test_the_command_table_is_what_help_lists_in_order(capsys):
    from gptlab.cli import COMMANDS, build_parser

    parser = build_parser()
    listed = [line.split()[0] for line in parser.format_help().splitlines()
              if line.startswith("    ") and line.split()]
    assert listed == list(COMMANDS) == [
        "prepare", "corpus", "stats", "tokenize", "train", "sample", "eval", "plot", "inspect",
        "import", "export", "serve", "verify",
    ]
    capsys.readouterr()
    for name in COMMANDS:  # every subcommand's --help works and shows its usage
        try:
            main([name, "--help"])
        except SystemExit as exc:
            assert exc.code == 0, name
        assert f"usage: gptlab {name}" in capsys.readouterr().out


def test_an_unknown_flag_suggests_the_closest_option(capsys):
    import pytest

    cases = [
        (["train", "--n-layers", "2"], "gptlab train: error: unrecognized arguments: --n-layers "
         "2 (did you mean --n-layer?)"),
        (["train", "--n_layers=2", "--n-embdd", "8"], "(--n_layers: did you mean --n-layer?; "
         "--n-embdd: did you mean --n-embd?)"),
        (["import", "hf", "x", "--out", "y", "--outt", "z"], "gptlab import hf: error: "
         "unrecognized arguments: --outt z (did you mean --out?)"),
        (["train", "--zzz"], "gptlab train: error: unrecognized arguments: --zzz\n"),
    ]
    for argv, expected in cases:
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        assert expected in capsys.readouterr().err, argv
