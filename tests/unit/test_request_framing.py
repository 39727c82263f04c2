"""RequestFrame: where an HTTP/1.x request ends, learnt as its bytes arrive one by one."""

from __future__ import annotations

import pytest

from task_api.request_framing import COMPLETE, INCOMPLETE, TOO_LARGE, RequestFrame

HEAD = b"POST /submit-task HTTP/1.1\r\nHost: a\r\n"


def feed_bytewise(frame: RequestFrame, data: bytes) -> list[str]:
    return [frame.feed(data[i : i + 1]) for i in range(len(data))]


def frame(max_body: int = 1000) -> RequestFrame:
    return RequestFrame(max_header_bytes=8192, max_body_bytes=max_body)


def test_a_bodyless_request_is_complete_at_the_blank_line():
    states = feed_bytewise(frame(), b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n")

    assert states[-1] == COMPLETE and set(states[:-1]) == {INCOMPLETE}


def test_a_content_length_body_is_complete_at_its_last_byte():
    request = HEAD + b"Content-Length: 5\r\n\r\nhello"
    states = feed_bytewise(frame(), request)

    assert states[-1] == COMPLETE and set(states[:-1]) == {INCOMPLETE}


def test_a_chunked_body_is_complete_after_its_last_chunk_and_trailers():
    body = b"5;ext=1\r\nhello\r\n3\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n"
    states = feed_bytewise(frame(), HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + body)

    assert states[-1] == COMPLETE and set(states[:-1]) == {INCOMPLETE}


def test_a_declared_body_over_the_limit_is_too_large_at_once():
    assert frame(10).feed(HEAD + b"Content-Length: 11\r\n\r\n") == TOO_LARGE


def test_a_chunked_body_over_the_limit_is_too_large_as_soon_as_a_chunk_says_so():
    request = HEAD + b"Transfer-Encoding: chunked\r\n\r\n8\r\n12345678\r\n9\r\n"

    assert frame(16).feed(request) == TOO_LARGE


@pytest.mark.parametrize(
    "headers",
    [
        b"Content-Length: 5\r\nContent-Length: 6\r\n",
        b"Content-Length: x\r\n",
        b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: gzip\r\n",
    ],
)
def test_ambiguous_framing_is_handed_to_gunicorn_at_once(headers):
    assert frame().feed(HEAD + headers + b"\r\n") == COMPLETE


def test_a_bad_chunk_size_is_handed_to_gunicorn_at_once():
    assert frame().feed(HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n") == COMPLETE


def test_headers_larger_than_gunicorn_accepts_are_handed_over_without_their_end():
    assert RequestFrame(100, 10).feed(b"GET / HTTP/1.1\r\nX: " + b"a" * 200) == COMPLETE


def test_expect_100_continue_is_noticed_for_http_1_1_only():
    eleven, ten = frame(), frame()
    eleven.feed(HEAD + b"Expect: 100-continue\r\nContent-Length: 3\r\n\r\n")
    ten.feed(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")

    assert eleven.expects_continue and not ten.expects_continue


def test_bytes_after_the_request_are_kept_for_the_next_one():
    pipelined = b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\n"
    f = frame()

    assert f.feed(pipelined) == COMPLETE and f.take() == pipelined
