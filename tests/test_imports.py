"""``import novita_video`` loads what a client needs to submit and wait, and nothing more.

The command, the simulator, the webhook server, Redis sharing, JSON Schema checks,
anyio's memory streams (a batch's), and cattrs (the converter is made on the first
answer off the fast path) are imported when used, so that importing the package costs
little more than importing aiohttp (``benchmarks/imports.py`` measures it). Checked in a
fresh interpreter, where nothing else has imported them already; not timed (timings on a
shared machine prove nothing).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.subprocess

ROOT = Path(__file__).resolve().parent.parent

#: Modules the common path (a client that submits and waits) never needs at import.
LAZY = (
    "cattrs",
    "jsonschema",
    "redis",
    "rich",
    "novita_video.cli",
    "novita_video.testing",
    "novita_video.webhooks",
    "novita_video._shared",
    "anyio.streams.memory",
)


def loaded_by(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``code``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_importing_the_package_leaves_the_heavy_modules_unloaded() -> None:
    loaded = loaded_by("import novita_video")
    assert "novita_video._client" in loaded  # the package really was imported
    assert not sorted(set(LAZY) & loaded)


def test_cattrs_is_imported_for_the_first_answer_off_the_fast_path_only() -> None:
    # A submit and a running task's answer are read without the converter; a finished
    # task's videos need it, and import it then.
    loaded = loaded_by(
        "import sys\n"
        "import novita_video\n"
        "from novita_video._wire import dump_request, parse_submitted, parse_task_result\n"
        "dump_request(novita_video.VideoRequest('a cat'))\n"
        'parse_submitted(b\'{"task_id": "t-1"}\')\n'
        'parse_task_result(b\'{"task": {"task_id": "t-1", "status": '
        '"TASK_STATUS_PROCESSING", "eta": 3, "progress_percent": 40}, "videos": []}\', '
        "wall=0.0)\n"
        "assert 'cattrs' not in sys.modules, 'the fast path imported cattrs'\n"
        'result = parse_task_result(b\'{"task": {"task_id": "t-1", "status": '
        '"TASK_STATUS_SUCCEED"}, "videos": [{"video_url": "https://x/v.mp4"}]}\', '
        "wall=0.0)\n"
        "assert result.video_url == 'https://x/v.mp4', result\n"
    )
    assert "cattrs" in loaded
