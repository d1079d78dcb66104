"""A self-signed TLS certificate for the exchange simulator (made once with the openssl CLI, then reused)."""
from __future__ import annotations

import logging
import os
import re
import shutil
import ssl
import subprocess
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_CERT_DIR = Path("var/sim-certs")
PEM_NAME = "sim.pem"
_CERT_BLOCK = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


def ensure_cert(cert_dir: Path = DEFAULT_CERT_DIR) -> Path:
    """The path of `sim.pem` (key and certificate in one file), generated with openssl on first use."""
    pem = cert_dir / PEM_NAME
    if pem.is_file() and _CERT_BLOCK.search(pem.read_text()):
        return pem
    if shutil.which("openssl") is None:
        raise RuntimeError("the exchange simulator needs the `openssl` command to make its TLS certificate")
    cert_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cert_dir, prefix=".gen-") as tmp:
        key, crt = Path(tmp) / "key.pem", Path(tmp) / "cert.pem"
        cmd = [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "3650", "-subj", "/CN=keel exchange simulator",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-keyout", str(key), "-out", str(crt),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"openssl could not make the simulator certificate: {done.stderr.strip()}")
        combined = Path(tmp) / PEM_NAME
        combined.write_text(key.read_text() + crt.read_text())
        combined.chmod(0o600)
        # One atomic rename: a concurrent process sees either no file or a matching key and certificate.
        os.replace(combined, pem)
    log.info("made a self-signed simulator certificate at %s", pem)
    return pem


def certificate_pem(cert_dir: Path = DEFAULT_CERT_DIR) -> str:
    """The certificate part of `sim.pem` (what clients must trust)."""
    found = _CERT_BLOCK.search(ensure_cert(cert_dir).read_text())
    if found is None:
        raise RuntimeError(f"no certificate in {cert_dir / PEM_NAME}")
    return found.group(0) + "\n"


def server_ssl_context(cert_dir: Path = DEFAULT_CERT_DIR) -> ssl.SSLContext:
    """A TLS server context with the simulator's key and certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(ensure_cert(cert_dir))
    return ctx


def client_ssl_context(cert_dir: Path = DEFAULT_CERT_DIR) -> ssl.SSLContext:
    """A TLS client context that trusts the simulator's certificate (and checks the host name)."""
    return ssl.create_default_context(cadata=certificate_pem(cert_dir))
