"""A careless `issue`: echoes the whole request and the new key to stderr (rotator must never show it)."""

import io
import runpy
import sys
from contextlib import redirect_stdout

data = sys.stdin.read()
sys.stderr.write(data + "\n")
sys.stdin = io.StringIO(data)
out = io.StringIO()
with redirect_stdout(out):
    runpy.run_path(__file__.replace("leaky_issue.py", "issue.py"), run_name="__main__")
sys.stderr.write("issued: " + out.getvalue())
sys.stdout.write(out.getvalue())
