"""A broken `issue`: prints the new key as plain text instead of JSON (rotator must not quote it)."""

import io
import json
import runpy
from contextlib import redirect_stdout

out = io.StringIO()
with redirect_stdout(out):
    runpy.run_path(__file__.replace("noisy_issue.py", "issue.py"), run_name="__main__")
print("your new key is " + json.loads(out.getvalue())["api_key"])
