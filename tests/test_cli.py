"""Every command and family subcommand prints its help (argparse formats help strings lazily)."""
from __future__ import annotations

import pytest

from selectd.cli import main
from selectd.tools.families import FAMILIES

COMMANDS = [["run"], ["score"], ["compare"], ["check-config"], ["version"], ["demo"], ["status"], ["export"], ["verify"],
            ["bench"]]
# rules, dedup and signals have a benchmark only
FAMILY_COMMANDS = [[verb, name] for verb in ("export", "bench") for name, module in FAMILIES.items()
                   if hasattr(module, f"add_{verb}_arguments")]


@pytest.mark.parametrize("argv", COMMANDS + FAMILY_COMMANDS, ids=" ".join)
def test_help(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    assert "usage: selectd" in capsys.readouterr().out


def test_version(capsys):
    assert main(["version"]) == 0
    assert capsys.readouterr().out.startswith("selectd ")
