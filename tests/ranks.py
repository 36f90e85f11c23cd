"""Finding the processes of a data-parallel run (Linux /proc), for the tests that kill one."""

from __future__ import annotations

from pathlib import Path


def process_of_rank(launcher: int, rank: int) -> int | None:
    """The pid of the training process of ``rank`` under the launcher ``launcher`` (Linux /proc)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in environ and b"TORCHELASTIC_RUN_ID" in b"".join(environ) \
                and descends_from(int(entry.name), launcher):
            return int(entry.name)
    return None


def descends_from(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            pid = int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            return False
    return False
