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
