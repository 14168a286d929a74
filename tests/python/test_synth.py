"""`chatai synth` streams: a 1B-shape model is written holding a small part of it in memory."""

import subprocess
import sys

PEAK_RSS = """
import resource, subprocess, sys
code = subprocess.run(sys.argv[1:]).returncode
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, code)
"""


def test_synth_of_the_1b_shape_streams(build_dir, tmp_path):
    out = tmp_path / "llama-3.2-1b-q4_0.gguf"
    proc = subprocess.run([sys.executable, "-c", PEAK_RSS, str(build_dir / "bin" / "chatai"), "synth",
                           "--shape", "llama-3.2-1b", "--type", "q4_0", "--seed", "3", "-o", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    peak_kib, code = (int(v) for v in proc.stdout.split()[-2:])
    assert code == 0, proc.stderr
    size = out.stat().st_size
    assert size > 650e6  # 1.24 billion weights at 4.5 bits, with the 128256-token vocabulary
    assert peak_kib * 1024 < size / 2, (peak_kib, size)
