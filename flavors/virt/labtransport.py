"""How this process reaches a lab's hosts (:mod:`flavors.virt.lab`): ``tcp`` (plain, the
default), ``tls`` (certificates, also for migration) or ``ssh`` (an ``sshd`` per host).

``tls``: :class:`LabAccess` makes a :class:`~clustercore.certs.LabCA` under the lab's
``access/pki``, one client certificate (libvirt's ``pkipath`` layout: ``cacert.pem``,
``clientcert.pem``, ``clientkey.pem``) and per host one certificate for server and client
use naming ``127.0.0.1``, ``localhost`` and this machine's host name (libvirt's default
migration URI names the destination by its host name, and QEMU checks it as
``tls-hostname``). Each host's libvirtd listens with TLS on its TLS port
(``listen_tls``, ``auth_tls = "none"``: the CA-signed client certificate is the
credential, verified by libvirtd) and keeps its plain TCP port for nothing but the lab's
own benchmarks (:attr:`~flavors.virt.lab.LabHost.tcp_uri`); QEMU's migration TLS takes
the host's ``migrate_tls_x509_cert_dir`` (``ca-cert.pem``, ``server-cert.pem``,
``server-key.pem``, ``client-cert.pem``, ``client-key.pem``) with
``migrate_tls_x509_verify = 1``: the destination QEMU checks the source's client
certificate, the source QEMU the destination's. The host's URI is
``qemu+tls://127.0.0.1:TLSPORT/system?pkipath=DIR``.

``ssh``: a lab client key and per host a host key (``ssh-keygen``, ed25519), an
``authorized_keys`` with the client key, a ``known_hosts`` with every host's key under
``[127.0.0.1]:PORT``; each host's namespace runs ``sshd`` on 127.0.0.1:SSHPORT with
nothing but ``-o`` options (no file under /etc/ssh is read or changed; root by key only).
libvirt's ssh transport runs ``ssh`` (here the lab's ``ssh`` wrapper, the URI's
``command``, which adds the lab's ``known_hosts`` with strict host key checking) and
``virt-ssh-helper`` on the far side, which connects to the host's libvirtd socket. The
host's URI is ``qemu+ssh://root@127.0.0.1:SSHPORT/system?keyfile=K&command=W&no_tty=1``.
"""

from __future__ import annotations

import shlex
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Literal

from clustercore.certs import LabCA
from flavors.virt.labnet import LabError, host_ports

Transport = Literal["tcp", "tls", "ssh"]
TRANSPORTS: tuple[Transport, ...] = ("tcp", "tls", "ssh")
SSHD = "/usr/sbin/sshd"


def server_names() -> list[str]:
    """What a lab host's certificate names: the loopback address and this machine's name."""
    return ["127.0.0.1", "localhost", socket.gethostname()]


