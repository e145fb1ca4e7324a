from __future__ import annotations


def test_the_multi_worker_listener_is_tcp_so_responses_are_not_delayed_by_nagle() -> None:
    import socket

    import uvicorn

    from hubbub.devserver import _bind_tcp_socket

    sock = _bind_tcp_socket(uvicorn.Config(app=None, host="127.0.0.1", port=0))
    try:
        assert sock.proto == socket.IPPROTO_TCP  # asyncio sets TCP_NODELAY only then
        assert sock.get_inheritable()
    finally:
        sock.close()
