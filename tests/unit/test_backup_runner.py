"""The backup's own checks that need no server: pg_dump must have dumped the server that was inspected."""

from __future__ import annotations

import pytest
from ansible.module_utils.backup_runner import Dumped, check_dumped_from
from ansible.module_utils.operator_error import OperatorError


def test_a_dump_of_another_server_than_the_one_inspected_is_refused():
    dumped = Dumped("x", 1, 0.1, head=b"--\n-- Dumped from database version 15.20 (Debian 15.20-0+deb12u1)\n")
    check_dumped_from(dumped, {"server_version": "15.20"}, "b.sql.gz")
    with pytest.raises(OperatorError, match="two different servers"):
        check_dumped_from(dumped, {"server_version": "16.2"}, "b.sql.gz")
    listing = Dumped("x", 1, 0.1, head=b";     Dumped from database version: 16.2\n")
    check_dumped_from(listing, {"server_version": "16.2"}, "b.dump")


def test_the_pipe_reader_gives_every_byte_in_order_through_reused_buffers():
    import os
    import threading

    from ansible.module_utils.backup_runner import _PipeReader

    read_end, write_end = os.pipe()
    data = bytes(range(256)) * 40_000  # ~10 MiB, written in pg_dump's 4 KiB pieces

    def write() -> None:
        with os.fdopen(write_end, "wb", buffering=0) as out:
            for at in range(0, len(data), 4096):
                out.write(data[at:at + 4096])

    writer = threading.Thread(target=write)
    writer.start()
    reader = _PipeReader(read_end, depth=4)
    got = b"".join(bytes(view) for view in reader)  # each view copied before the next is asked for
    writer.join()
    reader.close()
    os.close(read_end)
    assert got == data and not reader.thread.is_alive()


def test_a_pipe_reader_stopped_early_ends_its_thread_before_the_pipe_is_closed():
    """The consumer fails while pg_dump still writes and every buffer is full: close() (after pg_dump is killed)
    ends the thread, so it never reads a descriptor number the process may reuse."""
    import os
    import threading

    from ansible.module_utils.backup_runner import _PipeReader

    read_end, write_end = os.pipe()
    stop = threading.Event()

    def write() -> None:  # pg_dump: writes until it is killed
        with os.fdopen(write_end, "wb", buffering=0) as out:
            while not stop.is_set():
                try:
                    out.write(b"x" * 4096)
                except BrokenPipeError:
                    return

    writer = threading.Thread(target=write)
    writer.start()
    reader = _PipeReader(read_end, depth=2)
    first = next(iter(reader))
    assert len(first) > 0
    for _ in range(500):  # the reader fills its other buffer and then waits for a free one
        if reader.filled.qsize():
            break
        threading.Event().wait(0.01)
    stop.set()  # pg_dump is killed
    reader.close()
    assert not reader.thread.is_alive()
    os.close(read_end)
    writer.join(5)
    assert not writer.is_alive()
