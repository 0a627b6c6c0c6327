"""weights/sha256sums.txt and the reusable C++ check (flexllm_manifest_check.h) for host and testbench."""

import subprocess

import pytest

from flexllm_plugin.project.manifest_check import SUMS_FILE, sha256sums, write_header
from flexllm_plugin.project.spec import Buffer

MAIN = r'''
#include "flexllm_manifest_check.h"
#include <iostream>
int main(int argc, char** argv) {
    std::string err;
    if (!flexllm::check_sha256sums(argv[1], &err)) { std::cerr << err << std::endl; return 3; }
    std::cout << "ok" << std::endl;
    return 0;
}
'''


def test_cpp_check_accepts_the_build_and_names_a_tampered_file(tmp_path):
    import hashlib

    prj = tmp_path / "prj"
    (prj / "weights").mkdir(parents=True)
    data = {"weights_p0": bytes(range(256)) * 300, "fmem": b"", "embed": b"abc" * 1000}
    bufs = []
    for name, payload in data.items():
        (prj / "weights" / f"{name}.bin").write_bytes(payload)
        bufs.append(Buffer(name, "HBM[0]", len(payload), f"weights/{name}.bin", hashlib.sha256(payload).hexdigest()))
    bufs.append(Buffer("k_cache", "HBM[1]", 64))               # no file: not listed
    (prj / SUMS_FILE).write_text(sha256sums(bufs))
    assert len((prj / SUMS_FILE).read_text().splitlines()) == 3
    assert subprocess.run(["sha256sum", "-c", "--quiet", SUMS_FILE], cwd=prj).returncode == 0
    write_header(tmp_path / "flexllm_manifest_check.h")
    (tmp_path / "main.cpp").write_text(MAIN)
    exe = tmp_path / "check"
    subprocess.run(["g++", "-std=c++17", "-O1", f"-I{tmp_path}", str(tmp_path / "main.cpp"), "-o", str(exe)],
                   check=True)
    r = subprocess.run([str(exe), str(prj)], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
    raw = bytearray((prj / "weights" / "embed.bin").read_bytes())
    raw[1234] ^= 1
    (prj / "weights" / "embed.bin").write_bytes(bytes(raw))
    r = subprocess.run([str(exe), str(prj)], capture_output=True, text=True)
    assert r.returncode == 3 and "weights/embed.bin: sha256 differs" in r.stderr
