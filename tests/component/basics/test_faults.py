import subprocess
import sys

from megarun.core.faults import fault_point


def test_fault_point_kills_only_at_its_step() -> None:
    script = ("from megarun.core.faults import fault_point\n"
              "fault_point('a:other'); print('reached', flush=True); fault_point('a:here');"
              " print('survived')")
    done = subprocess.run([sys.executable, "-c", script], env={"MEGARUN_FAULT": "a:here",
                          "PATH": "/usr/bin:/bin", "PYTHONPATH": "."}, capture_output=True,
                          text=True, check=False)
    assert done.returncode == -9
    assert done.stdout == "reached\n"


def test_fault_point_without_the_variable_is_nothing() -> None:
    fault_point("a:here")
