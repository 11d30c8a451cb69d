"""A command's stderr as a log sees it (a pipe) and as a person sees it (a terminal), with the
libraries' progress bars at their defaults (conftest turns huggingface_hub's off for the tests)."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")
# the switches that would turn the bars off whatever downcycle does
_BAR_SWITCHES = ("HF_HUB_DISABLE_PROGRESS_BARS", "TQDM_DISABLE")


def default_bars_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _BAR_SWITCHES}
    env.update(PYTHONPATH=os.pathsep.join([SRC, *filter(None, [os.environ.get("PYTHONPATH")])]), OMP_NUM_THREADS="1",
               HF_HUB_OFFLINE="1")
    return env


def stderr_of(args: list[str], terminal: bool) -> tuple[int, str]:
    """``(exit status, stderr)`` of ``python ARGS``, its stderr a pipe or (``terminal``) a pseudo-terminal."""
    cmd, env = [sys.executable, *args], default_bars_env()
    if not terminal:
        done = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, env=env, check=False)
        return done.returncode, done.stderr.decode(errors="replace")  # bytes: text mode would turn each \r into \n
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a new pty is 0 columns wide
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=follower, env=env)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO: the command closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    return proc.wait(), b"".join(chunks).decode(errors="replace")
