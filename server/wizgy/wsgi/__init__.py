"""The WSGI layer (PEP 3333): environ, wsgi.input, start_response and response framing.

It knows nothing of sockets, of the connection or of the server. What it is given:

    read_body(n) -> bytes     the next piece of the request body, b"" at its end
    send(data)                write bytes to the client
    sendfile(file, offset, count) -> int   optional zero-copy path for wsgi.file_wrapper

so everything here can be exercised with a BytesIO. One method, `Response.frame`,
decides how a response is delimited: the app's Content-Length, no body for
HEAD/1xx/204/304, chunked for HTTP/1.1, close-delimited for HTTP/1.0.

    environ.py    ServerInfo (what a connection knows), build_environ
    input.py      InputStream (wsgi.input), FileWrapper (wsgi.file_wrapper)
    response.py   Response: start_response, write(), framing; AppError
    app.py        run_app: call the app, send its iterable; Paused and resume()
"""

from .app import Paused, resume, run_app
from .environ import ServerInfo, build_environ
from .input import FileWrapper, InputStream
from .response import AppError, Response

__all__ = [
    "AppError", "FileWrapper", "InputStream", "Paused", "Response", "ServerInfo",
    "build_environ", "resume", "run_app",
]
