"""``python -m services.signaling``: run the signaling service."""

import sys

from services.common.lifecycle import run_service
from services.signaling.app import main

sys.exit(run_service("signaling", main))