class LabAccess:
    """A lab's credentials under ``root`` (made once, kept across power cycles) and what
    each host needs of them; ``transport`` is how this process reaches the hosts."""

    def __init__(self, root: Path, transport: Transport = "tcp") -> None:
        if transport not in TRANSPORTS:
            raise ValueError(f"lab transport {transport!r}: one of {', '.join(TRANSPORTS)}")
        self.transport = transport
        self.root = root / "access"
        self.ca: LabCA | None = None
        if transport == "tls":
            self.ca = LabCA(self.root / "ca")
            cert, key = self.ca.issue("client", ["127.0.0.1"], client=True)
            self.client_dir = self.root / "client"
            self._place(self.client_dir, {"cacert.pem": self.ca.cert, "clientcert.pem": cert, "clientkey.pem": key})
        elif transport == "ssh":
            if not Path(SSHD).exists():
                raise LabError(f"lab transport ssh: {SSHD} is missing (Debian package openssh-server)")
            self.root.mkdir(parents=True, exist_ok=True)
            self.client_key = self.root / "client_key"
            _keygen(self.client_key)
            self.authorized_keys = self.root / "authorized_keys"
            self.authorized_keys.write_text(self.client_key.with_suffix(".pub").read_text())
            self.known_hosts = self.root / "known_hosts"
            self.known_hosts.write_text("")
            self.ssh = self.root / "ssh"
            self.ssh.write_text("#!/bin/sh\nexec ssh -F /dev/null -o " + " -o ".join(shlex.quote(o) for o in (
                f"UserKnownHostsFile={self.known_hosts}", "GlobalKnownHostsFile=/dev/null",
                "StrictHostKeyChecking=yes", "BatchMode=yes", "IdentitiesOnly=yes", "LogLevel=ERROR")) + ' "$@"\n')
            self.ssh.chmod(0o755)

    @staticmethod
    def _place(directory: Path, files: dict[str, Path]) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        for name, source in files.items():
            shutil.copyfile(source, directory / name)
            if "key" in name:
                (directory / name).chmod(0o600)

    def uri(self, host_root: Path, port: int) -> str:
        """The URI of the lab host whose TCP port is ``port``."""
        if self.transport == "tls":
            return f"qemu+tls://127.0.0.1:{host_ports(port)['TLS'][0]}/system?pkipath={self.client_dir}"
        if self.transport == "ssh":
            return (f"qemu+ssh://root@127.0.0.1:{host_ports(port)['SSH'][0]}/system?keyfile={self.client_key}"
                    f"&command={self.ssh}&no_tty=1")
        return f"qemu+tcp://127.0.0.1:{port}/system"

    def ports(self, port: int) -> list[int]:
        """The TCP ports the host listens on besides its TCP port."""
        return {"tcp": [], "tls": [host_ports(port)["TLS"][0]], "ssh": [host_ports(port)["SSH"][0]]}[self.transport]

    def prepare(self, name: str, host_root: Path, port: int) -> tuple[str, str, str]:
        """Make the host's own credentials (once); its lines for libvirtd.conf and
        qemu.conf, and the shell line that starts its sshd (empty when not needed)."""
        pki = host_root / "pki"
        if self.transport == "tls" and self.ca is not None:
            if not pki.exists():
                cert, key = self.ca.issue(name, server_names(), server=True, client=True)
                self._place(pki, {"cacert.pem": self.ca.cert, "servercert.pem": cert, "serverkey.pem": key})
                self._place(pki / "migrate", {"ca-cert.pem": self.ca.cert, "server-cert.pem": cert,
                                              "server-key.pem": key, "client-cert.pem": cert, "client-key.pem": key})
            libvirtd = (f'listen_tls = 1\ntls_port = "{host_ports(port)["TLS"][0]}"\nauth_tls = "none"\n'
                        f'key_file = "{pki}/serverkey.pem"\ncert_file = "{pki}/servercert.pem"\n'
                        f'ca_file = "{pki}/cacert.pem"\n')
            qemu = f'migrate_tls_x509_cert_dir = "{pki}/migrate"\nmigrate_tls_x509_verify = 1\n'
            return libvirtd, qemu, ""
        if self.transport == "ssh":
            key = host_root / "ssh_host_key"
            if not key.exists():
                _keygen(key)
                with self.known_hosts.open("a") as out:
                    kind, blob = key.with_suffix(".pub").read_text().split()[:2]
                    out.write(f"[127.0.0.1]:{host_ports(port)['SSH'][0]} {kind} {blob}\n")
            options = (f"ListenAddress=127.0.0.1:{host_ports(port)['SSH'][0]}", f"HostKey={key}",
                       f"AuthorizedKeysFile={self.authorized_keys}", "PermitRootLogin=prohibit-password",
                       "PasswordAuthentication=no", "KbdInteractiveAuthentication=no", "UsePAM=no",
                       "StrictModes=no", "PidFile=none")
            sshd = (f"mkdir -p /run/sshd\n{SSHD} -f /dev/null -E {host_root}/sshd.log "
                    + " ".join(f"-o {shlex.quote(o)}" for o in options) + "\n")
            return "listen_tls = 0\n", "", sshd
        return "listen_tls = 0\n", "", ""


def _keygen(path: Path) -> None:
    if path.exists():
        return
    done = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise LabError(f"ssh-keygen {path}: {done.stderr.strip()}")
