"""Real SMTP servers for mamori-alert's tests (aiosmtpd).

Usage: smtp_server.py WORKDIR CERT KEY USER PASSWORD

Starts two servers on 127.0.0.1 that require AUTH with USER/PASSWORD:
  * a STARTTLS server (require_starttls=True, auth_require_tls=True), like port 587;
  * an implicit-TLS server (the whole connection is TLS, like port 465);
  * a STARTTLS server offering only AUTH LOGIN, as Microsoft 365 does.
Each accepted message is written to WORKDIR/mail/<n>.json with its envelope, its raw content,
and its subject and text body as decoded by Python's email package (an independent decoder).

Prints "ready <starttls port> <tls port> <login-only port>" when all listen. Stops, and removes WORKDIR, when its
standard input closes (the test process exited), so nothing outlives the tests.
"""

import email
import email.policy
import hmac
import json
import logging
import os
import shutil
import socket
import ssl
import sys
import threading
import warnings

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Recorder:
    lock = threading.Lock()
    count = 0

    def __init__(self, workdir, listener):
        self.maildir = os.path.join(workdir, "mail")
        self.listener = listener
        os.makedirs(self.maildir, exist_ok=True)

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        message = email.message_from_bytes(raw, policy=email.policy.default)
        body_part = message.get_body(preferencelist=("plain",))
        record = {
            "listener": self.listener,
            "authenticated": bool(session.authenticated),
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "raw": raw.decode("utf-8", "replace"),
            "subject": str(message["subject"]),
            "content_type": message.get_content_type(),
            "charset": message.get_content_charset(),
            "body": body_part.get_content() if body_part is not None else None,
        }
        with Recorder.lock:
            Recorder.count += 1
            name = os.path.join(self.maildir, "%d.json" % Recorder.count)
        with open(name + ".tmp", "w", encoding="utf-8") as f:
            json.dump(record, f, ensure_ascii=False)
        os.rename(name + ".tmp", name)
        return "250 Message accepted"


def main():
    # The tests check outcomes on their side; aiosmtpd's warnings about the deliberately
    # failing sessions (unknown CA, wrong password) would only clutter their output.
    warnings.simplefilter("ignore")
    logging.getLogger("mail.log").setLevel(logging.CRITICAL)
    workdir, cert, key, user, password = sys.argv[1:6]
    user, password = user.encode(), password.encode()

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and hmac.compare_digest(auth_data.login, user)
            and hmac.compare_digest(auth_data.password, password)
        )
        # handled=False: let aiosmtpd answer "535 5.7.8" itself (its default, True, answers nothing).
        return AuthResult(success=ok, handled=False)

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    starttls = Controller(
        Recorder(workdir, "starttls"),
        hostname="127.0.0.1",
        port=free_port(),
        tls_context=context,
        require_starttls=True,
        auth_require_tls=True,
        auth_required=True,
        authenticator=authenticator,
    )
    # aiosmtpd 1.4 counts only STARTTLS as TLS for auth_require_tls; on this listener the whole
    # connection is TLS (ssl_context), so AUTH is still never in plaintext.
    implicit = Controller(
        Recorder(workdir, "tls"),
        hostname="127.0.0.1",
        port=free_port(),
        ssl_context=context,
        auth_require_tls=False,
        auth_required=True,
        authenticator=authenticator,
    )
    login_only = Controller(
        Recorder(workdir, "login-only"),
        hostname="127.0.0.1",
        port=free_port(),
        tls_context=context,
        require_starttls=True,
        auth_require_tls=True,
        auth_required=True,
        auth_exclude_mechanism=["PLAIN"],
        authenticator=authenticator,
    )
    controllers = [starttls, implicit, login_only]
    for controller in controllers:
        controller.start()
    print("ready " + " ".join(str(c.port) for c in controllers), flush=True)
    try:
        sys.stdin.read()
    finally:
        for controller in controllers:
            controller.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
