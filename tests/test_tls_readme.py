"""The README's copy-paste farm demo (section "TLS session caching"), run as written.

The ```sh block after "A farm in one copy-paste" runs in bash with only its fixed ports and its
directory replaced (free ports, a temporary directory) and its ``sleep 2`` replaced by a wait for
the ports (the machine may be loaded).  Every line must terminate (the block once had an
``s_client -quiet`` that never did) and print ``New`` then ``Reused`` for both TLS versions.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys

from tests.support import ROOT, free_port, require_binary, temp_dir

MARKER = "**A farm in one copy-paste**"


def demo_block() -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index(MARKER)
    match = re.compile(r"```sh\n(.*?)```", re.S).search(readme, start)
    assert match is not None, "no ```sh block after the demo's title"
    return match.group(1)


def test_readme_farm_demo_runs_and_resumes() -> None:
    require_binary("openssl")
    script = demo_block()
    cache, backend, tls = free_port(), free_port(), free_port()
    with temp_dir() as d:
        for old, new in ((" 11211", f" {cache}"), (":11211", f":{cache}"), (" 11311", f" {backend}"),
                         (":11311", f":{backend}"), (":8443", f":{tls}"), ("/tmp/hoard-demo", d)):
            assert old in script, f"the demo no longer contains {old!r}: update this test"
            script = script.replace(old, new)
        wait = (f"for p in {cache} {backend} {tls}; do until (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; "
                "do sleep 0.1; done; done; sleep 1")
        script, n = re.subn(r"^sleep 2\b.*$", wait, script, flags=re.M)
        assert n == 1, "the demo no longer has its `sleep 2` line: update this test"
        env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ.get('PATH', '')}"}
        proc = subprocess.Popen(["bash", "-c", script], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=120)  # generous: the demo takes ~3 s
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)  # whatever the demo left running
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    lines = out.splitlines()
    summaries = [ln.split(", ")[:2] for ln in lines if ln.startswith(("New, ", "Reused, "))]
    assert summaries == [["New", "TLSv1.2"]] + [["Reused", "TLSv1.2"]] * 5 + [["New", "TLSv1.3"],
                                                                              ["Reused", "TLSv1.3"]], out
    assert sum(ln.startswith("VERSION ") for ln in lines) == 2, out
