"""``python -m services.media``: run one media worker."""

import sys

from services.common.lifecycle import run_service
from services.media.app import main

if __name__ == "__main__":
    sys.exit(run_service("media", main))
