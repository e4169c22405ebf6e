"""Every example under examples/ runs, as a user would run it.

(1) ``examples/dict_server.py``: memccapable 54/54, as a script and as ``--engine`` dotted path;
(2) ``examples/acl_handler.py``: the ACL and the audit log over text, meta, binary and RESP;
(3) ``examples/hoard_shelf``: a separate package whose engine ``hoard server --engine shelf``
    finds through its ``scatterhoard.engines`` entry point (the package is put on the path with
    the distribution metadata its pyproject.toml declares, as an installer would write it).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import redis

from scatterhoard.protocol import binary as b
from tests.support import (
    ROOT,
    assert_memccapable_passed,
    chat,
    free_port,
    hoard_argv,
    require_binary,
    run_memccapable,
    running,
    temp_dir,
)

EXAMPLES = ROOT / "examples"


def binary_status(port: int, packet: bytes) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(packet)
        parser = b.BinaryParser(None, magic=b.RESPONSE_MAGIC)
        while True:
            data = s.recv(65536)
            assert data
            for p in parser.feed(data):
                assert isinstance(p, b.Packet)
                return p.status


# -- (1) a complete server over a dict ----------------------------------------------------------------
def test_dict_server_is_short() -> None:
    lines = (EXAMPLES / "dict_server.py").read_text().splitlines()
    assert len(lines) < 60


@pytest.fixture(scope="module")
def capable_runs() -> Iterator[dict[str, subprocess.CompletedProcess[str]]]:
    require_binary("memccapable")
    script, dotted = free_port(), free_port()
    with ExitStack() as stack:
        stack.enter_context(running([sys.executable, str(EXAMPLES / "dict_server.py"), "-l", "127.0.0.1",
                                     "-p", str(script)], port=script))
        stack.enter_context(running(hoard_argv("server", "-p", str(dotted), "--engine",
                                               "examples.dict_server:DictEngine"), port=dotted,
                                    env={"PYTHONPATH": str(ROOT)}))
        yield run_memccapable({"script": script, "dotted": dotted})


@pytest.mark.parametrize("how", ["script", "dotted"])
def test_dict_server_passes_memccapable(capable_runs: dict[str, subprocess.CompletedProcess[str]],
                                        how: str) -> None:
    assert_memccapable_passed(capable_runs[how])


# -- (2) logging and access control --------------------------------------------------------------------
def _check_acl(port: int) -> None:
    assert chat(port, b"set config:x 0 0 1\r\n1\r\n") == b"CLIENT_ERROR store denied (read-only)\r\n"
    assert chat(port, b"get config:x\r\n") == b"END\r\n"  # reading is allowed
    assert chat(port, b"get secret:x\r\n") == b"CLIENT_ERROR get denied\r\n"
    assert chat(port, b"ms secret:y 1\r\nz\r\n") == b"CLIENT_ERROR store denied\r\n"
    assert chat(port, b"flush_all\r\n") == b"CLIENT_ERROR flush_all denied (flush)\r\n"
    assert chat(port, b"set open 0 0 2\r\nok\r\nget open\r\n", b"END\r\n") == \
        b"STORED\r\nVALUE open 0 2\r\nok\r\nEND\r\n"
    assert binary_status(port, b.encode_request(b.OP_GET, b"secret:x")) == b.STATUS_AUTH_ERROR
    assert binary_status(port, b.encode_request(b.OP_GET, b"open")) == 0
    r = redis.Redis(port=port)
    with pytest.raises(redis.exceptions.NoPermissionError):
        r.set("config:x", "1")
    assert r.get("open") == b"ok"
    r.close()


def test_acl_handler_via_cli_and_script() -> None:
    with temp_dir() as d:
        log = Path(d) / "audit.log"
        cli_port, script_port = free_port(), free_port()
        with running(hoard_argv("server", "-p", str(cli_port), "--handler", "examples.acl_handler:AclHandler",
                                "--handler-opt", f"log={log}"), port=cli_port, env={"PYTHONPATH": str(ROOT)}):
            _check_acl(cli_port)
        lines = log.read_text().splitlines()
        assert any(re.search(r" text 127\.0\.0\.1:\d+ set store b'config:x' -> denied \(read-only\)$", x)
                   for x in lines), lines
        assert any(" meta " in x and " ms store b'secret:y' -> denied" in x for x in lines), lines
        assert any(" binary " in x and " GET get b'secret:x' -> denied" in x for x in lines), lines
        assert any(" resp " in x and " SET store b'config:x' -> denied" in x for x in lines), lines
        assert any(" resp " in x and " GET get b'open' -> hit" in x for x in lines), lines
        with running([sys.executable, str(EXAMPLES / "acl_handler.py"), "-l", "127.0.0.1", "-p", str(script_port)],
                     port=script_port):
            _check_acl(script_port)


# -- (3) an engine in its own package, found by entry point ----------------------------------------------
def _install_shelf(site: Path) -> None:
    """Put hoard_shelf on a path directory with the dist-info metadata pip would write."""
    project = tomllib.loads((EXAMPLES / "hoard_shelf" / "pyproject.toml").read_text())["project"]
    dist = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\n"
                                   f"Version: {project['version']}\n")
    groups = project["entry-points"]
    (dist / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{name} = {target}\n" for name, target in points.items())
        for group, points in groups.items()))
    os.symlink(EXAMPLES / "hoard_shelf" / "hoard_shelf", site / "hoard_shelf")


def test_shelf_engine_is_found_by_entry_point() -> None:
    with temp_dir() as d:
        site, shelf = Path(d) / "site", Path(d) / "shelf"
        _install_shelf(site)
        env = {"PYTHONPATH": str(site)}
        listed = subprocess.run(hoard_argv("server", "--engine", "nosuch"), capture_output=True, text=True,
                                env={**os.environ, **env}, timeout=30)
        assert "registered: memory, shelf, sqlite, tiered" in listed.stderr  # discovered, not imported by path
        port = free_port()
        argv = hoard_argv("server", "-p", str(port), "--engine", "shelf", "--engine-opt", f"dir={shelf}")
        with running(argv, port=port, env=env):
            assert chat(port, b"set k 3 0 5\r\nhello\r\nincr n 1\r\nset n 0 0 1\r\n1\r\nincr n 41\r\nget k\r\n",
                        b"END\r\n") == b"STORED\r\nNOT_FOUND\r\nSTORED\r\n42\r\nVALUE k 3 5\r\nhello\r\nEND\r\n"
            assert len(os.listdir(shelf)) == 2
            # what the engine lacks is answered in each protocol; without CAS, gets says cas 0 (memcached -C)
            assert chat(port, b"gets k\r\n", b"END\r\n") == b"VALUE k 3 5 0\r\nhello\r\nEND\r\n"
            assert chat(port, b"cas k 0 0 1 1\r\nx\r\n") == \
                b"SERVER_ERROR the ShelfEngine engine does not support cas\r\n"
            assert chat(port, b"prepend k 0 0 1\r\nx\r\n").startswith(b"SERVER_ERROR ")
            assert binary_status(port, b.encode_request(b.OP_APPEND, b"k", b"", b"x")) == 0x83
            r = redis.Redis(port=port)
            with pytest.raises(redis.ResponseError, match="does not support append"):
                r.append("k", "x")
            assert r.get("k") == b"hello"
            r.close()
        with running(argv, port=port, env=env):  # files survive a restart
            assert chat(port, b"get k n\r\n", b"END\r\n") == b"VALUE k 3 5\r\nhello\r\nVALUE n 0 2\r\n42\r\nEND\r\n"


def test_dict_server_passes_hoard_check_on_every_protocol() -> None:
    port = free_port()
    with running([sys.executable, str(EXAMPLES / "dict_server.py"), "-l", "127.0.0.1", "-p", str(port)], port=port):
        for proto in ("ascii", "meta", "binary", "resp", "distcache"):
            run = subprocess.run(hoard_argv("check", f"127.0.0.1:{port}", f"--{proto}"), capture_output=True,
                                 text=True, timeout=120)
            assert run.returncode == 0 and " 0 failed" in run.stdout, run.stdout + run.stderr
