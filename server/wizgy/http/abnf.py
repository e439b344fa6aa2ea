"""The request grammar as named regular expressions, each under the RFC text it
encodes (RFC 9110 section 5.6, RFC 9112 sections 3, 5 and 7), and the field names
the parser looks at."""

from __future__ import annotations

import re

# token = 1*tchar ; tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." /
#                           "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA
TOKEN = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+"

# request-line = method SP request-target SP HTTP-version   (single spaces, RFC 9112 3)
# request-target: visible ASCII only (RFC 3986 characters; no raw UTF-8, no spaces)
REQUEST_LINE = re.compile(rb"(%s) ([\x21-\x7e]+) HTTP/([0-9])\.([0-9])" % TOKEN)

# field-line = field-name ":" OWS field-value OWS   (no whitespace before the colon,
# RFC 9112 5.1: a server MUST reject that with 400). Values were already screened for
# CR, LF, NUL and other controls by FORBIDDEN below. The OWS is stripped with
# bytes.strip(OWS) rather than in the regex: a lazy `(.*?)[ \t]*` backtracks
# quadratically on a value full of spaces (0.3 s for one 8 KB field).
FIELD_LINE = re.compile(rb"(%s):(.*)" % TOKEN, re.DOTALL)
OWS = b" \t"
OWS_TEXT = " \t"

# Anything that may not appear in a head outside CRLF line endings: controls other
# than HTAB (field-vchar, RFC 9110 5.5), a CR not followed by LF, or a bare LF
# (RFC 9112 2.2 allows a server to accept bare LF; we do not, because a proxy in front
# may read it differently).
FORBIDDEN = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\r(?!\n)|(?<!\r)\n")

# chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF   (RFC 9112 7.1)
# chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
CHUNK_SIZE_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})([ \t]*;[\x20-\x7e\t]*)?")

# The fast path: a whole head that is well-formed, matched in one go on its latin-1
# text: request-line *( CRLF field-line ), with every byte class above enforced (no
# controls but HTAB in values, no bare CR or LF, no space before a colon). A head this
# does not match goes through the line-by-line path, which says what is wrong with it.
HEAD = re.compile(r"(%s) ([\x21-\x7e]+) HTTP/1\.([01])((?:\r\n%s:[\t\x20-\x7e\x80-\xff]*)*)"
                  % (TOKEN.decode(), TOKEN.decode()))
FIELDS = re.compile(r"\r\n([^:]+):[ \t]*([^\r]*)")  # (name, value) pairs of a HEAD match

# Lowercase names of the fields that decide framing and routing; others pass through.
FRAMING = frozenset(("content-length", "transfer-encoding", "connection", "expect", "host"))

# The fields RFC 9110 and RFC 9111 define as a single value (not a #list), besides Host
# and Content-Length above. RFC 9110 5.3: a sender MUST NOT repeat such a field, and a
# recipient cannot combine two into one value: an app reading the last Content-Type and
# a proxy or WAF in front reading the first disagree about the request (gunicorn
# answers 400 to two Content-Type fields). Two different values are refused (400); the
# same value twice has one meaning for every reader and is kept once (RFC 9110 8.6
# allows that for Content-Length; we stay stricter there, and for Host RFC 9112 3.2
# demands 400). Response-only fields (Age, ETag, ...) are here too: the rule is the same.
SINGLE_VALUE = frozenset((
    "authorization", "content-location", "content-range", "content-type", "date", "from",
    "if-modified-since", "if-range", "if-unmodified-since", "max-forwards",
    "proxy-authorization", "range", "referer", "user-agent",  # RFC 9110, request fields
    "etag", "last-modified", "location", "retry-after", "server",  # RFC 9110, responses
    "age", "expires",  # RFC 9111
))
NOTED = FRAMING | SINGLE_VALUE  # the fields _frame() looks at

ABSOLUTE_FORM = re.compile(r"(?i:(https?)://)([^/?#]*)([^#]*)")

# Host = uri-host [ ":" port ]   (RFC 9112 3.2; RFC 3986 3.2.2, 3.2.3). A server MUST
# answer 400 to a Host field with an invalid value: apps build URLs from it.
# uri-host = IP-literal / IPv4address / reg-name, reg-name = *( unreserved /
# pct-encoded / sub-delims ), so it may be empty; port = *DIGIT.
HOST = re.compile(r"(\[[-._~!$&'()*+,;=:0-9A-Za-z]+\]|[-._~!$&'()*+,;=%0-9A-Za-z]*)(?::[0-9]*)?")
