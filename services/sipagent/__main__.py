import sys

from services.common.lifecycle import run_service
from services.sipagent.app import main

sys.exit(run_service("sipagent", main))
