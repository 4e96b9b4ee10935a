"""The supervisor's port choice: a taken port is replaced by a free one and said so; Redis never assumes 6379."""

import socket

from ops.ports import choose_port, port_is_free


def test_a_taken_port_is_replaced_by_a_free_one():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        port, replaced = choose_port(busy)
    assert replaced and port != busy and port_is_free(port)


def test_a_free_preferred_port_is_kept():
    port, replaced = choose_port(0)
    free, replaced_again = choose_port(port)
    assert (free, replaced_again) == (port, False) and not replaced
