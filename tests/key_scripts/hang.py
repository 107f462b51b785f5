"""A `issue` that never answers, with a child that would keep the pipes open (the timeout must kill both)."""

import subprocess
import sys
import time

subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
time.sleep(120)
