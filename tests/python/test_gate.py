"""chatai.gate from Python: the strict header check, the gate's verbs over pipes, and what the gate
program links."""

import json
import os
import pathlib
import subprocess
import threading

import pytest

import chatai


def header(**override):
    fields = {"v": 1, "id": "r1", "user": "u", "service": "chat", "method": "POST",
              "path": "/v1/chat/completions", "headers": {"Accept": "text/event-stream"}, "body_length": 2}
    fields.update(override)
    return json.dumps(fields)


def test_validate_returns_the_checked_fields():
    head = chatai.gate.validate(header())
    assert head == {"id": "r1", "user": "u", "service": "chat", "method": "POST", "path": "/v1/chat/completions",
                    "headers": {"accept": "text/event-stream"}, "body_length": 2}
    assert chatai.gate.validate(header().encode())["id"] == "r1"


@pytest.mark.parametrize("line, status", [
    (header(service="../../x"), 400),
    (header(path="@evil:80/v1/chat/completions"), 400),
    (header(headers={"content-type": "application/json -d {}"}), 400),
    (header(headers={"authorization": "Bearer x"}), 400),
    (header(id="a\u0000b"), 400),
    (header(body_length=10**12), 413),
    (header()[:-1] + ',"x":1}', 400),
    (b'{"v":1,"id":"\xff"}', 400),
])
def test_validate_refuses_hostile_lines(line, status):
    with pytest.raises(chatai.Error) as info:
        chatai.gate.validate(line)
    assert chatai.gate.http_status(info.value.code) == status


def test_validate_reads_a_config(tmp_path):
    config = tmp_path / "gate.json"
    config.write_text(json.dumps({"state_dir": str(tmp_path / "state"), "limits": {"max_body_bytes": 1}}))
    with pytest.raises(chatai.Error) as info:
        chatai.gate.validate(header(), str(config))
    assert info.value.code == "out_of_range"
    with pytest.raises(chatai.Error):
        chatai.gate.validate(header(), str(tmp_path / "missing.json"))


def run_verb(config, verb, data=b""):
    """Runs a verb with `data` on a pipe that stays open until the gate returns."""
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    os.write(in_w, data)
    chunks = []
    reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: os.read(out_r, 65536), b"")))
    reader.start()
    try:
        code = chatai.gate.run(str(config), verb, in_r, out_w)
    finally:
        os.close(out_w)
        reader.join()
        for fd in (in_r, in_w, out_r):
            os.close(fd)
    return code, b"".join(chunks)


def test_run_answers_each_verb(tmp_path):
    config = tmp_path / "gate.json"
    config.write_text(json.dumps({"state_dir": str(tmp_path / "state")}))
    assert run_verb(config, "keep-alive") == (0, b"OK\n")
    code, out = run_verb(config, "status")
    assert code == 0 and json.loads(out)["services"] == []
    code, out = run_verb(config, "request", header(body_length=2).encode() + b"\n{}")
    assert code == 0
    assert out.startswith(b"HTTP/1.1 503 ")  # no registry yet
    code, out = run_verb(config, "request", header(service="a b").encode() + b"\n{}")
    assert out.startswith(b"HTTP/1.1 400 ")
    assert not (tmp_path / "state").exists()
    with pytest.raises(chatai.Error):
        chatai.gate.run(str(config), "shell", 0, 1)


def test_the_gate_program_links_libc_only_and_holds_no_libssh_no_cuda(build_dir):
    gate = pathlib.Path(build_dir) / "bin" / "chatai-gate"
    needed = [line.split("[")[1].rstrip("]") for line in
              subprocess.run(["readelf", "-d", str(gate)], capture_output=True, text=True, check=True).stdout.splitlines()
              if "(NEEDED)" in line]
    assert needed and all(lib.startswith(("libc.so", "ld-linux")) for lib in needed), needed
    symbols = subprocess.run(["nm", "-C", str(gate)], capture_output=True, text=True, check=True).stdout
    assert "chatai::proto::frame_reader" in symbols  # it speaks version 2
    for foreign in ("ssh_channel", "ssh_session", "cudaMalloc", "cublas", "sqlite3_"):
        assert foreign not in symbols, foreign
