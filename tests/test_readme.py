"""The README's Python examples run as written."""

import contextlib
import io
import pathlib
import re

README = pathlib.Path(__file__).parent.parent / "README.md"


def python_blocks() -> list[str]:
  return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_readme_has_python_examples():
  assert len(python_blocks()) >= 1


def test_quickstart_runs_and_fits():
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    exec(compile(python_blocks()[0], "README.md", "exec"), {})
  loss = float(re.search(r"loss (\S+)", out.getvalue()).group(1))
  assert loss < 1e-2
