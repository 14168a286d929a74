"""benchmarks/gpu_check.sh without a GPU: shellcheck-clean, its arguments checked, and the
whole run (synth, bench, table) on the CPU with --device cpu --quick; and `chatai bench
--device cuda` saying why it cannot run where there is no GPU."""

import pathlib
import re
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def run_script(*args, timeout=600):
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_shellcheck_clean():
    assert shutil.which("shellcheck"), "shellcheck is not installed: run cmake/install-deps.sh"
    proc = subprocess.run(["shellcheck", str(SCRIPT), str(SCRIPT.parent / "gpu_deps.sh")], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("args, message", [
    (["--device", "gpu"], "--device must be cuda or cpu, got 'gpu'"),
    (["--scratch"], "--scratch needs a value"),
    (["--frobnicate"], "unknown argument '--frobnicate'"),
    (["--deps", "/nonexistent", "--device", "cpu"], "--deps /nonexistent holds no debs/: run benchmarks/gpu_deps.sh"),
])
def test_bad_arguments_are_refused(args, message):
    proc = run_script(*args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr


def test_cpu_quick_run_prints_the_table(build_dir, tmp_path):
    proc = run_script("--device", "cpu", "--quick", "--build-dir", str(build_dir), "--scratch", str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0].split()[:3] == ["shape", "type", "weights"], proc.stdout
    assert "decode b1 tok/s" in lines[0] and "decode b2 tok/s" in lines[0] and "prefill 16 tok/s" in lines[0]
    row = re.match(r"smollm2-135m\s+q8_0\s+(\d+)M\s+([\d.]+) \(  n/a\)\s+([\d.]+) \(  n/a\)\s+([\d.]+)$", lines[1])
    assert row, proc.stdout
    weights_mb, b1, b2, prefill = (float(g) for g in row.groups())
    assert 100 < weights_mb < 200
    assert b1 > 0 and b2 > 0 and prefill > 0
    assert lines[2] == "copy bandwidth: not measured on the CPU"
    assert re.fullmatch(r"goal 135M q8_0  batch 1 at \d+ tokens/s \(> 5000\): (met|missed)", lines[3]), lines[3]
    assert (tmp_path / "smollm2-135m-q8_0.gguf").stat().st_size > 100e6


def test_bench_on_cuda_without_a_gpu_says_why(build_dir, tmp_path):
    model = tmp_path / "m.gguf"
    synth = subprocess.run([str(build_dir / "bin" / "chatai"), "synth", "--shape", "smollm2-135m", "--type", "q4_0",
                            "-o", str(model)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert synth.returncode == 0, synth.stderr
    probe = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True) if shutil.which("nvidia-smi") else None
    if probe is not None and probe.returncode == 0 and "GPU" in probe.stdout:
        pytest.skip("a GPU is present: the error path is not reachable")
    proc = subprocess.run([str(build_dir / "bin" / "chatai"), "bench", "-m", str(model), "--device", "cuda", "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert "device cuda:" in proc.stderr and ("no CUDA device" in proc.stderr or "no CUDA backend" in proc.stderr)
