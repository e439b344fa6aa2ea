"""Lab part 1: an HTTP server that fits on one screen.

    python3 server/labs/part1/webserver1.py                  # http://127.0.0.1:8000/
    python3 server/labs/part1/webserver1.py -b 0.0.0.0:8000  # the stack: make lesson-part1

It takes one connection at a time, prints each piece of the request as recv()
returns it, answers with a fixed greeting and the request line it read, and
closes. It reads no body, checks nothing and serves nobody else meanwhile: the
next labs add those (server/labs/part1.md).
"""

import argparse
import socket


def read_head(sock: socket.socket) -> bytes:
    """recv() until the blank line that ends a request head, or until the client stops."""
    head = b""
    # RFC 9112 section 2.2 lets a server take a bare LF as a line end: `nc` without -C.
    while b"\r\n\r\n" not in head and b"\n\n" not in head:
        data = sock.recv(1024)
        if not data:
            break
        print(f"  recv() -> {len(data)} bytes: {data!r}")
        head += data
    return head


def answer(request_line: bytes) -> bytes:
    body = b"Hello, World!\nYou sent: " + request_line + b"\n"
    return (
        b"HTTP/1.1 200 OK\r\n"
        b"Content-Type: text/plain\r\n"
        b"Content-Length: %d\r\n"
        b"Connection: close\r\n"
        b"\r\n" % len(body)
    ) + body


def serve(listener: socket.socket) -> None:
    while True:
        sock, peer = listener.accept()  # waits for the next client's connection
        print(f"connection from {peer[0]}:{peer[1]}")
        with sock:
            try:
                head = read_head(sock)
                sock.sendall(answer(head.split(b"\n")[0].rstrip(b"\r")))
            except OSError as error:  # the client left: serve the next one
                print(f"  {error}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-b", "--bind", default="127.0.0.1:8000", help="HOST:PORT")
    host, _, port = parser.parse_args().bind.rpartition(":")
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, int(port)))
    listener.listen(5)
    print("Listening at: http://%s:%d" % listener.getsockname()[:2], flush=True)
    serve(listener)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
